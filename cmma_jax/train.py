"""The generic trainer: `train_and_evaluate(config, workdir)`, and the loop it shares with the
attribute classifier.

It knows nothing about a particular model beyond the model contract (docs/design.md): a module of
`cmma_jax.models.MODELS` with `init_state`, `train_step`, `sample`, `capabilities` and
`PROGRESS_METRICS`. What it does:

- restore-or-initialise: the latest checkpoint in `workdir/checkpoints` (train state and the data
  iterator's position) or a fresh state, so that a run killed at any moment and started again
  with the same command ends with the same parameters as a run that was never stopped;
- one jitted, donated step over a device mesh (batch sharded, state replicated), or `pmap`
  (`make_step`, in `cmma_jax.steps`, which the benchmarks time as well);
- per-step randomness `fold_in(base_key, step)`, so resumed runs replay the same randomness;
- metrics left on the device and fetched every `log_every` steps into `metrics.jsonl` (and
  TensorBoard when `tensorboardX` is installed), with a progress display;
- hooks every so many steps: the generative models' PNG grid of samples from fixed validation
  attributes (and reconstructions), their validation bound (`val_elbo`, the learning curve of
  models with a bound), the classifier's validation scores;
- a stop with an error naming the step and the term when a loss term, a gradient or a parameter
  becomes non-finite, with the last good checkpoint left untouched;
- a preemption notice (SIGTERM, as schedulers and preemptible accelerators send it) ends the
  step under way, saves a checkpoint of it and raises `Preempted`: the rerun resumes from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from cmma_jax import checkpoints, data, files, parallel, presets, workdirs
from cmma_jax import convergence as convergence_lib
from cmma_jax.configs import checks
from cmma_jax.convergence import Convergence
# The loop's log and hooks live in cmma_jax.hooks; their names are the trainer's too.
from cmma_jax.hooks import (Hook, MetricWriter, SampleWriter, ValidationBound,  # noqa: F401
                            validation_faces)
from cmma_jax.data import resident
from cmma_jax.models import MODELS
from cmma_jax.progress import Progress
# The compiled step lives in cmma_jax.steps; its names are the trainer's too.
from cmma_jax.steps import StepFunctions, make_step, steps_in_call  # noqa: F401
# The README's entry point for loading a trained model; it lives with the other workdir readers.
from cmma_jax.workdirs import load_trained  # noqa: F401

PyTree = Any

# At most this many steps are queued on the devices before the loop waits for the oldest one.
# Keeps dispatch asynchronous, and keeps CPU collectives from timing out when many steps are queued.
MAX_STEPS_IN_FLIGHT = 4
NUM_SAMPLE_COLUMNS = 8


class NonFiniteError(FloatingPointError):
    """A loss term, a gradient or a parameter became NaN or infinite."""


class Preempted(Exception):
    """Training stopped on a preemption notice (SIGTERM) after checkpointing its last step.

    Attributes:
      step: the step of the checkpoint written on the notice.
    """

    # What the doors in launch/ exit with: a shell's code for a process ended by SIGTERM, so that
    # schedulers and scripts do not take the stopped run for a finished one.
    EXIT_CODE = 128 + signal.SIGTERM

    def __init__(self, step: int, directory: str):
        super().__init__(f"Stopped by a preemption notice (SIGTERM) after step {step}; its "
                         f"checkpoint is in {directory}. Rerun the same command to resume.")
        self.step = step


@contextlib.contextmanager
def exit_on_preemption():
    """For the doors in launch/: a `Preempted` inside becomes its message on stderr and the exit
    code `Preempted.EXIT_CODE` (the last step is already checkpointed)."""
    try:
        yield
    except Preempted as e:
        print(e, file=sys.stderr, flush=True)
        sys.exit(Preempted.EXIT_CODE)


class _PreemptionNotice:
    """Tells the loop, at every step, whether to checkpoint and stop for a preemption notice.

    Several processes: JAX's preemption service (on by default with `jax.distributed`) receives
    the SIGTERM and agrees with every process on a step that all of them reach, so that all save
    the same one; Orbax's `CheckpointManager.reached_preemption` asks it, and must be asked at
    every step. One process: a SIGTERM handler, installed from the main thread until `close`,
    notes the notice; a second SIGTERM before the checkpoint is written meets the previous
    handler again (by default the process ends at once). Elsewhere than in the main thread
    SIGTERM keeps its handler.
    """

    def __init__(self, manager):
        self._manager = manager
        self._received = False
        self._previous = None
        self._multi = jax.process_count() > 1
        if not self._multi and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self._received = True
        signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        """Whether to checkpoint `step` and stop."""
        if self._multi:
            return self._manager.reached_preemption(step)
        return self._received

    def close(self) -> None:
        """Gives SIGTERM its previous handler back."""
        if self._previous is not None and not self._received:
            signal.signal(signal.SIGTERM, self._previous)
        self._previous = None


# ---------------------------------------------------------------------------------------------
# Configuration


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks what can be checked before any data is read or anything compiled: the model and
    the dataset exist, every field is in its range (`cmma_jax.configs.checks`), the batch divides
    over the devices, the convergence rule has something to watch."""
    name = config.model.name
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)} "
                         "(--model=...).")
    if config.data.name not in data.DATASETS:
        raise ValueError(f"Unknown dataset {config.data.name!r}; choose one of "
                         f"{sorted(data.DATASETS)} (--dataset=...).")
    checks.check_config(config)
    parallel.check_batch_size(int(config.training.batch_size))
    resident.parse_setting(config.data.get("device_resident"))
    check_convergence_rule(config)


def check_convergence_rule(config: ml_collections.ConfigDict) -> None:
    """The convergence rule (`training.stop_patience`, `cmma_jax.convergence`) needs a validation
    metric to watch: the validation bound, which only models with a bound report, on
    `num_eval` > 0 faces."""
    rule = Convergence.from_config(config.training)  # checks patience, margin and interval
    if rule is None:
        return
    if not rule.metric.startswith("val_"):
        raise ValueError(f"training.stop_metric must be a validation metric (val_...), got "
                         f"{rule.metric!r}.")
    name = config.model.name
    if "bound" not in MODELS[name].capabilities(config):
        raise ValueError(
            f"The {name!r} model has no validation bound for the convergence rule "
            "(training.stop_patience) to watch; train it for a fixed budget "
            "(--config.training.num_steps) and leave stop_patience unset.")
    if not int(config.training.get("num_eval") or 0) > 0:
        raise ValueError("The convergence rule (training.stop_patience) needs the validation "
                         "bound: set training.num_eval > 0.")


def load_data(config, split: str, *, batch_size: int, shard: bool = True) -> data.Loaded:
    """The batches of one split as the config's data section describes them.

    Training splits repeat forever in a shuffled order seeded by `training.seed`; other splits
    make one pass in file order. With `shard`, each process reads its own part of the split.

    The training split goes on the devices instead (`cmma_jax.data.resident`, batches gathered
    there by index) when `data.device_resident` says so: "auto" (unset) when it fits in a
    quarter of the device's memory (never on CPU), "true", or "false" (the grain path).
    """
    if split == "train":
        parallelism = config.training.get("parallelism", "mesh")
        on_device = resident.load_split_resident(
            config.data, split, batch_size=batch_size,
            seed=int(config.training.get("seed") or 0), parallelism=parallelism,
            sharding=(parallel.batch_sharding(parallel.make_mesh())
                      if parallelism == "mesh" else None))
        if on_device is not None:
            return on_device
    return data.load_split(config.data, split, batch_size=batch_size,
                           seed=int(config.training.get("seed") or 0),
                           shard_index=None if shard else 0, shard_count=None if shard else 1)


# ---------------------------------------------------------------------------------------------
# Logging


@jax.jit
def _all_finite(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _first_non_finite(scalars: Mapping[str, float]) -> str | None:
    for k, v in scalars.items():
        if not math.isfinite(v):
            return k
    return None


# ---------------------------------------------------------------------------------------------
# The loop


def _restore_or_keep(workdir: str, keep: int, state: PyTree, grain_iterator):
    """The checkpoint manager and the state: the newest checkpoint that verifies, restored
    straight into `state`'s sharding (replicated over the whole mesh: moving a restored copy onto
    other processes' devices afterwards is not possible on CPU) with the loader's position; or
    `state` itself when there is none.

    Damaged checkpoints (bytes that no longer match their hash, or that Orbax cannot read) are
    moved aside with a warning by process 0 (`checkpoints.quarantine`), so that they are never
    loaded and never counted among the `keep` checkpoints to keep.
    """
    is_chief, multi = jax.process_index() == 0, jax.process_count() > 1
    if is_chief:
        checkpoints.drop_damaged(workdir)
    if multi:
        multihost_utils.sync_global_devices("cmma_jax: checkpoints verified")
    while True:
        manager = checkpoints.manager(workdir, keep)
        latest = manager.latest_step()
        if latest is None:
            if os.path.isdir(os.path.join(workdir, checkpoints.DAMAGED_DIR)):
                logging.warning("No usable checkpoint is left in %s: training starts afresh.",
                                manager.directory)
            return manager, state
        try:
            restored = checkpoints.restore(manager, latest, checkpoints.abstract(state),
                                           grain_iterator)
        except (OSError, ValueError, KeyError) as e:
            manager.close()
            if multi or not is_chief:
                raise checkpoints.DamagedCheckpointError(
                    f"The checkpoint {checkpoints.step_directory(workdir, latest)} cannot be "
                    f"read ({type(e).__name__}: {e}); move it out of {manager.directory} and "
                    "rerun to resume from the one before.") from e
            checkpoints.quarantine(workdir, latest, f"{type(e).__name__}: {e}")
            continue
        logging.info("Resumed from the checkpoint of step %d in %s.", latest, manager.directory)
        return manager, restored


def _forget_metrics_after(workdir: str, step: int) -> None:
    """Drops the rows of `metrics.jsonl` past `step` (written after the checkpoint a run resumes
    from): the replayed steps write them again, and a reader sees each step once."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            row_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill mid-write
        if row_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        files.write_text(path, "".join(kept))


def _last_good(manager) -> str:
    """What a stopped run leaves to resume from, in words."""
    step = manager.latest_step()
    if step is None:
        return ("No checkpoint was written before it (the run starts afresh when rerun, "
                "with any settings)")
    return f"The last good checkpoint (step {step}) in {manager.directory} is untouched"


def _agree(*flags: bool) -> tuple[bool, ...]:
    """Process 0's `flags` on every process (decisions that only process 0 can take, from the
    metrics that only it computes); the flags themselves with one process."""
    if jax.process_count() == 1:
        return tuple(bool(f) for f in flags)
    agreed = multihost_utils.broadcast_one_to_all(np.asarray(flags, np.int32))
    return tuple(bool(f) for f in np.asarray(agreed))


def _save_best(workdir: str, step: int, state: PyTree) -> None:
    """Saves `state` as the best checkpoint (`convergence.best_workdir`, one kept), hashed."""
    best = convergence_lib.best_workdir(workdir)
    manager = checkpoints.manager(best, 1)
    try:
        checkpoints.save(manager, step, state)
        manager.wait_until_finished()
    finally:
        manager.close()
    if jax.process_index() == 0:
        checkpoints.record_hashes(best, [step])


def fit(workdir: str, config, *, init_state: Callable[[], PyTree], train_step: Callable[..., Any],
        train_data: data.Loaded, train_key: jax.Array, hooks: Sequence[Hook] = (),
        progress_label: str = "train", progress_metrics: Sequence[str] = ("loss",),
        progress_stream=None, mesh=None, convergence: Convergence | None = None) -> PyTree:
    """Restores or initialises a state and trains it to `config.training.num_steps`.

    The loop of every training run in the project (the generative models and the attribute
    classifier).

    Args:
      workdir: where `checkpoints/` and `metrics.jsonl` go.
      config: the full config; its `training` section gives `num_steps`, `log_every`,
        `checkpoint_every`, `keep_checkpoints`, `batch_size` (global) and `parallelism`.
      init_state: `() -> state`, a fresh (host) state.
      train_step: the step (`make_step` compiles it).
      train_data: the training batches (`load_data`), with their grain iterator position saved
        in every checkpoint.
      train_key: the base key; step i uses `fold_in(train_key, i)`.
      hooks: `Hook`s run every so many steps.
      progress_label, progress_metrics, progress_stream: the progress display (process 0).
      mesh: the device mesh (default: every device).
      convergence: the convergence rule (`cmma_jax.convergence`), or None to train `num_steps`.
        A hook must report its metric every `convergence.every` steps on process 0. Its state is
        replayed from `metrics.jsonl`; a run it has already stopped trains nothing.

    Returns:
      The final state (one copy).

    Raises:
      NonFiniteError: when a metric or a parameter becomes non-finite.
      Preempted: on a preemption notice (SIGTERM), once the step under way is checkpointed.
    """
    training = config.training
    num_steps = int(training.num_steps)
    log_every, checkpoint_every = int(training.log_every), int(training.checkpoint_every)
    global_batch = int(training.batch_size)
    is_chief = jax.process_index() == 0
    fns = make_step(train_step, config, mesh)
    pmapped = training.get("parallelism", "mesh") == "pmap"

    state = init_state()
    if not pmapped:
        state = fns.place_state(state)
    # What the checkpoints save of the data: the grain iterator, or the device-resident
    # iterator itself (its own JSON item; cmma_jax.data.resident).
    data_position = getattr(train_data.iterator, "grain_iterator", train_data.iterator)
    manager, state = _restore_or_keep(workdir, int(training.keep_checkpoints), state,
                                      data_position)
    start_step = int(parallel.host_copy(state.step))
    if pmapped:
        state = fns.place_state(state)
    if is_chief:
        _forget_metrics_after(workdir, start_step)
    epoch_of = lambda step: step * global_batch / max(int(train_data.num_examples), 1)  # noqa: E731
    if convergence is not None:
        if is_chief:
            convergence_lib.forget_best_after(workdir, start_step)
            convergence.replay(convergence_lib.read_metrics(workdir))
        (already,) = _agree(convergence.converged)
        if already:
            logging.info("%s already stopped by the convergence rule (best step %s); nothing to "
                         "train.", workdir, convergence.best_step)
            manager.close()
            train_data.close()
            return fns.unplace_state(state)

    writer = MetricWriter(workdir, enabled=is_chief)
    progress = Progress(progress_label, num_steps, initial=start_step, unit="step", interval=0.0,
                        enabled=is_chief, stream=progress_stream)
    pending: list[dict[str, jax.Array]] = []
    in_flight: list[jax.Array] = []
    # steps/s counts the steps alone: time spent writing checkpoints and running hooks is left
    # out (the first interval includes compilation).
    last_log_time, last_log_step, side_seconds = time.perf_counter(), start_step, 0.0
    notice = _PreemptionNotice(manager)
    # Steps run `steps_per_call` at a time (cmma_jax.steps), one at a time where a cadence
    # needs the state after a step inside a call.
    per_call = int(training.get("steps_per_call", 1) or 1)
    cadences = [log_every, checkpoint_every, *(h.every for h in hooks),
                *([convergence.every] if convergence is not None else [])]
    try:
        done = start_step
        while done < num_steps:
            n = steps_in_call(done, num_steps, per_call, cadences)
            batches = [fns.place_batch(next(train_data.iterator)) for _ in range(n)]
            state, step_metrics = fns.run(
                state, batches, [jax.random.fold_in(train_key, done + i) for i in range(n)])
            for metrics in map(fns.unplace_metrics, step_metrics):
                pending.append(metrics)
                in_flight.append(metrics["loss"])
            while len(in_flight) > MAX_STEPS_IN_FLIGHT:
                in_flight.pop(0).block_until_ready()
            done += n
            is_last = done == num_steps
            preempted = notice.reached(done)
            log_now = done % log_every == 0 or is_last or preempted
            save_now = done % checkpoint_every == 0 or is_last or preempted
            scalars: dict[str, float] = {}
            if log_now or save_now:
                # One fetch for every step since the last log: the mean of each term.
                fetched = parallel.host_copy(pending)
                pending, in_flight = [], []
                for i, m in enumerate(fetched):
                    bad = _first_non_finite({k: float(v) for k, v in m.items()})
                    if bad is not None:
                        raise NonFiniteError(
                            f"Non-finite {bad} at step {done - len(fetched) + i + 1} "
                            f"({bad}={float(m[bad])}); stopped. {_last_good(manager)}: lower "
                            "the learning rate or set --config.optimizer.grad_clip_norm, then "
                            "rerun.")
                if log_now:
                    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                    now = time.perf_counter()
                    rate = (done - last_log_step) / max(now - last_log_time - side_seconds, 1e-9)
                    scalars.update(steps_per_sec=rate, images_per_sec=rate * global_batch)
                    last_log_time, last_log_step, side_seconds = now, done, 0.0
            side_start = time.perf_counter()
            due = [h for h in hooks if done % h.every == 0 or is_last]
            if is_chief:
                for hook in due:
                    scalars.update(hook(fns.unplace_state(state), done) or {})
            stopped = None
            if convergence is not None and (done % convergence.every == 0 or is_last):
                improved = stop = False
                if is_chief:
                    if convergence.metric not in scalars:
                        raise ValueError(
                            f"The convergence rule watches {convergence.metric!r}, which no "
                            f"hook reported at step {done}; set training.stop_metric to a "
                            "validation metric of this model, or unset training.stop_patience.")
                    improved = convergence.observe(done, scalars[convergence.metric])
                    stop = convergence.converged
                improved, stop = _agree(improved, stop)
                if improved:
                    _save_best(workdir, done, fns.unplace_state(state))
                if stop or is_last:
                    save_now = True
                    stopped = convergence.record(
                        convergence_lib.CONVERGED if stop else convergence_lib.BUDGET, done,
                        epoch_of(done))
                    if is_chief:
                        scalars.update(epoch=epoch_of(done), converged=float(stop),
                                       best_step=float(convergence.best_step),
                                       **{f"best_{convergence.metric}": convergence.best})
            if scalars:
                writer.write(done, scalars)
                progress.update(done, **{k: scalars[k] for k in progress_metrics
                                         if k in scalars},
                                **({"steps/s": scalars["steps_per_sec"]}
                                   if "steps_per_sec" in scalars else {}))
            if save_now:
                if not bool(_all_finite(fns.unplace_state(state).params)):
                    raise NonFiniteError(
                        f"Non-finite parameters after step {done}; stopped. "
                        f"{_last_good(manager)}.")
                checkpoints.save(manager, done, fns.unplace_state(state), data_position)
                # Finished, then hashed: a checkpoint damaged later is found on restore.
                manager.wait_until_finished()
                if is_chief:
                    checkpoints.record_hashes(workdir, [done])
            side_seconds += time.perf_counter() - side_start
            if stopped is not None:
                if is_chief:
                    convergence_lib.write_stopped(workdir, stopped)
                if stopped["rule"] == convergence_lib.CONVERGED:
                    logging.info("Converged at step %d (epoch %.2f): %s has not improved by more "
                                 "than %g in %d evaluations; the best, %.2f, is step %d.",
                                 done, stopped["epoch"], convergence.metric,
                                 convergence.min_delta, convergence.patience, convergence.best,
                                 convergence.best_step)
                    break
            if preempted and not is_last:
                logging.warning("Preemption notice (SIGTERM): checkpointed step %d, stopping.",
                                done)
                raise Preempted(done, str(manager.directory))
    finally:
        notice.close()
        manager.wait_until_finished()
        manager.close()
        train_data.close()
        progress.close()
        writer.close()
    return fns.unplace_state(state)


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
      workdirs.WorkdirMismatchError: the workdir holds a run with other settings (nothing is
        written).
      workdirs.WorkdirLockedError: another run holds the workdir.
      NonFiniteError: when a metric or a parameter becomes non-finite.
      Preempted: on a preemption notice (SIGTERM), once the step under way is checkpointed.
    """
    config = presets.resolve_config(config)
    validate_config(config)
    model_lib = MODELS[config.model.name]
    with workdirs.lock(workdir, enabled=jax.process_index() == 0):
        return _train(config, workdir, model_lib)


def check_not_past_the_end(workdir: str, num_steps: int) -> None:
    """Refuses a run whose `num_steps` is below the workdir's latest checkpoint (it would
    rewrite the records and train nothing)."""
    latest = checkpoints.latest_step(workdir)
    if latest is not None and latest > num_steps:
        raise ValueError(
            f"{workdir} is already past num_steps={num_steps}: its latest checkpoint is of step "
            f"{latest}. Nothing was changed. To train longer, set --config.training.num_steps "
            f"above {latest}; to load the trained model, use cmma_jax.workdirs.load_model.")


def open_run(config, workdir: str, *, batch_size: int, shard: bool = True) -> data.Loaded:
    """How every training run starts in its locked workdir (the generative models' here, the
    attribute classifier's in `cmma_jax.classifier`): the training data, once the workdir is
    known to hold this run or nothing, not past `training.num_steps`.

    Checks the workdir against the config (before anything is written), reads the training split
    (`load_data` with `batch_size` and `shard`; with several processes, process 0 prepares it
    first), checks its attribute names against `data.num_attributes` and the workdir, and writes
    the workdir's records (process 0). The data is closed if a check fails.
    """
    is_chief = jax.process_index() == 0
    # Before anything is written: the workdir must hold this run (or nothing).
    workdirs.check_resumable(workdir, config)
    check_not_past_the_end(workdir, int(config.training.num_steps))
    if jax.process_count() > 1:
        # Process 0 prepares the dataset (once, into the shared prepared_dir) while the others
        # wait: tfds does not coordinate several processes preparing the same folder.
        if is_chief:
            data.prepare_from_config(config.data)
        multihost_utils.sync_global_devices("cmma_jax: dataset prepared")
    train_data = load_data(config, "train", batch_size=batch_size, shard=shard)
    try:
        data.check_num_attributes(config.data, train_data.attribute_names)
        workdirs.check_resumable(workdir, config, train_data.attribute_names)
    except Exception:
        train_data.close()
        raise
    if is_chief:
        workdirs.write_records(workdir, config, train_data.attribute_names)
    return train_data


def _train(config, workdir: str, model_lib) -> PyTree:
    is_chief = jax.process_index() == 0
    global_batch = int(config.training.batch_size)
    train_data = open_run(config, workdir, batch_size=global_batch // jax.process_count())
    num_attributes = len(train_data.attribute_names)

    seed = int(config.training.seed)
    init_key, train_key, sample_key = jax.random.split(jax.random.key(seed), 3)
    example = workdirs.example_batch(global_batch, num_attributes)
    hooks = []
    if is_chief:
        with load_data(config, "validation", batch_size=NUM_SAMPLE_COLUMNS, shard=False) as val:
            val_batch = next(val.iterator)
        hooks.append(SampleWriter(model_lib, config, workdir, val_batch["image"],
                                  val_batch["attributes"], sample_key,
                                  every=int(config.training.sample_every)))
        num_eval = int(config.training.get("num_eval") or 0)
        if "bound" in model_lib.capabilities(config) and num_eval > 0:
            val_images, val_attributes = validation_faces(config, num_eval)
            hooks.append(ValidationBound(
                model_lib, config, val_images, val_attributes, jax.random.key(0),
                every=int(config.training.get("eval_every") or config.training.sample_every)))
    return fit(workdir, config,
               init_state=lambda: model_lib.init_state(init_key, config, example),
               train_step=model_lib.train_step, train_data=train_data, train_key=train_key,
               hooks=hooks, progress_metrics=model_lib.PROGRESS_METRICS,
               progress_stream=sys.stdout,
               convergence=Convergence.from_config(config.training))
