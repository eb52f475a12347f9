"""The generic trainer: `train_and_evaluate(config, workdir)`.

It knows nothing about a particular model beyond the model contract of DESIGN.md: a module of
`cmma_jax.models.MODELS` with `init_state`, `train_step`, `sample` (and `reconstruct` where there
is an encoder). What it does:

- restore-or-initialise: the latest Orbax checkpoint in `workdir/checkpoints` (train state and the
  data iterator's position) or a fresh state, so that a run killed at any moment and started again
  with the same command ends with the same parameters as a run that was never stopped;
- one jitted, donated step over a device mesh (batch sharded, state replicated), or `pmap`;
- per-step randomness `fold_in(base_key, step)`, so resumed runs replay the same randomness;
- metrics left on the device and fetched every `log_every` steps into `metrics.jsonl` (and
  TensorBoard when `tensorboardX` is installed), with a progress bar on a terminal;
- a PNG grid of samples from fixed validation attributes (and reconstructions) every
  `sample_every` steps;
- a stop with an error naming the step and the term when a loss term, a gradient or a parameter
  becomes non-finite, with the last good checkpoint left untouched.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from grain import checkpoint as grain_checkpoint
from jax.experimental import multihost_utils

from cmma_jax import figures, parallel
from cmma_jax.configs import base as base_config
from cmma_jax.data import pipeline
from cmma_jax.models import MODELS

PyTree = Any

# At most this many steps are queued on the devices before the loop waits for the oldest one.
# Keeps dispatch asynchronous, and keeps CPU collectives from timing out when many steps are queued.
MAX_STEPS_IN_FLIGHT = 4
NUM_SAMPLE_COLUMNS = 8


class NonFiniteError(FloatingPointError):
    """A loss term, a gradient or a parameter became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Configuration


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with its preset chosen and the preset's training defaults filled in.

    `model.preset = "auto"` means "paper" on an accelerator and "small" on a CPU. Training fields
    left as None (batch size, steps, intervals) take the preset's values; fields that are set win.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    preset = config.model.get("preset", "auto") or "auto"
    if preset == "auto":
        preset = "small" if jax.default_backend() == "cpu" else "paper"
    if preset not in base_config.PRESET_NAMES:
        raise ValueError(f"Unknown preset {preset!r}; choose one of "
                         f"{base_config.PRESET_NAMES} or 'auto'.")
    config.model.preset = preset
    for name, value in base_config.PRESET_TRAINING[preset].items():
        if config.training.get(name) is None:
            config.training[name] = value
    return config


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks what can be checked before any data is read or anything compiled."""
    name = config.model.name
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)} "
                         "(--model=...).")
    if config.data.name not in pipeline.DATASETS:
        raise ValueError(f"Unknown dataset {config.data.name!r}; choose one of "
                         f"{sorted(pipeline.DATASETS)} (--dataset=...).")
    parallelism = config.training.parallelism
    if parallelism not in ("mesh", "pmap"):
        raise ValueError(f"training.parallelism must be 'mesh' or 'pmap', got {parallelism!r}.")
    batch = int(config.training.batch_size)
    if batch <= 0:
        raise ValueError(f"training.batch_size must be positive, got {batch}.")
    parallel.check_batch_size(batch)
    for field in ("num_steps", "log_every", "sample_every", "checkpoint_every"):
        if int(config.training[field]) <= 0:
            raise ValueError(f"training.{field} must be positive, got {config.training[field]}.")


def load_data(config, split: str, *, batch_size: int, shard: bool = True) -> pipeline.Loaded:
    """The batches of one split as the config describes them.

    Training splits repeat forever in a shuffled order seeded by `training.seed`; other splits
    make one pass in file order. With `shard`, each process reads its own part of the split.
    """
    return pipeline.load(
        config.data.name, split, batch_size=batch_size, seed=int(config.training.seed),
        data_dir=config.data.get("data_dir"), source_dir=config.data.get("source_dir"),
        encoding=config.data.attribute_encoding,
        worker_count=int(config.data.get("worker_count", 0) or 0),
        shard_index=None if shard else 0, shard_count=None if shard else 1,
        options=_data_options(config),
    )


def _data_options(config) -> dict[str, Any] | None:
    """The builder options that are set (None values mean "the builder's default")."""
    options = config.data.get("options")
    if not options:
        return None
    # Split sizes are options only of the builders that make their own splits (LFW's test split
    # is the rest of the faces).
    split_sizes = {"synthetic_faces": ("num_train", "num_validation", "num_test"),
                   "lfw": ("num_train", "num_validation")}.get(config.data.name, ())
    options = {k: v for k, v in dict(options).items()
               if v is not None and (k in split_sizes or not k.startswith("num_"))}
    return options or None


def _check_attributes(config, attribute_names) -> None:
    expected = config.data.get("num_attributes")
    if expected is not None and int(expected) != len(attribute_names):
        raise ValueError(
            f"data.num_attributes={expected} but dataset {config.data.name!r} has "
            f"{len(attribute_names)} attributes; set --config.data.num_attributes="
            f"{len(attribute_names)} or leave it unset."
        )


# ---------------------------------------------------------------------------------------------
# Logging


class MetricWriter:
    """Writes scalars to `metrics.jsonl` (one JSON object a line) and, where tensorboardX is
    installed, to TensorBoard event files. Only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter  # optional extra [tensorboard]
        except ImportError:
            logging.info("tensorboardX is not installed: metrics go to metrics.jsonl only "
                         "(pip install -e '.[tensorboard]' for TensorBoard).")
        else:
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A one-line progress bar with an ETA on a terminal; plain log lines elsewhere."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start = total, start
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def update(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        shown = " ".join(f"{k}={scalars[k]:.4g}" for k in ("loss", "elbo", "kl", "d_loss",
                                                            "g_loss") if k in scalars)
        text = (f"step {step}/{self.total} ({100.0 * step / self.total:5.1f}%) {shown} "
                f"{scalars.get('steps_per_sec', 0.0):.2f} steps/s ETA {_hms(eta)}")
        if self.tty:
            width = 30
            filled = int(width * step / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K")
            sys.stderr.flush()
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
    """The Orbax manager of `<workdir>/checkpoints` (keeps `config.training.keep_checkpoints`)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=int(config.training.keep_checkpoints),
                                           create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def _save(manager, step, state, data_iterator: pipeline.BatchIterator) -> None:
    # The data position is saved per process (grain's handler), with the state it belongs to.
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain_checkpoint.CheckpointSave(data_iterator.grain_iterator)))


def _restore(manager, step, abstract_state, data_iterator: pipeline.BatchIterator):
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain_checkpoint.CheckpointRestore(data_iterator.grain_iterator)))
    return restored["state"]


@jax.jit
def _all_finite(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _first_non_finite(scalars: Mapping[str, float]) -> str | None:
    for k, v in scalars.items():
        if not math.isfinite(v):
            return k
    return None


def load_trained(workdir: str, step: int | None = None):
    """A trained model from a workdir: its config, attribute names and train state.

    Args:
      workdir: a workdir written by `train_and_evaluate`.
      step: the checkpoint to load (default: the latest).

    Returns:
      `(config, attribute_names, state)`; `state.params` feeds the model module's functions
      (`MODELS[config.model.name].sample(state.params, ...)` and the like).

    Raises:
      FileNotFoundError: if the workdir has no config.json or no checkpoint.
    """
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: {workdir} is not a training workdir "
                                "(train one with launch/train.py --workdir=...).")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    with open(os.path.join(workdir, "attributes.json")) as f:
        attribute_names = tuple(json.load(f))
    model_lib = MODELS[config.model.name]
    batch = int(config.training.batch_size)
    example = {"image": np.zeros((batch, 64, 64, 3), np.float32),
               "attributes": np.zeros((batch, len(attribute_names)), np.float32)}
    # A concrete template (not eval_shape) so that the restored state carries apply_fn and tx.
    template = model_lib.init_state(jax.random.key(0), config, example)
    return config, attribute_names, restore_state(workdir, config, template, step)


def restore_state(workdir: str, config, template, step: int | None = None):
    """The train state saved in `workdir` at `step` (None: the latest), shaped like `template`.

    Raises:
      FileNotFoundError: if the workdir has no checkpoint.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    manager = checkpoint_manager(workdir, config)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {manager.directory}.")
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
    finally:
        manager.close()
    return restored["state"]


# ---------------------------------------------------------------------------------------------
# The step


def _make_step(model_lib, config, mesh, state):
    """The jitted (or pmapped) train step and the functions that move state and batches."""
    if config.training.parallelism == "pmap":
        step = jax.pmap(
            functools.partial(model_lib.train_step, config=config,
                              axis_name=parallel.PMAP_AXIS),
            axis_name=parallel.PMAP_AXIS, in_axes=(0, 0, None), donate_argnums=0)
        n = jax.local_device_count()
        return (step, lambda s: parallel.pmap_replicate(s),
                lambda b: parallel.pmap_split_batch(b, n), parallel.pmap_unreplicate,
                lambda m: jax.tree_util.tree_map(lambda x: x[0], m))
    repl = parallel.replicated(mesh)
    step = jax.jit(functools.partial(model_lib.train_step, config=config),
                   in_shardings=(repl, parallel.batch_sharding(mesh), repl),
                   out_shardings=(repl, repl), donate_argnums=0)
    return (step, lambda s: parallel.replicate(s, mesh),
            lambda b: parallel.shard_batch(b, mesh), lambda s: s, lambda m: m)


# ---------------------------------------------------------------------------------------------
# Sample grids


class SampleWriter:
    """Writes a labelled PNG of validation faces, their reconstructions (models with an encoder)
    and samples from their attributes at temperatures 0 and 1, always from the same attributes
    and noise so that grids are comparable across steps."""

    def __init__(self, model_lib, config, workdir, images, attributes, key):
        self.model_lib, self.workdir = model_lib, workdir
        self.images, self.attributes = images, attributes
        self.key = key
        self._sample = jax.jit(functools.partial(model_lib.sample, config=config),
                               static_argnames=("temperature",))
        self._reconstruct = (jax.jit(functools.partial(model_lib.reconstruct, config=config))
                             if hasattr(model_lib, "reconstruct") else None)

    def write(self, params, step: int) -> str:
        # A host copy of the (replicated) parameters: sampling then runs on this process's
        # default device alone, with no collective that other processes would have to join.
        params = parallel.host_copy(params)
        rows, labels = [np.asarray(self.images)], ["data"]
        if self._reconstruct is not None:
            rows.append(np.asarray(self._reconstruct(params, self.images, self.attributes)))
            labels.append("reconstruction")
        for t in (0.0, 1.0):
            rows.append(np.asarray(self._sample(params, self.attributes, self.key,
                                                temperature=t)))
            labels.append(f"sample T={t:g}")
        grid = figures.labelled_grid(np.stack(rows), row_labels=labels,
                                     title=f"step {step}: faces from the data's attributes")
        return figures.save_png(os.path.join(self.workdir, "samples", f"step_{step:07d}.png"),
                                grid)


# ---------------------------------------------------------------------------------------------
# The loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> PyTree:
    """Trains `config.model.name` on `config.data.name`, resuming from `workdir` if it can.

    Args:
      config: a model config (`cmma_jax.configs.<model>.get_config()`), possibly with overrides.
      workdir: where checkpoints, `metrics.jsonl`, `config.json`, TensorBoard events and sample
        grids go. A workdir with a checkpoint is resumed.

    Returns:
      The final train state (replicated over the mesh; unreplicated for pmap).

    Raises:
      ValueError: for a config error (unknown model or dataset, batch size that does not divide
        over the devices, attribute count mismatch), before anything is compiled.
      NonFiniteError: when a metric or a parameter becomes non-finite.
    """
    config = resolve_config(config)
    validate_config(config)
    model_lib = MODELS[config.model.name]
    is_chief = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    global_batch = int(config.training.batch_size)
    local_batch = global_batch // jax.process_count()
    num_steps = int(config.training.num_steps)

    if jax.process_count() > 1:
        # Process 0 prepares the dataset (once, into the shared data_dir) while the others wait:
        # tfds does not coordinate several processes preparing the same folder.
        if is_chief:
            pipeline.prepare(config.data.name, data_dir=config.data.get("data_dir"),
                             source_dir=config.data.get("source_dir"),
                             options=_data_options(config))
        multihost_utils.sync_global_devices("cmma_jax: dataset prepared")
    train = load_data(config, "train", batch_size=local_batch)
    _check_attributes(config, train.attribute_names)
    num_attributes = len(train.attribute_names)
    if is_chief:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
        with open(os.path.join(workdir, "attributes.json"), "w") as f:
            json.dump(list(train.attribute_names), f)

    seed = int(config.training.seed)
    init_key, train_key, sample_key = jax.random.split(jax.random.key(seed), 3)
    example = {"image": np.zeros((global_batch, 64, 64, 3), np.float32),
               "attributes": np.zeros((global_batch, num_attributes), np.float32)}
    mesh = parallel.make_mesh()
    state = model_lib.init_state(init_key, config, example)
    step_fn, place_state, place_batch, unplace_state, unplace_metrics = _make_step(
        model_lib, config, mesh, state)

    manager = checkpoint_manager(workdir, config)
    latest = manager.latest_step()
    pmapped = config.training.parallelism == "pmap"
    if not pmapped:
        state = place_state(state)
    if latest is not None:
        # Restored straight into the state's sharding (replicated over the whole mesh): moving
        # a restored copy onto other processes' devices afterwards is not possible on CPU.
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
        state = _restore(manager, latest, abstract, train.iterator)
        logging.info("Resumed from the checkpoint of step %d in %s.", latest, manager.directory)
    start_step = int(parallel.host_copy(state.step))
    if pmapped:
        state = place_state(state)

    writer = MetricWriter(workdir, enabled=is_chief)
    progress = Progress(num_steps, start_step, enabled=is_chief)
    samples = None
    if is_chief:
        with load_data(config, "validation", batch_size=NUM_SAMPLE_COLUMNS, shard=False) as val:
            val_batch = next(val.iterator)
        samples = SampleWriter(model_lib, config, workdir, val_batch["image"],
                               val_batch["attributes"], sample_key)

    pending: list[dict[str, jax.Array]] = []
    in_flight: list[jax.Array] = []
    # steps/s counts the steps alone: time spent writing checkpoints and sample grids is left out
    # (the first interval includes compilation).
    last_log_time, last_log_step, side_seconds = time.perf_counter(), start_step, 0.0
    try:
        for step in range(start_step, num_steps):
            batch = place_batch(next(train.iterator))
            state, metrics = step_fn(state, batch, jax.random.fold_in(train_key, step))
            metrics = unplace_metrics(metrics)
            pending.append(metrics)
            in_flight.append(metrics["loss"])
            if len(in_flight) > MAX_STEPS_IN_FLIGHT:
                in_flight.pop(0).block_until_ready()
            done = step + 1
            is_last = done == num_steps
            log_now = done % int(config.training.log_every) == 0 or is_last
            save_now = done % int(config.training.checkpoint_every) == 0 or is_last
            if log_now or save_now:
                # One fetch for every step since the last log: the mean of each term.
                fetched = parallel.host_copy(pending)
                pending, in_flight = [], []
                for i, m in enumerate(fetched):
                    bad = _first_non_finite({k: float(v) for k, v in m.items()})
                    if bad is not None:
                        raise NonFiniteError(
                            f"Non-finite {bad} at step {done - len(fetched) + i + 1} "
                            f"({bad}={float(m[bad])}); stopped. The last good checkpoint "
                            f"(step {manager.latest_step()}) in {manager.directory} is "
                            "untouched: lower the learning rate or set "
                            "--config.optimizer.grad_clip_norm, then rerun to resume.")
                scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                now = time.perf_counter()
                rate = (done - last_log_step) / max(now - last_log_time - side_seconds, 1e-9)
                scalars.update(steps_per_sec=rate, images_per_sec=rate * global_batch)
                last_log_time, last_log_step, side_seconds = now, done, 0.0
                if log_now:
                    writer.write(done, scalars)
                    progress.update(done, scalars)
            side_start = time.perf_counter()
            if save_now:
                if not bool(_all_finite(unplace_state(state).params)):
                    raise NonFiniteError(
                        f"Non-finite parameters after step {done}; stopped. The last good "
                        f"checkpoint (step {manager.latest_step()}) is untouched.")
                _save(manager, done, unplace_state(state), train.iterator)
            if samples is not None and (done % int(config.training.sample_every) == 0
                                        or is_last):
                samples.write(unplace_state(state).params, done)
            side_seconds += time.perf_counter() - side_start
    finally:
        manager.wait_until_finished()
        manager.close()
        train.close()
        progress.close()
        writer.close()
    return unplace_state(state)
