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

import shlex
import sys

from absl import app, flags, logging

from cmma_jax import flag_types
from cmma_jax.evaluate.settings import EvalSettings
from cmma_jax.figures import FigureSettings
from cmma_jax.reproduce.settings import STAGES, ReproduceSettings

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The run's folder (an existing one is resumed).",
                    required=True)
# The fields of the settings, with their defaults and docstring lines: ReproduceSettings' own
# (its mappings as key=value lists), and those of the evaluation and the figures chosen here.
RENAME = {"overrides": "override", "classifier_overrides": "classifier_override",
          "batch_size": "eval_batch_size", "show_progress": "progress"}
FIELDS = flag_types.define_settings_flags(
    ReproduceSettings, skip=("evaluation", "figures"), rename=RENAME)
EVAL_FIELDS = flag_types.define_settings_flags(
    EvalSettings, only=("num_test", "parzen_num_test", "parzen_num_validation", "parzen_samples",
                        "iwae_samples", "parzen_sigmas", "batch_size", "show_progress"),
    rename=RENAME)
FIGURE_FIELDS = flag_types.define_settings_flags(FigureSettings, only=("figures",))
flags.DEFINE_integer("num_steps", None, "Training steps of every model (default: the preset's; "
                     "paper: 78,000 = 500 epochs of 10,000 faces at batch 64).")
flags.DEFINE_integer("stop_patience", None, "The convergence rule: stop a model with a bound "
                     "(CMMA, CVAE) once its validation bound has not improved by more than "
                     "--stop_min_delta nats in this many evaluations (every "
                     "training.eval_every steps); its best checkpoint is evaluated. The CGAN "
                     "and the MMD-VLAE train the whole budget. Unset: train the budget.")
flags.DEFINE_float("stop_min_delta", 0.0, "The convergence rule's margin in nats.")
flags.DEFINE_list("stages", list(STAGES), "Run only these stages (in this order): "
                  + ",".join(STAGES) + ".")


def main(argv):
    flag_types.check_no_arguments(argv)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax and tfds log every file at INFO
    from cmma_jax import reproduce, train

    overrides = dict(FLAGS.override)
    if FLAGS.num_steps:
        overrides["training.num_steps"] = FLAGS.num_steps
    if FLAGS.stop_patience:
        overrides["training.stop_patience"] = FLAGS.stop_patience
        overrides["training.stop_min_delta"] = FLAGS.stop_min_delta
    settings = flag_types.settings_or_usage_error(
        ReproduceSettings, FIELDS, rename=RENAME, overrides=overrides,
        evaluation=flag_types.settings_or_usage_error(EvalSettings, EVAL_FIELDS, rename=RENAME),
        figures=flag_types.settings_or_usage_error(FigureSettings, FIGURE_FIELDS))
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    with train.exit_on_preemption():  # SIGTERM in a training: its last step is checkpointed
        reproduce.reproduce(settings, FLAGS.workdir, stages=tuple(FLAGS.stages),
                            command=command)


if __name__ == "__main__":
    app.run(main)
