#!/usr/bin/env bash
# One lent GPU machine's checks, in one call: CUDA tests, training throughput, planning latency and
# evaluation workers sharing the card (issues #5, #6, #7). Logs and tables go to $OUT (the device
# tool's output folder; /tmp/gpu_check elsewhere). Needs .gpu/site.tar.xz (bench/gpu_bundle.sh):
#
#   device run, carry [".gpu"], timeout_s 420 (the steps take at most 350 s):  bash bench/gpu_check.sh
#
# Each step has its own time limit (SIGINT, then SIGKILL 15 s later), so one that hangs leaves the
# others their time; the tables are printed last and the exit code is non-zero if any step failed.
# STEPS="eval" reruns only some steps. On a machine that has everything installed, SITE=none skips
# the bundle; DEVICES, EVAL_DEVICE, GPUS and WORKERS change what is measured (a dry run on CPU:
# SITE=none DEVICES=cpu EVAL_DEVICE=cpu GPUS=0 WORKERS="1 2" bench/gpu_check.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
SITE=${SITE:-/tmp/hmpc-site}
STEPS=${STEPS:-tests train latency eval}
DEVICES=${DEVICES:-cpu cuda}
EVAL_DEVICE=${EVAL_DEVICE:-cuda}
GPUS=${GPUS:-0.125}
WORKERS=${WORKERS:-1 8}
mkdir -p "$OUT"
if [ "$SITE" != none ] && [ ! -d "$SITE/ray" ]; then
  [ -f .gpu/site.tar.xz ] || { echo "no .gpu/site.tar.xz: run bench/gpu_bundle.sh here and carry .gpu" >&2; exit 1; }
  mkdir -p "$SITE" && xz -dc .gpu/site.tar.xz | tar -xf - -C "$SITE" || exit 1
fi
[ "$SITE" != none ] && export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ "$SITE" = none ] && export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
PY=${PY:-python3}
{ timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  echo "$(nproc) cores"
  timeout 120 $PY -c 'import sys, torch, ray, pybullet, av; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), "ray", ray.__version__, "av", av.__version__)'
} 2>&1 | tee "$OUT/machine.txt"
if [[ " $DEVICES $EVAL_DEVICE " == *cuda* ]] && ! timeout 120 $PY -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "torch sees no GPU: check the driver (nvidia-smi above), or measure the CPU alone with" \
       "DEVICES=cpu EVAL_DEVICE=cpu GPUS=0" >&2
  exit 1
fi

failed=0
step() {  # step NAME SECONDS COMMAND...: its output in $OUT/NAME.log, status in $OUT/status.txt
  local name=$1 limit=$2; shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  local t0=$SECONDS code
  timeout -s INT -k 15 "$limit" "$@" > "$OUT/$name.log" 2>&1
  code=$?
  [ "$code" -eq 0 ] || failed=1
  echo "$name: exit $code after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/status.txt"
}
step tests 90 $PY -m pytest -q -p no:cacheprovider -o faulthandler_timeout=80 tests/test_cuda.py tests/test_optimizers.py
# shellcheck disable=SC2086  # word splitting of the lists is meant
step train 40 $PY bench/train_throughput.py --frames synthetic --devices $DEVICES --steps 40 --augment shift=4 blur=1.0
# shellcheck disable=SC2086
step latency 60 $PY bench/plan_latency.py --devices $DEVICES --episodes 3 --steps 20
# shellcheck disable=SC2086
step eval 160 $PY bench/eval_throughput.py --episodes 32 --max-steps 40 --workers $WORKERS \
  --gpus "$GPUS" --device "$EVAL_DEVICE"

echo; cat "$OUT/machine.txt" "$OUT/status.txt"
[ -f "$OUT/tests.log" ] && sed -n '/short test summary/,$p' "$OUT/tests.log" && tail -n 1 "$OUT/tests.log"
for name in train latency eval; do
  [ -f "$OUT/$name.log" ] && { echo; sed -n '/^# /,$p' "$OUT/$name.log"; grep -m 3 -E "Error|error" "$OUT/$name.log"; }
done
exit "$failed"
