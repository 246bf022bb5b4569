#!/usr/bin/env bash
# A session's GPU work in one device call: check that CUDA-graph block steps decode what
# eager ones do (tests/test_gpu.py), train the testbed dLLM for TRAIN_SECONDS (data
# preparation included), then the vision testbed for VISION_SECONDS (stopped by the clock,
# it brings back its resumable checkpoint), then time LLaDA-8B-shaped steps (batch 1, 8, 32;
# graphs and eager), LLaDA-V-shaped image encoding and steps after an image prefix, and,
# for E2E_SECONDS, whole decodes at LLaDA-8B and Dream-7B shape (benchmarks/e2e_gpu.py,
# graphs on and off), then the same steps and LLaDA-8B decodes with the block layers
# weight-only int8 and int4 (--quantize; QUANT_SECONDS a run, the compiled int8 decode twice
# that; QUANT_SECONDS=0 skips them). About 570 s in all with the values below, 840 s with
# the quantized runs (TRAIN_SECONDS=60 VISION_SECONDS=60 keeps one call near 600 s). Everything
# comes back as one tar in 15 MB parts beside summary.txt (the device tool brings back at
# most 8 files of 16 MiB). Evaluate and write the model cards afterwards on the CPU:
#   cat $OUT/results.tar.part-* | tar -x -C runs/   # runs/testbed-gpu, runs/testbed-vision
#   python benchmarks/testbed_card.py --model runs/testbed-gpu --write
#
#   OUT=runs/gpu TRAIN_SECONDS=240 VISION_SECONDS=110 E2E_SECONDS=80 QUANT_SECONDS=45 \
#     bash benchmarks/gpu_session.sh
# SMALL=1 runs it at toy size on the CPU, to check the script before spending GPU time.
set -euo pipefail
OUT=${OUT:-runs/gpu}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
VISION_SECONDS=${VISION_SECONDS:-110}
E2E_SECONDS=${E2E_SECONDS:-80}
QUANT_SECONDS=${QUANT_SECONDS:-45}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if [[ -n ${SMALL:-} ]]; then
  recipe=(--tasks lists,arith --train-sizes lists=12000 --d-model 32 --n-layers 1 --n-heads 2
          --mlp-hidden-size 64 --vocab-size 400 --batch-size 16 --eval-limit 4 --warmup 10)
  vision=(--steps 20 --batch-size 4 --eval-every 10 --eval-limit 4 --train-size 200
          --save-every 10 --tower-steps 5)
  latency=(--iters 3 --batch 1)
  image=(--random-llada-v --iters 2 --batch 1)
  e2e=(--repeats 1 --batch 1)
  quant_latency=(--iters 3 --batch 1)
  quant_e2e=(--repeats 1 --batch 1 --shapes llada-8b)
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
  # the vision testbed: the CPU recipe (README) with what the CPU cannot give, steps. Its
  # language model learns to read slowly (experiments/vision_reading.py), not its tower.
  vision=(--steps 40000 --batch-size 64 --lr 0.001 --warmup 500 --eval-every 2000
          --eval-limit 100 --save-every 1000 --train-size 60000 --threads 4 --tower-steps 600)
  latency=(--random-8b --iters 10)
  image=(--random-llada-v --iters 5 --batch 1 8)
  e2e=(--repeats 1 --batch 1 8 --cache dual --graphs on,off)
  # the quantized runs: bf16's figures above are their baseline, on the same warm machine
  quant_latency=(--random-8b --iters 10 --batch 1 8)
  quant_e2e=(--repeats 1 --batch 1 8 --shapes llada-8b --cache dual --graphs on,off)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c 'import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)'
} > "$OUT/env.txt" 2>&1

# seconds: graph replays must decode what eager steps do before any figure of theirs counts
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1 \
  || echo "tests/test_gpu.py failed or stopped (exit $?)" >> "$OUT/gpu_tests.txt"

# training next: it is what the session cannot do without the GPU
python3 -m stdec train --out "$OUT/testbed-gpu" --steps 1000000 --time-budget "$TRAIN_SECONDS" \
  --no-resume "${recipe[@]}" 2>&1 | tr '\r' '\n' | grep --line-buffered -v "it/s\|s/it" \
  | tee "$OUT/train.log" || echo "training stopped early: bringing back its last checkpoint"
# the finished model, or else the resumable checkpoint (weights, optimizer, progress)
if [[ -f $OUT/testbed-gpu/train_log.json ]]; then rm -rf "$OUT/testbed-gpu/checkpoint"; fi

# the vision testbed: stopped by the clock, it brings back its last resumable checkpoint
timeout "$VISION_SECONDS" python3 -m stdec train --tasks vision --init testbed \
  --vision-hidden 128 --out "$OUT/testbed-vision" "${vision[@]}" 2>&1 \
  | tr '\r' '\n' | grep --line-buffered -v "it/s\|s/it" | tee "$OUT/vision.log" \
  || echo "vision training stopped at its budget"
if [[ -f $OUT/testbed-vision/train_log.json ]]; then rm -rf "$OUT/testbed-vision/checkpoint"; fi

timeout 90 python3 benchmarks/step_latency.py "${latency[@]}" > "$OUT/step_latency.txt" 2>&1 \
  || echo "step_latency.py stopped early (exit $?)" >> "$OUT/step_latency.txt"
timeout 60 python3 benchmarks/step_latency.py "${image[@]}" > "$OUT/step_latency_image.txt" 2>&1 \
  || echo "step_latency.py --random-llada-v stopped early (exit $?)" >> "$OUT/step_latency_image.txt"
timeout "$E2E_SECONDS" python3 benchmarks/e2e_gpu.py "${e2e[@]}" > "$OUT/e2e.txt" 2>&1 \
  || echo "e2e_gpu.py stopped early (exit $?)" >> "$OUT/e2e.txt"

# weight-only int8 and int4 (stdec.load(quantize=...)): step latency and end to end
quant_files=()
if (( QUANT_SECONDS > 0 )); then
  for q in int8 int4; do
    timeout "$QUANT_SECONDS" python3 benchmarks/step_latency.py "${quant_latency[@]}" \
      --quantize "$q" > "$OUT/step_latency_$q.txt" 2>&1 \
      || echo "step_latency.py --quantize $q stopped early (exit $?)" >> "$OUT/step_latency_$q.txt"
    timeout "$QUANT_SECONDS" python3 benchmarks/e2e_gpu.py "${quant_e2e[@]}" --quantize "$q" \
      > "$OUT/e2e_$q.txt" 2>&1 || echo "e2e_gpu.py --quantize $q stopped early (exit $?)" \
      >> "$OUT/e2e_$q.txt"
    quant_files+=("step_latency_$q.txt" "e2e_$q.txt")
  done
  # torchao's int8 weight-only path converts each weight to bf16 before its matmul, unless
  # torch.compile fuses the two: the int8 decode once more, compiled (the warm-up compiles)
  timeout "$((2 * QUANT_SECONDS))" python3 benchmarks/e2e_gpu.py "${quant_e2e[@]}" \
    --quantize int8 --compile > "$OUT/e2e_int8_compiled.txt" 2>&1 \
    || echo "e2e_gpu.py --quantize int8 --compile stopped early (exit $?)" \
    >> "$OUT/e2e_int8_compiled.txt"
  quant_files+=("e2e_int8_compiled.txt")
fi

cd "$OUT"
for f in env.txt gpu_tests.txt train.log vision.log step_latency.txt step_latency_image.txt e2e.txt \
  "${quant_files[@]}"; do
  echo "==> $f"; tail -n 40 "$f"
done > summary.txt
tar -cf - testbed-gpu testbed-vision env.txt gpu_tests.txt train.log vision.log step_latency.txt \
  step_latency_image.txt e2e.txt "${quant_files[@]}" \
  | split -b 15m - results.tar.part-
rm -rf testbed-gpu testbed-vision env.txt gpu_tests.txt train.log vision.log step_latency.txt \
  step_latency_image.txt e2e.txt "${quant_files[@]}"
ls -la
