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

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from cmma_jax import classifier, configs, train
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
flags.DEFINE_string("workdir", None, "Checkpoints and metrics go here (default: "
                    "workdirs/classifier_<dataset>).")
flags.DEFINE_string("dataset", None, "synthetic_faces (default), celeba, celeb_a or lfw. Sets "
                    "config.data.name.")
flags.DEFINE_string("data_dir", None, "The raw dataset folder for celeba or lfw. Sets "
                    "config.data.data_dir.")
flags.DEFINE_string("prepared_dir", None,
                    "Where prepared datasets live. Sets config.data.prepared_dir.")
flags.DEFINE_integer("num_steps", None, "Training steps. Sets config.training.num_steps.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if FLAGS.dataset:
        config.data.name = FLAGS.dataset
    configs.base.set_folders(config.data, data_dir=FLAGS.data_dir or None,
                             prepared_dir=FLAGS.prepared_dir or None)
    if FLAGS.num_steps:
        config.training.num_steps = FLAGS.num_steps
    workdir = FLAGS.workdir or os.path.join("workdirs", f"classifier_{config.data.name}")
    print(f"Training the attribute classifier on {config.data.name}; outputs in {workdir}",
          flush=True)
    with train.exit_on_preemption():  # SIGTERM: the last step is checkpointed, exit 143
        scores = classifier.train_classifier(config, workdir)
    print(f"Done at step {scores['step']}: validation accuracy {scores['mean_accuracy']:.3f}, "
          f"AUC {scores['mean_auc']:.3f} (mean over attributes); checkpoint in {workdir}",
          flush=True)


if __name__ == "__main__":
    app.run(main)
