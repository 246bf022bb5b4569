#!/usr/bin/env bash
# A session's GPU work in one device call: train the testbed dLLM for TRAIN_SECONDS (data
# preparation included), then time LLaDA-8B-shaped steps. Results land in $OUT (the device
# tool brings back at most 8 files of 16 MiB: the checkpoint comes back as tar parts).
# Evaluate and write the model card afterwards on the CPU:
#   cat $OUT/testbed.tar.part-* | tar -x -C runs/   # -> runs/testbed-gpu
#   python benchmarks/testbed_card.py --model runs/testbed-gpu --write
#
#   OUT=runs/gpu TRAIN_SECONDS=420 bash benchmarks/gpu_session.sh
# SMALL=1 runs it at toy size on the CPU, to check the script before spending GPU time.
set -euo pipefail
OUT=${OUT:-runs/gpu}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if [[ -n ${SMALL:-} ]]; then
  recipe=(--tasks lists,arith --train-sizes lists=12000 --d-model 32 --n-layers 1 --n-heads 2
          --mlp-hidden-size 64 --vocab-size 400 --batch-size 16 --eval-limit 4 --warmup 10)
  latency=(--iters 3 --batch 1)
else
  # The testbed v2 recipe. Width and depth are the CPU inference budget's (vanilla decoding
  # of a 400-problem test split in under 2 minutes on 2 cores); what a GPU adds is data and
  # steps: 100k+ problems for gsm, lists and arith (code has fewer distinct ones; drawing
  # more of them slows down sharply), 512 sequences a step, gsm drawn most often.
  recipe=(--tasks gsm,code,lists,arith --mixture gsm=3,lists=2,code=1,arith=1.5
          --train-sizes gsm=150000,lists=150000,arith=100000,code=40000
          --batch-size 512 --lr 0.003 --min-lr 0.0001 --warmup 500
          --d-model 256 --n-layers 4 --n-heads 4 --mlp-hidden-size 768 --vocab-size 2048
          --eval-limit 64 --save-every 1000 --seed 0)
  latency=(--random-8b --iters 20)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c 'import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)'
} > "$OUT/env.txt" 2>&1

# training first: it is what the session cannot do without the GPU
python3 -m stdec train --out "$OUT/testbed-gpu" --steps 1000000 --time-budget "$TRAIN_SECONDS" \
  --no-resume "${recipe[@]}" 2>&1 | tr '\r' '\n' | grep --line-buffered -v "it/s\|s/it" \
  | tee "$OUT/train.log" || echo "training stopped early: bringing back its last checkpoint"
# the finished model, or else the resumable checkpoint (weights, optimizer, progress)
if [[ -f $OUT/testbed-gpu/train_log.json ]]; then rm -rf "$OUT/testbed-gpu/checkpoint"; fi
tar -C "$OUT" -cf - testbed-gpu | split -b 15m - "$OUT/testbed.tar.part-"
rm -rf "$OUT/testbed-gpu"

timeout 60 python3 benchmarks/step_latency.py "${latency[@]}" > "$OUT/step_latency.txt" 2>&1 \
  || echo "step_latency.py stopped early (exit $?)" >> "$OUT/step_latency.txt"
ls -la "$OUT"
