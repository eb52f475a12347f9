#!/usr/bin/env bash
# One prepared accelerator check (issue #14), at most ~9 minutes on one H200. See
# benchmarks/ACCELERATOR.md for what to bring (wheels, an LFW subset) and how to run it.
#
#   benchmarks/accelerator_check.sh OUT_DIR            # on the accelerator
#   benchmarks/accelerator_check.sh OUT_DIR --dry-run  # here, on the CPU, tiny settings (~1-2 min)
#
# Parts, in order, each under its own `timeout` (seconds; CHECK_<PART>_S overrides), and each
# skipped when less than its minimum is left of the total budget (CHECK_BUDGET_S, default 530):
#   setup     install the carried wheels (.whl/) when tensorflow-datasets/grain/ml_collections
#             are missing; the environment (env.json, nvidia-smi)
#   tests     the device paths on the device: models (one step, bf16, one trace, paper shapes),
#             the trainer (a run, exact resumption, one trace), batch-split helpers
#   cmma cvae cgan vlae
#             train_throughput.py at the paper preset, batch 256, 1024, 64, bfloat16 and float32,
#             model-FLOPs utilisation against the measured matmul peak and the datasheet peak
#   input     input_pipeline.py on the LFW subset (.lfw/ if carried, else a generated LFW-format
#             folder) at each batch size, against the images/s the CMMA step consumes there
#   lfw       if time is left: launch/train.py, the paper-size CMMA on LFW, for as many steps
#             as fit; its steps/s from metrics.jsonl
# After each part OUT_DIR/summary.json, OUT_DIR/summary.md and OUT_DIR/logs.tar.gz (every log
# and JSON of the parts, work/) are rewritten, so a run cut short still returns what it measured:
# three files, within the device tool's eight.
set -u -o pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUT_DIR [--dry-run]" >&2
  exit 2
fi
OUT_DIR=$(mkdir -p "$1" && cd "$1" && pwd)
DRY=0
[[ "${2:-}" == "--dry-run" ]] && DRY=1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/accel_check.XXXXXX")
WORK="$SCRATCH/work"  # every log and JSON; OUT_DIR gets the three files below
mkdir -p "$WORK"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export CMMA_DATA_DIR="$SCRATCH/prepared"
START=$(date +%s)
BUDGET=${CHECK_BUDGET_S:-530}
echo "[]" > "$WORK/parts.json"

if [[ $DRY == 1 ]]; then
  export JAX_PLATFORMS=cpu
  BUDGET=${CHECK_BUDGET_S:-170}
  PRESET=tiny; BATCHES=8; DTYPES=float32; REPEATS=1; STEPS=1; PEAK_REPEATS=1; PEAK_SIZE=256
  MODELS_ORDER="cmma vlae"; PIPE_BATCHES="8"; PIPE_WORKERS="0"; PIPE_BATCHES_N=5
  TESTS=(tests/test_parallel.py::test_batch_split_helpers "tests/test_models.py::test_paper_preset_shapes[cmma]")
  LFW_ROWS=300; LFW_TRAIN=200; LFW_VAL=50; LFW_STEPS_CAP=6; LFW_BATCH=8
  : "${CHECK_SETUP_S:=60}" "${CHECK_TESTS_S:=40}" "${CHECK_MODEL_S:=60}" "${CHECK_INPUT_S:=40}"
  : "${CHECK_LFW_S:=60}"
else
  # conftest.py defaults JAX_PLATFORMS to cpu; the device tests must run on the device.
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
  PRESET=paper; BATCHES=256,1024,64; DTYPES=bfloat16,float32; REPEATS=3; STEPS=0
  PEAK_REPEATS=10; PEAK_SIZE=0
  MODELS_ORDER="cmma cvae cgan vlae"; PIPE_BATCHES="64 256 1024"; PIPE_WORKERS="0,8"
  PIPE_BATCHES_N=40
  TESTS=(tests/test_models.py tests/test_train.py tests/test_parallel.py::test_batch_split_helpers
         -k "test_one_step or test_bfloat16_compute or test_step_traces_once or test_paper_preset_shapes or test_a_run_writes or test_stopping_and_resuming or test_the_step_is_traced_once or test_batch_split_helpers")
  LFW_ROWS=2000; LFW_TRAIN=1700; LFW_VAL=150; LFW_STEPS_CAP=1000000; LFW_BATCH=256
  : "${CHECK_SETUP_S:=60}" "${CHECK_TESTS_S:=110}" "${CHECK_MODEL_S:=70}" "${CHECK_INPUT_S:=45}"
  : "${CHECK_LFW_S:=150}"
fi
CHECK_CMMA_S=${CHECK_CMMA_S:-$(( DRY == 1 ? CHECK_MODEL_S : CHECK_MODEL_S + 50 ))}

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }

finish() {  # summary + logs after every part
  "$PY" benchmarks/accelerator_bundle.py summary "$OUT_DIR" "$WORK" >> "$WORK/bundle.log" 2>&1
  tar -czf "$OUT_DIR/logs.tar.gz" -C "$SCRATCH" work 2>/dev/null
}

# run_part NAME LIMIT_S MIN_S CMD...: runs CMD under `timeout` (the smaller of LIMIT_S and the
# budget left), logs to work/NAME.log, records the status; skipped if under MIN_S are left.
run_part() {
  local name=$1 limit=$2 min=$3; shift 3
  local remaining status rc t0 t1
  remaining=$(left)
  (( limit > remaining )) && limit=$remaining
  if (( limit < min )); then
    status="skipped (${remaining} s left of the budget)"
    t0=$(date +%s); t1=$t0
  else
    echo "== $name (limit ${limit} s, $(elapsed) s elapsed)"
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" > "$WORK/$name.log" 2>&1
    rc=$?
    t1=$(date +%s)
    case $rc in
      0) status=ok ;;
      124|137) status="timed out after ${limit} s"
               [[ $name == lfw ]] && status="ok (stopped at its time limit, as planned)" ;;
      *) status="failed (exit $rc)" ;;
    esac
    tail -n 5 "$WORK/$name.log"
  fi
  echo "   $name: $status"
  "$PY" - "$WORK/parts.json" "$name" "$status" "$(( t1 - t0 ))" "$limit" <<'EOF'
import json, sys
path, name, status, seconds, limit = sys.argv[1:]
parts = json.load(open(path))
parts.append({"name": name, "status": status, "seconds": int(seconds), "limit": int(limit)})
json.dump(parts, open(path, "w"), indent=1)
EOF
  finish
}

# --- setup -------------------------------------------------------------------------------------
setup() {
  if ! "$PY" -c "import tensorflow_datasets, grain, ml_collections" 2>/dev/null; then
    [[ -d "$REPO/.whl" ]] || { echo "missing packages and no .whl/ folder"; return 1; }
    # Only the wheels of packages that are not importable yet (--no-deps: the image's own
    # protobuf, numpy, etc. stay); protobuf only if the one there is too old for them.
    local missing
    missing=$("$PY" - "$REPO"/.whl/*.whl <<'EOF'
import importlib.metadata as md, os, re, sys
for path in sys.argv[1:]:
    dist = os.path.basename(path).split("-")[0]
    if dist == "protobuf":
        continue
    try:
        md.version(re.sub(r"[-_.]+", "-", dist))
    except md.PackageNotFoundError:
        print(path)
EOF
)
    echo "installing: $missing"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$SCRATCH/site" $missing || return 1
    export PYTHONPATH="$PYTHONPATH:$SCRATCH/site"
    if ! "$PY" -c "import tensorflow_datasets, grain, ml_collections, cmma_jax.train"; then
      echo "retrying with the carried protobuf"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$SCRATCH/site_pb" "$REPO"/.whl/protobuf-*.whl || return 1
      export PYTHONPATH="$SCRATCH/site_pb:$PYTHONPATH"
    fi
  fi
  echo "PYTHONPATH=$PYTHONPATH" > "$WORK/pythonpath.txt"
  "$PY" - "$WORK/env.json" <<'EOF'
import json, os, platform, sys, time
import jax, jaxlib, flax, optax
import tensorflow_datasets, grain, ml_collections
d = jax.devices()
json.dump({"backend": jax.default_backend(), "devices": [x.device_kind for x in d],
           "num_devices": len(d), "cpu_count": os.cpu_count(), "python": platform.python_version(),
           "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
           "optax": optax.__version__, "tfds": tensorflow_datasets.__version__,
           "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, open(sys.argv[1], "w"), indent=1)
print(open(sys.argv[1]).read())
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi
  return 0
}
echo "== setup"
t0=$(date +%s)
setup > "$WORK/setup.log" 2>&1
rc=$?
tail -n 15 "$WORK/setup.log"
[[ -f "$WORK/pythonpath.txt" ]] && export $(cat "$WORK/pythonpath.txt")
"$PY" - "$WORK/parts.json" "$rc" "$(( $(date +%s) - t0 ))" "$CHECK_SETUP_S" <<'EOF'
import json, sys
path, rc, seconds, limit = sys.argv[1:]
json.dump([{"name": "setup", "status": "ok" if rc == "0" else f"failed (exit {rc})",
            "seconds": int(seconds), "limit": int(limit)}], open(path, "w"), indent=1)
EOF
finish

# --- tests on the device -------------------------------------------------------------------------
# -o addopts="": the project's addopts ask for pytest-xdist, which the device may not have; these
# few tests run in one process there.
run_part tests "$CHECK_TESTS_S" 20 "$PY" -m pytest -q -o addopts="" -p no:cacheprovider \
  --junitxml="$WORK/tests.xml" "${TESTS[@]}"

# --- train step throughput -------------------------------------------------------------------------
for model in $MODELS_ORDER; do
  limit=$CHECK_MODEL_S
  [[ $model == cmma ]] && limit=$CHECK_CMMA_S
  run_part "throughput_$model" "$limit" 25 "$PY" benchmarks/train_throughput.py \
    --models="$model" --presets="$PRESET" --batch_sizes="$BATCHES" --dtypes="$DTYPES" \
    --conv_impls=auto --repeats="$REPEATS" --steps_per_repeat="$STEPS" \
    --peak_repeats="$PEAK_REPEATS" --peak_size="$PEAK_SIZE" \
    --out="$WORK/throughput_$model.json"
done

# --- data: the LFW subset (carried) or a generated LFW-format folder ----------------------------------
if [[ -d "$REPO/.lfw" && $DRY == 0 ]]; then
  LFW_DIR="$REPO/.lfw"
  LFW_NOTE="the carried LFW subset (.lfw/)"
else
  LFW_DIR="$SCRATCH/fake_lfw"
  LFW_NOTE="a generated LFW-format folder of random faces (no .lfw/ carried)"
  "$PY" benchmarks/accelerator_bundle.py fake-lfw "$LFW_DIR" --rows "$LFW_ROWS" \
    > "$WORK/fake_lfw.log" 2>&1
fi
export PY WORK SCRATCH DRY LFW_DIR LFW_TRAIN LFW_VAL LFW_BATCH LFW_STEPS_CAP PIPE_BATCHES \
  PIPE_WORKERS PIPE_BATCHES_N

# --- input pipeline against the step --------------------------------------------------------------
input_part() {
  local b consumer
  for b in $PIPE_BATCHES; do
    consumer=$("$PY" benchmarks/accelerator_bundle.py consumer "$WORK/throughput_cmma.json" \
               --model cmma --batch "$b")
    [[ $consumer == 0.0 ]] && consumer=1
    "$PY" benchmarks/input_pipeline.py --datasets lfw --lfw_dir "$LFW_DIR" \
      --lfw_num_train "$LFW_TRAIN" --lfw_num_validation "$LFW_VAL" \
      --prepared_dir "$SCRATCH/prepared" --workers "$PIPE_WORKERS" --batch_size "$b" \
      --batches "$PIPE_BATCHES_N" --repeats 2 --consumer_images_per_sec "$consumer" \
      --json "$WORK/input_$b.json" || return 1
  done
}
export -f input_part
run_part input "$CHECK_INPUT_S" 15 bash -c input_part

# --- if time is left: the paper-size CMMA on LFW -------------------------------------------------
lfw_part() {
  local preset=paper
  [[ $DRY == 1 ]] && preset=tiny
  "$PY" launch/train.py --model cmma --preset "$preset" --dataset lfw --data_dir "$LFW_DIR" \
    --prepared_dir "$SCRATCH/prepared" --workdir "$SCRATCH/lfw_run" \
    --config.data.options.num_train="$LFW_TRAIN" \
    --config.data.options.num_validation="$LFW_VAL" \
    --config.training.batch_size="$LFW_BATCH" \
    --config.training.num_steps="$LFW_STEPS_CAP" \
    --config.training.log_every="$(( DRY == 1 ? 2 : 100 ))" \
    --config.training.sample_every=1000000000 \
    --config.training.checkpoint_every=1000000000
}
remaining=$(( $(left) - 15 ))
(( remaining > CHECK_LFW_S && DRY == 0 )) && CHECK_LFW_S=$remaining
export -f lfw_part
run_part lfw "$CHECK_LFW_S" 40 bash -c lfw_part
"$PY" benchmarks/accelerator_bundle.py lfw-metrics "$SCRATCH/lfw_run" "$WORK/lfw_train.json" \
  --note "CMMA, $( [[ $DRY == 1 ]] && echo tiny || echo paper ) preset, batch $LFW_BATCH, on $LFW_NOTE ($LFW_TRAIN train faces)$( [[ $DRY == 1 ]] && echo ", $LFW_STEPS_CAP steps" || echo "; as many steps as fit in the time left" )" \
  >> "$WORK/bundle.log" 2>&1
finish
rm -rf "$SCRATCH"
echo "== done in $(elapsed) s: $OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
