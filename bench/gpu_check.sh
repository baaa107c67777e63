#!/usr/bin/env bash
# One lent GPU machine's checks, in one call: CUDA tests, training throughput, planning latency and
# evaluation workers sharing the card (issues #5, #6, #7). Logs and tables go to $OUT (the device
# tool's output folder; /tmp/gpu_check elsewhere). Needs .gpu/site.tar.xz (bench/gpu_bundle.sh):
#
#   device run, carry [".gpu"], timeout_s 570 (the steps take at most 520 s):  bash bench/gpu_check.sh
#
# Each step has its own time limit, so one that hangs leaves the others their time; the tables
# are printed last. On a machine that has everything installed, SITE=none skips the bundle;
# DEVICES, EVAL_DEVICE, GPUS and WORKERS change what is measured (a dry run on CPU:
# SITE=none DEVICES=cpu EVAL_DEVICE=cpu GPUS=0 WORKERS="1 2" bench/gpu_check.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
SITE=${SITE:-/tmp/hmpc-site}
mkdir -p "$OUT"
if [ "$SITE" != none ]; then
  if [ ! -d "$SITE/ray" ]; then
    mkdir -p "$SITE" && xz -dc .gpu/site.tar.xz | tar -xf - -C "$SITE" || { echo "no .gpu/site.tar.xz: run bench/gpu_bundle.sh here, carry .gpu" >&2; exit 1; }
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; nproc
  $PY -c 'import sys, torch, ray, pybullet, av; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), "ray", ray.__version__, "av", av.__version__)'
} 2>&1 | tee "$OUT/machine.txt"

step() {  # step NAME SECONDS COMMAND...: its output in $OUT/NAME.log, status in $OUT/status.txt
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local code=$?
  echo "$name: exit $code after $((SECONDS - t0)) s" | tee -a "$OUT/status.txt"
}
step tests 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_optimizers.py
DEVICES=${DEVICES:-cpu cuda}
# shellcheck disable=SC2086  # word splitting of the lists is meant
step train 60 $PY bench/train_throughput.py --frames synthetic --devices $DEVICES --steps 40
# shellcheck disable=SC2086
step latency 110 $PY bench/plan_latency.py --devices $DEVICES --episodes 3 --steps 20
# shellcheck disable=SC2086
step eval 200 $PY bench/eval_throughput.py --episodes 32 --max-steps 60 --workers ${WORKERS:-1 4 8} \
  --gpus "${GPUS:-0.125}" --device "${EVAL_DEVICE:-cuda}"

echo; cat "$OUT/machine.txt" "$OUT/status.txt"
tail -n 3 "$OUT/tests.log"
for name in train latency eval; do echo; sed -n '/^# /,$p' "$OUT/$name.log"; done
