#!/usr/bin/env bash
# One prepared accelerator check (issues #14, #22), at most ~9 minutes on one H200. See
# benchmarks/ACCELERATOR.md for what to bring (wheels, an LFW subset) and how to run it.
#
#   benchmarks/accelerator_check.sh OUT_DIR            # on the accelerator
#   CHECK_ONLY=pair benchmarks/accelerator_check.sh OUT_DIR   # the whole lease to the pair
#   benchmarks/accelerator_check.sh OUT_DIR --dry-run  # here, on the CPU, tiny settings (~4-5 min)
#
# Parts, in order, each under its own `timeout` (seconds; CHECK_<PART>_S overrides), and each
# skipped when less than its minimum is left of the total budget (CHECK_BUDGET_S, default 530);
# CHECK_ONLY="pair" (or any of "tests throughput input pair") runs only those (setup always):
#   setup     install the carried wheels (.whl/) when tensorflow-datasets/grain/ml_collections
#             are missing; the environment (env.json, nvidia-smi)
#   tests     the device paths on the device: models (one step, bf16, one trace, paper shapes),
#             the trainer (a run, exact resumption, one trace), batch-split helpers
#   throughput_cmma _cvae _cgan _vlae
#             train_throughput.py at the paper preset, batch 256, 1024, 64, bfloat16 and float32,
#             model-FLOPs utilisation against the measured matmul peak and the datasheet peak
#   input     input_pipeline.py on the LFW subset (.lfw/ if carried, else a generated LFW-format
#             folder) at each batch size, against the images/s the CMMA step consumes there
#   pair      with the time left: launch/train.py, the paper-size CMMA and then the CVAE on LFW
#             (batch 64), equal shares, each stopped by SIGTERM (checkpointed); their float16
#             parameters as OUT_DIR/params_<model>_<i>of<n>.npz; launch/evaluate.py on the test
#             split (bound, IWAE, Parzen); launch/learning_curves.py. Resumes from .accel_params/
#             when carried (parameters of an earlier run).
# After each part OUT_DIR/summary.json, OUT_DIR/summary.md and OUT_DIR/logs.tar.gz (every log
# and JSON of the parts, work/) are rewritten, so a run cut short still returns what it measured:
# those three and the parameter files, at most eight, within what the device tool sends back.
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
ONLY=${CHECK_ONLY:-tests throughput input pair}
want() { [[ " ${ONLY//,/ } " == *" $1 "* ]]; }

if [[ $DRY == 1 ]]; then
  export JAX_PLATFORMS=cpu
  BUDGET=${CHECK_BUDGET_S:-460}
  PRESET=tiny; BATCHES=8; DTYPES=float32; REPEATS=1; STEPS=1; PEAK_REPEATS=1; PEAK_SIZE=256
  MODELS_ORDER="cmma vlae"; PIPE_BATCHES="8"; PIPE_WORKERS="0"; PIPE_BATCHES_N=5
  TESTS=(tests/test_parallel.py::test_batch_split_helpers "tests/test_models.py::test_paper_preset_shapes[cmma]")
  LFW_ROWS=300; LFW_TRAIN=200; LFW_VAL=50
  # The pair: tiny models, a few hundred steps each before their SIGTERM (checkpoint every 50).
  PAIR_BATCH=8; PAIR_STEPS_CAP=10000000; PAIR_LOG_EVERY=10; PAIR_CHECKPOINT_EVERY=50
  PAIR_IWAE=1,10; PAIR_PARZEN_N=20; PAIR_PARZEN_SAMPLES=20
  : "${CHECK_SETUP_S:=60}" "${CHECK_TESTS_S:=40}" "${CHECK_MODEL_S:=60}" "${CHECK_INPUT_S:=40}"
  : "${CHECK_PAIR_S:=280}" "${PAIR_RESERVE_S:=160}" "${PAIR_CURVES_S:=45}" "${PAIR_MIN_S:=60}"
else
  # conftest.py defaults JAX_PLATFORMS to cpu; the device tests must run on the device.
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
  PRESET=paper; BATCHES=256,1024,64; DTYPES=bfloat16,float32; REPEATS=3; STEPS=0
  PEAK_REPEATS=10; PEAK_SIZE=0
  MODELS_ORDER="cmma cvae cgan vlae"; PIPE_BATCHES="64 256 1024"; PIPE_WORKERS="0,8"
  PIPE_BATCHES_N=40
  TESTS=(tests/test_models.py tests/test_train.py tests/test_parallel.py::test_batch_split_helpers
         -k "test_one_step or test_bfloat16_compute or test_step_traces_once or test_paper_preset_shapes or test_a_run_writes or test_stopping_and_resuming or test_the_step_is_traced_once or test_batch_split_helpers")
  LFW_ROWS=2000; LFW_TRAIN=1700; LFW_VAL=150
  # The pair: the paper's batch (64: ~27 steps an epoch of the 1,700 faces, one validation bound
  # each), a checkpoint every 500 steps, the evaluation's default IWAE and Parzen settings on
  # all 150 test faces. PAIR_RESERVE_S: export (~30 s), evaluation and curves.
  PAIR_BATCH=${PAIR_BATCH:-64}; PAIR_STEPS_CAP=10000000; PAIR_LOG_EVERY=100
  PAIR_CHECKPOINT_EVERY=500; PAIR_IWAE=1,10,100; PAIR_PARZEN_N=0; PAIR_PARZEN_SAMPLES=200
  : "${CHECK_SETUP_S:=60}" "${CHECK_TESTS_S:=110}" "${CHECK_MODEL_S:=70}" "${CHECK_INPUT_S:=45}"
  : "${CHECK_PAIR_S:=100000}" "${PAIR_RESERVE_S:=170}" "${PAIR_CURVES_S:=25}" "${PAIR_MIN_S:=120}"
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
      124|137) status="timed out after ${limit} s" ;;
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
want tests && run_part tests "$CHECK_TESTS_S" 20 "$PY" -m pytest -q -o addopts="" -p no:cacheprovider \
  --junitxml="$WORK/tests.xml" "${TESTS[@]}"

# --- train step throughput -------------------------------------------------------------------------
for model in $MODELS_ORDER; do
  want throughput || break
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
export PY WORK SCRATCH DRY REPO LFW_DIR LFW_TRAIN LFW_VAL PIPE_BATCHES PIPE_WORKERS PIPE_BATCHES_N \
  PAIR_BATCH PAIR_STEPS_CAP PAIR_LOG_EVERY PAIR_CHECKPOINT_EVERY PAIR_IWAE PAIR_PARZEN_N \
  PAIR_PARZEN_SAMPLES PAIR_RESERVE_S PAIR_CURVES_S

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
want input && run_part input "$CHECK_INPUT_S" 15 bash -c input_part

# --- the pair: the paper-size CMMA and CVAE on LFW, as long as the time left allows -------------
# Each model trains under `timeout -s TERM` (launch/train.py checkpoints the step under way and
# exits 143); equal shares of what is left after PAIR_RESERVE_S (export, evaluation, curves).
# Then: the parameters, float16, as params_<model>_<i>of<n>.npz in OUT_DIR (export-params; at most
# 8 files with the three above), the test-split evaluation (bound, IWAE, Parzen) and the learning
# curves into work/pair/. Parameters returned by an earlier run, in .accel_params/ (carried), are
# imported first and training resumes from them (a fresh optimizer state; see ACCELERATOR.md).
pair_part() {
  local preset=paper models=${PAIR_MODELS:-cmma cvae} model i n rc t0 t1 share left_s
  [[ $DRY == 1 ]] && preset=tiny
  local pair="$SCRATCH/pair" rec="$WORK/pair"
  mkdir -p "$pair" "$rec"
  now() { date +%s; }
  if compgen -G "$PAIR_PARAMS_DIR/params_*.npz" > /dev/null; then
    echo "resuming from $PAIR_PARAMS_DIR: $(cd "$PAIR_PARAMS_DIR" && ls params_*.npz | tr '\n' ' ')"
    "$PY" benchmarks/accelerator_bundle.py import-params "$PAIR_PARAMS_DIR" "$pair" --resume \
      --data_dir "$LFW_DIR" --prepared_dir "$SCRATCH/prepared" --report "$rec/resumed.json" \
      > "$rec/import_resume.log" 2>&1 || { tail -n 20 "$rec/import_resume.log"; return 1; }
  fi
  n=$(wc -w <<< "$models"); i=0
  for model in $models; do
    # This model's share: an equal part of what is left for the models still to train.
    left_s=$(( PAIR_DEADLINE - $(now) - PAIR_RESERVE_S ))
    share=$(( left_s / (n - i) )); i=$(( i + 1 ))
    [[ -n "${PAIR_TRAIN_S:-}" ]] && share=$PAIR_TRAIN_S
    if (( share < 20 )); then echo "$model: no time left ($share s)"; continue; fi
    echo "$model: training for $share s ($(( $(now) - PAIR_START )) s into the part)"
    t0=$(now)
    # --preserve-status: train.py's own exit status (143 once it has checkpointed on SIGTERM).
    # PAIR_STOP_AFTER_VALIDATIONS=N (the dry run in the tests): the SIGTERM comes as soon as N
    # more validation points are in metrics.jsonl, an event rather than a time, so that a slow
    # machine does not fail the test; `share` stays the limit.
    local metrics="$pair/$model/metrics.jsonl" before seen pid
    before=$(grep -c val_elbo "$metrics" 2>/dev/null); before=${before:-0}
    timeout --preserve-status -s TERM -k 60 "$share" "$PY" launch/train.py --model "$model" --preset "$preset" \
      --dataset lfw --data_dir "$LFW_DIR" --prepared_dir "$SCRATCH/prepared" \
      --workdir "$pair/$model" \
      --config.data.options.num_train="$LFW_TRAIN" \
      --config.data.options.num_validation="$LFW_VAL" \
      --config.training.batch_size="$PAIR_BATCH" \
      --config.training.num_steps="$PAIR_STEPS_CAP" \
      --config.training.log_every="$PAIR_LOG_EVERY" \
      --config.training.eval_every="$(( (LFW_TRAIN + PAIR_BATCH - 1) / PAIR_BATCH ))" \
      --config.training.num_eval="$LFW_VAL" \
      --config.training.sample_every="$PAIR_CHECKPOINT_EVERY" \
      --config.training.checkpoint_every="$PAIR_CHECKPOINT_EVERY" \
      > "$rec/train_$model.log" 2>&1 &
    pid=$!
    if [[ -n "${PAIR_STOP_AFTER_VALIDATIONS:-}" ]]; then
      while kill -0 "$pid" 2>/dev/null; do
        seen=$(grep -c val_elbo "$metrics" 2>/dev/null); seen=${seen:-0}
        if (( seen - before >= PAIR_STOP_AFTER_VALIDATIONS )); then
          kill -TERM "$pid"  # timeout passes it on to train.py
          break
        fi
        sleep 1
      done
    fi
    wait "$pid"
    rc=$?; t1=$(now)
    tail -n 3 "$rec/train_$model.log"
    "$PY" - "$rec/train_$model.json" "$model" "$rc" "$(( t1 - t0 ))" "$share" \
      "$rec/train_$model.log" "$pair/$model" <<'EOF'
import json, os, sys
path, model, rc, seconds, share, log, workdir = sys.argv[1:]
text = open(log, errors="replace").read()
ckpt = os.path.join(workdir, "checkpoints")
steps = sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) if os.path.isdir(ckpt) else []
json.dump({"model": model, "exit": int(rc), "seconds": int(seconds), "share": int(share),
           "stopped_by_sigterm": "Stopped by a preemption notice" in text,
           "last_checkpoint": steps[-1] if steps else None}, open(path, "w"), indent=1)
EOF
    mkdir -p "$rec/$model"
    for f in config.json attributes.json metrics.jsonl; do
      cp "$pair/$model/$f" "$rec/$model/" 2>/dev/null
    done
    # The latest sample grid (validation faces, reconstructions, samples).
    ls "$pair/$model"/samples/*.png 2>/dev/null | sort -V | tail -n 1 | xargs -r -I{} cp {} "$rec/$model/"
  done
  local workdirs=() w
  for model in $models; do
    [[ -d "$pair/$model/checkpoints" ]] && workdirs+=("$pair/$model")
  done
  (( ${#workdirs[@]} )) || { echo "no model has a checkpoint"; return 1; }
  # The parameters first: what cannot be measured again.
  "$PY" benchmarks/accelerator_bundle.py export-params "$OUT_DIR" "${workdirs[@]}" \
    --report "$rec/export.json" > "$rec/export.log" 2>&1 \
    || { tail -n 20 "$rec/export.log"; return 1; }
  echo "exported: $(cd "$OUT_DIR" && ls params_*.npz | tr '\n' ' ')"
  local csv
  csv=$(IFS=,; echo "${workdirs[*]}")
  left_s=$(( PAIR_DEADLINE - $(now) - PAIR_CURVES_S ))
  echo "evaluate (limit $left_s s)"
  timeout -s TERM -k 10 "$left_s" "$PY" launch/evaluate.py --workdirs="$csv" \
    --estimators=bound,iwae,parzen --num_test=0 --iwae_samples="$PAIR_IWAE" \
    --parzen_num_test="$PAIR_PARZEN_N" --parzen_num_validation="$PAIR_PARZEN_N" \
    --parzen_samples="$PAIR_PARZEN_SAMPLES" --noprogress --output_dir="$rec/eval" \
    > "$rec/evaluate.log" 2>&1
  rc=$?; echo "$rc" > "$rec/evaluate.exit"
  echo "evaluate: exit $rc"
  local runs=() plot=--plot
  for w in "${workdirs[@]}"; do runs+=("--run=lfw/$(basename "$w" | tr a-z A-Z)=$w"); done
  "$PY" -c "import matplotlib" 2>/dev/null || plot=--noplot
  left_s=$(( PAIR_DEADLINE - $(now) ))
  (( left_s < 10 )) && left_s=10
  timeout -k 5 "$left_s" "$PY" launch/learning_curves.py "${runs[@]}" \
    --output="$rec/learning_curves" $plot > "$rec/curves.log" 2>&1
  rc=$?; echo "$rc" > "$rec/curves.exit"
  echo "learning curves: exit $rc ($plot)"
  if [[ $DRY == 1 || -n "${PAIR_ROUNDTRIP:-}" ]]; then
    # The import here: workdirs rebuilt from the returned files load and match the trained
    # parameters within float16 rounding.
    "$PY" benchmarks/accelerator_bundle.py import-params "$OUT_DIR" "$SCRATCH/imported" \
      --compare "$pair" --report "$rec/roundtrip.json" > "$rec/roundtrip.log" 2>&1 \
      || { tail -n 20 "$rec/roundtrip.log"; return 1; }
    echo "round trip: ok"
  fi
  return 0
}
PAIR_PARAMS_DIR=${PAIR_PARAMS_DIR:-$REPO/.accel_params}
export PAIR_PARAMS_DIR
if want pair; then
  "$PY" - "$WORK/pair_settings.json" <<EOF
import json, sys
json.dump({"data": "$LFW_NOTE", "preset": "$( [[ $DRY == 1 ]] && echo tiny || echo paper )",
           "batch_size": $PAIR_BATCH, "num_train": $LFW_TRAIN, "num_validation": $LFW_VAL,
           "models": "${PAIR_MODELS:-cmma cvae}".split(),
           "resumed_from": "$(ls "$PAIR_PARAMS_DIR"/params_*.npz 2>/dev/null | xargs -r -n1 basename | tr '\n' ' ')".split()},
          open(sys.argv[1], "w"), indent=1)
EOF
  limit=$(( $(left) - 10 ))
  (( limit > CHECK_PAIR_S )) && limit=$CHECK_PAIR_S
  # The part's own deadline leaves some slack under its timeout (the last steps, the round trip).
  export PAIR_START=$(date +%s) OUT_DIR
  export PAIR_DEADLINE=$(( PAIR_START + limit - (DRY == 1 ? 30 : 15) ))
  export -f pair_part
  run_part pair "$limit" "$PAIR_MIN_S" bash -c pair_part
fi
finish
rm -rf "$SCRATCH"
echo "== done in $(elapsed) s: $OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
