r"""Evaluates trained models: flags -> one call to `cmma_jax.evaluate.evaluate_workdirs`.

    python launch/evaluate.py --workdirs=workdirs/cmma,workdirs/cvae,workdirs/cgan \
        --classifier_workdir=workdirs/classifier --output_dir=results
    python launch/evaluate.py --workdirs=workdirs/cmma --estimators=bound,iwae \
        --iwae_samples=1,10,100
    python launch/evaluate.py --workdirs=... --parzen_num_test=500 --parzen_samples=1000

Writes `results.json` and `results.md` (one row per model, with the settings) in --output_dir:
the conditional variational bound (nats and bits/dim; cmma, cvae), the importance-weighted bound
for each K (cmma, cvae), the Parzen-window conditional log-likelihood with σ chosen on the
validation split (every model), and attribute fidelity with a classifier trained by
`launch/train_classifier.py` (every model, and the real faces as the ceiling). The models are
evaluated on the data they were trained on; --data_dir / --prepared_dir say where it is now.
"""

from absl import app, flags

from cmma_jax import flag_types
from cmma_jax.evaluate.settings import EvalSettings

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training workdirs to evaluate (comma-separated), all of one "
                  "dataset.", required=True)
flags.DEFINE_string("output_dir", "results", "Where results.json and results.md go.")
# Every field of EvalSettings, with its default and its docstring line (show_progress: --progress).
RENAME = {"show_progress": "progress"}
FIELDS = flag_types.define_settings_flags(EvalSettings, rename=RENAME)


def main(argv):
    flag_types.check_no_arguments(argv)
    from cmma_jax import evaluate, files

    settings = flag_types.settings_or_usage_error(EvalSettings, FIELDS, rename=RENAME)
    with flag_types.exit_on(files.OutputDirError, door="launch/evaluate.py"):
        evaluate.evaluate_workdirs(FLAGS.workdirs, settings, FLAGS.output_dir)
    print(f"Wrote {FLAGS.output_dir}/results.json and {FLAGS.output_dir}/results.md", flush=True)


if __name__ == "__main__":
    app.run(main)
