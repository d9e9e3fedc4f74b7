#!/usr/bin/env bash
# The GPU check of FARM (issue "One FARM for every device"), for a machine with a CUDA GPU, in a few minutes:
#
#   1. env      what torch sees (version, CUDA, the device)
#   2. build    the `default` preset simulated and its sample store built once (reused by the stages after it),
#               with whether its arrays fit on the device (DeviceStore)
#   3. pytest   pytest -q tests/gpu (every variant trains in bf16, evaluates, predicts and exports; the grouped
#               AUC and the device-resident store checked against the CPU)
#   4. bench    benchmarks/bench_train.py --device cuda --bf16 for base, farm, no-cpa at batch 5,000 and 20,000
#   5. train    farm train --config gpu --data default --trainer.max_epochs 2, timed (with its evaluation)
#
# and one table at the end. Every stage writes its output to ${OUT:-/tmp}/gpu_check/STAGE.log; a failing stage
# does not stop the others, and the script exits non-zero if any failed. Run it from the project root:
#
#   bash benchmarks/gpu_check.sh
#
# On the offline GPU machine (../shared/gpu/README.md) the project is used from src/ through PYTHONPATH and
# `python3 -m farmcli` stands in for `farm` (used whenever `farm` is not on PATH). FARM_HOME (default
# /tmp/farm-gpu-check) holds the data, the store and the run: keep it outside $OUT, whose files are copied back.
# Knobs: BENCH_STEPS (20), BENCH_WARMUP (3), TRAIN_EPOCHS (2), and a time limit per stage in seconds:
# LIMIT_BUILD (150), LIMIT_PYTEST (240), LIMIT_BENCH (150), LIMIT_TRAIN (240).

set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
LOGDIR=${OUT:-/tmp}/gpu_check
mkdir -p "$LOGDIR"
export FARM_HOME=${FARM_HOME:-/tmp/farm-gpu-check}
export PYTHONUNBUFFERED=1
mkdir -p "$FARM_HOME"
if command -v farm >/dev/null 2>&1; then
  FARM=(farm)
else
  FARM=("$PY" -m farmcli)
fi
BENCH_STEPS=${BENCH_STEPS:-20}
BENCH_WARMUP=${BENCH_WARMUP:-3}
export TRAIN_EPOCHS=${TRAIN_EPOCHS:-2}
RUN_NAME="gpu-check-$(date +%Y%m%d-%H%M%S)"
RUNS_DIR="$FARM_HOME/runs"

declare -a FAILED=()
declare -a STAGES=()
declare -A RC=()
declare -A WALL=()
T_START=$(date +%s.%N)

elapsed() {  # seconds between two `date +%s.%N` stamps, one decimal
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'
}

stage() {  # stage NAME LIMIT_S COMMAND...: run it with its output in LOGDIR/NAME.log, and record how it went
  local name=$1 limit=$2
  shift 2
  local log="$LOGDIR/$name.log" t0 t1 rc
  local shown="$*"
  STAGES+=("$name")
  [[ $shown == *$'\n'* ]] && shown="${shown%%$'\n'*} <script>"  # a python3 -c script: its first line only
  echo "== $name: $shown"
  t0=$(date +%s.%N)
  if command -v timeout >/dev/null 2>&1; then
    timeout --kill-after=15 "$limit" "$@" >"$log" 2>&1
  else
    "$@" >"$log" 2>&1
  fi
  rc=$?
  t1=$(date +%s.%N)
  RC[$name]=$rc
  WALL[$name]=$(elapsed "$t0" "$t1")
  if ((rc == 0)); then
    echo "   ok in ${WALL[$name]} s ($log)"
  else
    FAILED+=("$name")
    if ((rc == 124 || rc == 137)); then
      echo "   FAILED: over its limit of ${limit} s ($log); its last lines:"
    else
      echo "   FAILED with exit code $rc after ${WALL[$name]} s ($log); its last lines:"
    fi
    tail -n 25 "$log" | sed 's/^/   | /'
  fi
  return 0
}

echo "gpu_check: logs in $LOGDIR; FARM_HOME=$FARM_HOME; farm = ${FARM[*]}"

stage env 60 "$PY" -c '
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
assert torch.cuda.is_available(), "torch sees no CUDA device"
p = torch.cuda.get_device_properties(0)
free, total = torch.cuda.mem_get_info()
print(f"device: {p.name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free), {p.multi_processor_count} SMs")
print("bf16 supported:", torch.cuda.is_bf16_supported())
'
((RC[env] == 0)) && sed 's/^/   /' "$LOGDIR/env.log"

stage build "${LIMIT_BUILD:-150}" "$PY" -c '
import time
import torch
from farmcli.config import DataConfig
from farmcli.data.device_store import DeviceStore
from farmcli.sources import sample_store

t = time.perf_counter()
store = sample_store(DataConfig(source="default"))
how = "reused" if store.reused else "built"
print(f"{store} ({how} in {time.perf_counter() - t:.1f} s)")
if torch.cuda.is_available():
    nbytes = DeviceStore.nbytes(store)
    free, _ = torch.cuda.mem_get_info()
    fits = DeviceStore.fits(store, "cuda")
    print(f"device store: {nbytes / 2**20:.0f} MiB of {free / 2**20:.0f} MiB free; fits in half: {fits}")
    t = time.perf_counter()
    dev = DeviceStore(store, "cuda")
    torch.cuda.synchronize()
    print(f"copied to the device in {time.perf_counter() - t:.2f} s")
'
((RC[build] == 0)) && grep -h "SampleStore\|device store\|copied" "$LOGDIR/build.log" | sed 's/^/   /'

stage pytest "${LIMIT_PYTEST:-240}" "$PY" -m pytest -q -p no:cacheprovider tests/gpu
tail -n 1 "$LOGDIR/pytest.log" 2>/dev/null | sed 's/^/   /'

for batch in 5000 20000; do
  stage "bench-$batch" "${LIMIT_BENCH:-150}" "$PY" benchmarks/bench_train.py --data default --device cuda --bf16 \
    --variants base,farm,no-cpa --batch-size "$batch" --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP"
done

stage train "${LIMIT_TRAIN:-240}" "${FARM[@]}" train --config gpu --data default --trainer.max_epochs "$TRAIN_EPOCHS" \
  --fit.runs_dir "$RUNS_DIR" --fit.name "$RUN_NAME"

T_END=$(date +%s.%N)

# ---------------------------------------------------------------------------------------------------- summary
STATUS_LINES=""
for name in "${STAGES[@]}"; do
  STATUS_LINES+="$name ${RC[$name]} ${WALL[$name]}"$'\n'
done
export GPU_CHECK_LOGDIR="$LOGDIR" GPU_CHECK_RUN="$RUNS_DIR/$RUN_NAME" GPU_CHECK_STATUS="$STATUS_LINES"
export GPU_CHECK_TOTAL
GPU_CHECK_TOTAL=$(elapsed "$T_START" "$T_END")
"$PY" - <<'PYEOF' | tee "$LOGDIR/summary.txt"
import json
import os
from pathlib import Path

logdir, run = Path(os.environ["GPU_CHECK_LOGDIR"]), Path(os.environ["GPU_CHECK_RUN"])
status = [line.split() for line in os.environ["GPU_CHECK_STATUS"].splitlines() if line.strip()]
print()
print("gpu_check summary")
print(f"{'variant':<10} {'batch':>7} {'samples/s':>11} {'step ms':>9} {'gather':>7} {'gather %':>9} {'GPU MiB':>8}")
for batch in (5000, 20000):
    log = logdir / f"bench-{batch}.log"
    lines = log.read_text().splitlines() if log.is_file() else []
    results = next((json.loads(x) for x in reversed(lines) if x.startswith("{")), None)
    if not results:
        print(f"{'-':<10} {batch:>7,} {'(failed)':>11}")
        continue
    for variant, r in results.items():
        print(
            f"{variant:<10} {batch:>7,} {r['samples_per_s']:>11,} {r['step_ms']:>9} {r.get('gather', '?'):>7} "
            f"{100 * r['gather_share']:>8.1f}% {r.get('peak_gpu_mem_mb', '-'):>8}"
        )
wall = {name: secs for name, _, secs in status}
info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
print()
line = f"farm train --config gpu --data default --trainer.max_epochs {os.environ.get('TRAIN_EPOCHS', '2')}: "
line += f"{wall.get('train', '-')} s wall (the command, with its evaluation)"
if info:
    line += f"; fit {info.get('fit_seconds', '-')} s over {info.get('epochs', '-')} epochs, status {info.get('status')}"
print(line)
test = run / "eval-test.json"
if test.is_file():
    full = json.loads(test.read_text())["model"]["full"]
    aucs = {t: v["auc"] for t, v in full.items()}
    known = [a for a in aucs.values() if isinstance(a, float)]
    mean = f"; mean {sum(known) / len(known):.2f}" if known else ""
    print("test AUC (%): " + ", ".join(f"{t} {a:.2f}" if isinstance(a, float) else f"{t} -" for t, a in aucs.items()) + mean)
print()
print(f"{'stage':<12} {'result':<14} {'seconds':>8}")
for name, rc, secs in status:
    print(f"{name:<12} {'ok' if rc == '0' else 'FAILED (' + rc + ')':<14} {secs:>8}")
print(f"{'total':<12} {'':<14} {os.environ['GPU_CHECK_TOTAL']:>8}")
PYEOF

if ((${#FAILED[@]})); then
  echo "gpu_check: FAILED stages: ${FAILED[*]} (logs in $LOGDIR)"
  exit 1
fi
echo "gpu_check: all stages passed (logs in $LOGDIR)"
