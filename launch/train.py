r"""Trains a model: flags -> one call to `cmma_jax.train.train_and_evaluate(config, workdir)`.

    python launch/train.py --model cmma
    python launch/train.py --model cvae --preset tiny --workdir /tmp/cvae
    python launch/train.py --model cmma --dataset celeba --data_dir ../shared/data/celeba
    python launch/train.py --model cgan --config.training.batch_size=32 --config.optimizer.learning_rate=1e-4

`--model` picks the config file `cmma_jax/configs/<model>.py` (or pass `--config=path[:preset]`);
any field can be overridden with `--config.<section>.<field>=value`. Running the same command again
resumes from the latest checkpoint in the workdir.

Several processes (one per host): every process runs the same command with
`--coordinator_address=host0:1234 --num_processes=N --process_id=i`, or sets
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID; SLURM and Cloud TPU are detected.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cmma_jax import configs, flag_types
from cmma_jax.configs import CONFIGS

MODEL_NAMES = tuple(CONFIGS)  # the registry's names (cmma_jax/configs/__init__.py)


def _model_in_argv(argv, default="cmma"):
    """The --model value, read before flags are parsed: it picks the default config file."""
    for i, arg in enumerate(argv):
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
    return default


_MODEL = _model_in_argv(sys.argv)


def _check_overrides() -> None:
    """A misspelt --config.<field>, or a --config file that does not exist, fails here in one
    line (the flag parser's error is a long traceback). Overrides are checked for the model's own
    config file; those of a --config=path by the parser."""
    for arg in sys.argv[1:]:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1].split(":", 1)[0]
            if not os.path.isfile(path):
                sys.exit(f"--config={path}: no such config file (give the path of a config "
                         "file, e.g. cmma_jax/configs/cmma.py, or leave --config out and pass "
                         "--model).")
    if any(a.startswith("--config=") for a in sys.argv) or _MODEL not in MODEL_NAMES:
        return
    from cmma_jax.configs import unknown_overrides

    problems = unknown_overrides(CONFIGS[_MODEL].get_config(), sys.argv[1:])
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    _check_overrides()  # before the config flag is defined: defining it applies the overrides
FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "cmma", MODEL_NAMES, "Which model to train.")
config_flags.DEFINE_config_file(
    "config", CONFIGS[_MODEL if _MODEL in MODEL_NAMES else "cmma"].__file__,
    "The model's config file (default: cmma_jax/configs/<model>.py); path[:preset].",
    lock_config=True)
flag_types.DEFINE_training_flags("Checkpoints, metrics and samples go here (default: "
                                 "workdirs/<model>_<dataset>). An existing workdir is resumed.")
flags.DEFINE_string("preset", None, "paper, small, tiny or auto (paper on an accelerator, small "
                    "on a CPU). Sets config.model.preset.")
flags.DEFINE_enum("parallelism", None, ["mesh", "pmap"], "Data parallelism over all devices: "
                  "jit over a device mesh (default) or pmap. Sets config.training.parallelism.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for several hosts.")
flags.DEFINE_integer("num_processes", None, "Number of processes, for several hosts.")
flags.DEFINE_integer("process_id", None, "This process's index, for several hosts.")
flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for every process to join "
                     "before failing (several hosts).")
flags.DEFINE_integer("heartbeat_timeout_seconds", 100, "A process silent for this long is "
                     "declared dead and the others stop with an error instead of hanging.")


def main(argv):
    flag_types.check_no_arguments(argv)
    if not FLAGS["verbosity"].present:
        # Orbax and tfds log every checkpoint and file at INFO; progress lines are printed.
        logging.set_verbosity(logging.WARNING)
    # Before anything touches a device.
    from cmma_jax import parallel, train

    parallel.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
        initialization_timeout=FLAGS.initialization_timeout,
        heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds)
    config = FLAGS.config
    with config.unlocked():
        if FLAGS.model != config.model.name:
            raise app.UsageError(f"--model={FLAGS.model} but the config file is for "
                                 f"{config.model.name!r}; drop one of them.")
        configs.base.set_data(config.data, **flag_types.data_flags())
        if FLAGS.preset:
            config.model.preset = FLAGS.preset
        if FLAGS.parallelism:
            config.training.parallelism = FLAGS.parallelism
    workdir = flag_types.training_workdir(FLAGS.model, config.data.name)
    logging.info("Training %s on %s in %s", FLAGS.model, config.data.name, workdir)
    print(f"Training {FLAGS.model} on {config.data.name}; outputs in {workdir}", flush=True)
    with train.exit_on_preemption():  # SIGTERM: the last step is checkpointed, exit 143
        train.train_and_evaluate(config, workdir)
    print(f"Done: checkpoints, metrics.jsonl and samples/ are in {workdir}", flush=True)


if __name__ == "__main__":
    app.run(main)
