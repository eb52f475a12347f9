r"""The CMMA paper's whole protocol: flags -> one call to `cmma_jax.reproduce.reproduce`.

    python launch/reproduce.py --dataset lfw --data_dir ../shared/data/lfw --preset small \
        --seeds 0,1,2 --workdir ~/cmma_runs/lfw_small
    python launch/reproduce.py ... --preset paper      # the paper's networks and 500 epochs
    python launch/reproduce.py ... --stages evaluate,figures,report   # while trainings run
    python launch/reproduce.py ... --stop_patience 5 --stop_min_delta 20 --max_epochs 100
                                         # until converged, at most 100 epochs

Trains the models of every seed (`<workdir>/seed_<s>/<model>/`) and one attribute classifier
(`<workdir>/classifier/`), evaluates each seed's models (`<workdir>/evaluation/seed_<s>/`: bound
in nats and bits/dim, IWAE, Parzen with σ chosen on the validation split, attribute fidelity),
draws the figures (`<workdir>/figures/seed_<s>/`) and writes `<workdir>/report.md` and
`report.json`: per seed, and mean ± standard error across seeds, with the CMMA's paired per-face
differences against each other model. Running the same command again skips what is finished
and continues what is not; seeds and models may be added, `--num_steps` and
`--classifier_steps` raised; a change of dataset, preset, data options or overrides is refused.
"""

import ast
import shlex
import sys

from absl import app, flags, logging

from cmma_jax import flag_types

STAGES = ("train", "classifier", "evaluate", "figures", "report")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's folder (an existing one is resumed).",
                    required=True)
flags.DEFINE_string("dataset", "synthetic_faces", "lfw, celeba, celeb_a or synthetic_faces.")
flags.DEFINE_string("data_dir", None, "The raw dataset folder for lfw or celeba (e.g. "
                    "../shared/data/lfw).")
flags.DEFINE_string("prepared_dir", None, "Where prepared datasets are cached (default "
                    "$CMMA_DATA_DIR, else ~/tensorflow_datasets).")
flags.DEFINE_string("preset", "small", "paper (the paper's networks, 500 epochs), small, tiny, "
                    "or auto (paper on an accelerator, small on a CPU).")
flag_types.DEFINE_indices("seeds", [0], "Training seeds, one set of models each.")
flags.DEFINE_list("models", ["cmma", "cvae", "cgan", "vlae"], "Models (cmma is put first: the "
                  "paired differences are cmma minus each other model).")
flags.DEFINE_integer("num_steps", None, "Training steps of every model (default: the preset's; "
                     "paper: 78,000 = 500 epochs of 10,000 faces at batch 64).")
flags.DEFINE_float("max_epochs", None, "The training budget in epochs of the training split "
                   "(overrides --num_steps): e.g. 100 with --stop_patience, 'until converged, at "
                   "most 100 epochs'.")
flags.DEFINE_integer("stop_patience", None, "The convergence rule: stop a model with a bound "
                     "(CMMA, CVAE) once its validation bound has not improved by more than "
                     "--stop_min_delta nats in this many evaluations (every "
                     "training.eval_every steps); its best checkpoint is evaluated. The CGAN "
                     "and the MMD-VLAE train the whole budget. Unset: train the budget.")
flags.DEFINE_float("stop_min_delta", 0.0, "The convergence rule's margin in nats.")
flags.DEFINE_string("override", "", "More config overrides of every model, field=value, "
                    "comma-separated (e.g. training.batch_size=32,"
                    "model.encoder_features=(8,16,16)).")
flags.DEFINE_integer("classifier_steps", None, "Training steps of the attribute classifier "
                     "(default: its config's, 1,500).")
flags.DEFINE_string("classifier_override", "", "Overrides of the classifier's config, "
                    "field=value, comma-separated.")
flags.DEFINE_string("data_options", "", "Dataset builder options, key=value, comma-separated "
                    "(e.g. num_train=2000,num_test=1000).")
flags.DEFINE_integer("num_test", 0, "Test faces for the bound, IWAE and fidelity (0: all).")
flags.DEFINE_integer("parzen_num_test", 100, "Test faces scored by Parzen (0: all).")
flags.DEFINE_integer("parzen_num_validation", 100, "Validation faces for choosing sigma "
                     "(0: all).")
flags.DEFINE_integer("parzen_samples", 200, "Faces generated per test face for Parzen.")
flag_types.DEFINE_positive_ints("iwae_samples", [1, 10, 100],
                                "The K's of the importance-weighted bound.")
flag_types.DEFINE_positive_floats("parzen_sigmas", None, "The Parzen sigma grid (default: 17 "
                                  "values from 0.02 to 0.8, log-spaced).")
flags.DEFINE_integer("eval_batch_size", 32, "Faces per call in the evaluation.")
flags.DEFINE_list("figures", ["attributes", "edits", "removal", "traversals", "arithmetic"],
                  "Which figures.")
flags.DEFINE_list("stages", list(STAGES), "Run only these stages (in this order): "
                  + ",".join(STAGES) + ".")
flags.DEFINE_bool("progress", True, "Show the evaluation's progress lines.")


def _value(text):
    """A Python literal (int, float, tuple, True, None) if it reads as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split(text):
    """Comma-separated items, keeping the commas inside brackets: "a=(1,2),b=3"."""
    items, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    return [i for i in items + [current] if i.strip()]


def _pairs(text, flag):
    out = {}
    for item in _split(text):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise app.UsageError(f"--{flag} takes key=value items, got {item!r}.")
        out[key.strip()] = _value(value.strip())
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax and tfds log every file at INFO
    from cmma_jax import evaluate, figures, reproduce, train

    extra = {}
    if FLAGS.parzen_sigmas:
        extra["parzen_sigmas"] = tuple(FLAGS.parzen_sigmas)
    overrides = _pairs(FLAGS.override, "override")
    if FLAGS.num_steps:
        overrides["training.num_steps"] = FLAGS.num_steps
    if FLAGS.stop_patience:
        overrides["training.stop_patience"] = FLAGS.stop_patience
        overrides["training.stop_min_delta"] = FLAGS.stop_min_delta
    settings = reproduce.ReproduceSettings(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, prepared_dir=FLAGS.prepared_dir,
        preset=FLAGS.preset, seeds=tuple(FLAGS.seeds),
        models=tuple(FLAGS.models), classifier_steps=FLAGS.classifier_steps,
        classifier_overrides=_pairs(FLAGS.classifier_override, "classifier_override"),
        overrides=overrides, data_options=_pairs(FLAGS.data_options, "data_options"),
        evaluation=evaluate.EvalSettings(
            num_test=FLAGS.num_test or None, batch_size=FLAGS.eval_batch_size,
            iwae_samples=tuple(FLAGS.iwae_samples),
            parzen_num_test=FLAGS.parzen_num_test or None,
            parzen_num_validation=FLAGS.parzen_num_validation or None,
            parzen_samples=FLAGS.parzen_samples, show_progress=FLAGS.progress, **extra),
        figures=figures.FigureSettings(figures=tuple(FLAGS.figures)),
        max_epochs=FLAGS.max_epochs)
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    with train.exit_on_preemption():  # SIGTERM in a training: its last step is checkpointed
        reproduce.reproduce(settings, FLAGS.workdir, stages=tuple(FLAGS.stages),
                            command=command)


if __name__ == "__main__":
    app.run(main)
