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

import sys

from absl import app, flags

from cmma_jax import flag_types

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training workdirs to evaluate (comma-separated), all of one "
                  "dataset.", required=True)
flags.DEFINE_string("output_dir", "results", "Where results.json and results.md go.")
flags.DEFINE_string("split", "test", "The split to score.")
flags.DEFINE_string("validation_split", "validation", "The split on which the Parzen sigma is "
                    "chosen.")
flags.DEFINE_list("estimators", ["bound", "iwae", "parzen", "fidelity"],
                  "Any of bound, iwae, parzen, fidelity.")
flags.DEFINE_integer("num_test", 0, "Faces for the bound, IWAE and fidelity (0: the whole split).")
flags.DEFINE_integer("batch_size", 32, "Faces per call (bound, IWAE, fidelity).")
flags.DEFINE_integer("bound_samples", 1, "Samples of z per face for the variational bound.")
flag_types.DEFINE_positive_ints("iwae_samples", [1, 10, 100],
                                "The K's of the importance-weighted bound.")
flags.DEFINE_integer("iwae_sample_chunk", 10, "Importance samples per call (memory).")
flags.DEFINE_integer("parzen_num_test", 100, "Test faces scored by Parzen (0: all).")
flags.DEFINE_integer("parzen_num_validation", 100, "Validation faces for choosing sigma (0: all).")
flags.DEFINE_integer("parzen_samples", 200, "Faces generated per test face.")
flag_types.DEFINE_positive_floats("parzen_sigmas", None, "The sigma grid (default: 17 values "
                                  "from 0.02 to 0.8, log-spaced).")
flags.DEFINE_float("parzen_temperature", 1.0, "Prior noise scale of the generated faces.")
flags.DEFINE_integer("parzen_batch", 10, "Test faces per call (memory).")
flags.DEFINE_integer("parzen_sample_chunk", 50, "Generated faces per test face per call (memory).")
flags.DEFINE_string("classifier_workdir", None, "A classifier from launch/train_classifier.py; "
                    "without one the attribute fidelity is skipped.")
flags.DEFINE_float("fidelity_temperature", 1.0, "Temperature of the faces the classifier scores.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("data_dir", None, "The raw dataset folder for celeba or lfw, if it moved "
                    "since training (e.g. ../shared/data/celeba).")
flags.DEFINE_string("prepared_dir", None, "Where prepared datasets live, if not where training "
                    "put them.")
flags.DEFINE_bool("progress", True, "Print progress lines on stderr.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from cmma_jax import evaluate, files

    extra = {}
    if FLAGS.parzen_sigmas:
        extra["parzen_sigmas"] = tuple(FLAGS.parzen_sigmas)
    settings = evaluate.EvalSettings(
        split=FLAGS.split, validation_split=FLAGS.validation_split,
        estimators=tuple(FLAGS.estimators), num_test=FLAGS.num_test or None,
        batch_size=FLAGS.batch_size, bound_samples=FLAGS.bound_samples,
        iwae_samples=tuple(FLAGS.iwae_samples),
        iwae_sample_chunk=FLAGS.iwae_sample_chunk,
        parzen_num_test=FLAGS.parzen_num_test or None,
        parzen_num_validation=FLAGS.parzen_num_validation or None,
        parzen_samples=FLAGS.parzen_samples, parzen_temperature=FLAGS.parzen_temperature,
        parzen_batch=FLAGS.parzen_batch, parzen_sample_chunk=FLAGS.parzen_sample_chunk,
        classifier_workdir=FLAGS.classifier_workdir,
        fidelity_temperature=FLAGS.fidelity_temperature, seed=FLAGS.seed,
        data_dir=FLAGS.data_dir, prepared_dir=FLAGS.prepared_dir, show_progress=FLAGS.progress,
        **extra)
    try:
        evaluate.evaluate_workdirs(FLAGS.workdirs, settings, FLAGS.output_dir)
    except files.OutputDirError as e:
        sys.exit(f"launch/evaluate.py: {e}")
    print(f"Wrote {FLAGS.output_dir}/results.json and {FLAGS.output_dir}/results.md", flush=True)


if __name__ == "__main__":
    app.run(main)
