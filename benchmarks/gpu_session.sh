#!/usr/bin/env bash
# A session's GPU work in one device call: time LLaDA-8B-shaped steps, then train the
# testbed dLLM for the rest of the budget. Results land in $OUT (the device tool brings
# them back); evaluate and write the model card afterwards on the CPU:
#   python benchmarks/testbed_card.py --model <the returned folder> --write
#
#   OUT=runs/gpu TRAIN_SECONDS=360 bash benchmarks/gpu_session.sh
# SMALL=1 runs it at toy size on the CPU, to check the script before spending GPU time.
set -euo pipefail
OUT=${OUT:-runs/gpu}
TRAIN_SECONDS=${TRAIN_SECONDS:-360}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if [[ -n ${SMALL:-} ]]; then
  size=(--d-model 64 --n-layers 2 --n-heads 2 --mlp-hidden-size 128 --batch-size 8
        --train-limit 200 --eval-limit 4)
  latency=(--iters 3 --batch 1)
else
  # sized for the CPU: at d=256 and 4 layers, vanilla decoding of gsm's 400 test problems
  # took 70 s on 2 cores (dual cache); 6 layers keeps it near the 2-minute bound
  size=(--d-model 256 --n-layers 6 --n-heads 4 --mlp-hidden-size 768 --batch-size 256
        --eval-limit 64)
  latency=(--random-8b --iters 20)
fi

python3 benchmarks/step_latency.py "${latency[@]}" 2>&1 | tee "$OUT/step_latency.txt"

# size the run to the time left: time 30 steps, then train for TRAIN_SECONDS
probe=$(mktemp -d)
start=$(date +%s.%N)
python3 -m stdec train --out "$probe" --steps 30 --warmup 10 --eval-every 0 --save-every 30 \
  "${size[@]}" > "$probe/log" 2>&1
end=$(date +%s.%N)
steps=$(python3 - "$probe/log" "$start" "$end" "$TRAIN_SECONDS" <<'PY'
import re, sys
log, budget = open(sys.argv[1]).read(), float(sys.argv[4])
total = float(sys.argv[3]) - float(sys.argv[2])  # set-up and 30 steps
rates = [float(r) for r in re.findall(r"([0-9.]+)it/s", log)[-5:]]
per_step = 1 / (sum(rates) / len(rates)) if rates else total / 30
print(max(100, int(0.85 * (budget - (total - 30 * per_step)) / per_step)))
PY
)
echo "training for $steps steps" | tee "$OUT/train_steps.txt"
python3 -m stdec train --out "$OUT/testbed" --steps "$steps" --warmup $((steps / 20)) \
  --eval-every $((steps / 4)) --save-every $((steps / 4)) --no-resume "${size[@]}" \
  2>&1 | tr '\r' '\n' | grep -v "it/s\|s/it" | tee "$OUT/train.log"
# the device tool brings back files of at most 16 MiB: shard the weights
python3 - "$OUT/testbed" <<'PY'
import sys
from stdec.models import load_model, save_model
save_model(load_model(sys.argv[1], dtype="float32", device="cpu"), sys.argv[1],
           max_shard_bytes=15_000_000)
PY
rm -rf "$OUT/testbed/checkpoint"
ls -la "$OUT/testbed"
