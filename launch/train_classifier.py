r"""Trains the attribute classifier used for attribute fidelity: flags -> one call to
`cmma_jax.classifier.train_classifier(config, workdir)`.

    python launch/train_classifier.py --dataset=celeba --data_dir=../shared/data/celeba \
        --workdir=workdirs/classifier_celeba
    python launch/train_classifier.py --num_steps=300 --config.training.batch_size=32

It trains on the training split's real faces (binary labels: attribute value > 0), reports the
validation accuracy and AUC, and saves an Orbax checkpoint in --workdir (running the same command
again resumes). `launch/evaluate.py --classifier_workdir=...` then uses it. Any config field can be
set with --config.<section>.<field>=value (see `cmma_jax.classifier.get_config`).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from cmma_jax import classifier, configs, flag_types, train
from cmma_jax.configs import unknown_overrides

FLAGS = flags.FLAGS
if __name__ == "__main__":
    # A misspelt --config.<field> fails here in one line, not in a traceback from the flag
    # parser, which applies the overrides when the flag is defined.
    _problems = unknown_overrides(classifier.get_config(), sys.argv[1:])
    if _problems:
        sys.exit("\n".join(_problems))

config_flags.DEFINE_config_dict("config", classifier.get_config(),
                                "The classifier's config (cmma_jax.classifier.get_config).")
flag_types.DEFINE_training_flags("Checkpoints and metrics go here (default: "
                                 "workdirs/classifier_<dataset>). An existing workdir is resumed.")
flags.DEFINE_integer("num_steps", None, "Training steps. Sets config.training.num_steps.")


def main(argv):
    flag_types.check_no_arguments(argv)
    config = FLAGS.config
    configs.base.set_data(config.data, **flag_types.data_flags())
    if FLAGS.num_steps:
        config.training.num_steps = FLAGS.num_steps
    workdir = flag_types.training_workdir("classifier", config.data.name)
    print(f"Training the attribute classifier on {config.data.name}; outputs in {workdir}",
          flush=True)
    with train.exit_on_preemption():  # SIGTERM: the last step is checkpointed, exit 143
        scores = classifier.train_classifier(config, workdir)
    print(f"Done at step {scores['step']}: validation accuracy {scores['mean_accuracy']:.3f}, "
          f"AUC {scores['mean_auc']:.3f} (mean over attributes); checkpoint in {workdir}",
          flush=True)


if __name__ == "__main__":
    app.run(main)
