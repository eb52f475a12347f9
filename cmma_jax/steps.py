"""The trainer's compiled step: a train step jitted over a device mesh (batch sharded, state
replicated) or pmapped, with the functions that move its inputs onto the devices and its outputs
back (`make_step`, which `cmma_jax.train.fit` runs and the benchmarks time).

Several steps in one call (`config.training.steps_per_call`, `StepFunctions.run` and
`steps_in_call`): one compiled program runs the steps one after the other, each with its own
batch and key, the same arithmetic as that many calls. Between two calls XLA's CPU runtime idles
(starting a program, handing the state over): the small CMMA at batch 16 ran 1.07x faster with
two steps a call (median of five comparisons, 0.99-1.13x; quiet 2-core AMD EPYC, 2026-12-07,
benchmarks/RESULTS.md).

The names are the trainer's too (`cmma_jax.train.make_step`, `cmma_jax.train.StepFunctions`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from cmma_jax import parallel

PyTree = Any


@dataclasses.dataclass(frozen=True)
class StepFunctions:
    """A compiled train step and the functions that move its inputs and outputs.

    Attributes:
      step: `(placed state, placed batch, key) -> (state, metrics)`, jitted (or pmapped) with the
        state donated.
      place_state: a host or single-device state -> the step's input layout (replicated over the
        mesh, or stacked per device for pmap).
      place_batch: a host batch (this process's rows) -> the step's input layout.
      unplace_state: the step's state -> one copy (the identity on a mesh).
      unplace_metrics: the step's metrics -> one copy.
      steps: `(placed state, [placed batch, ...], [key, ...]) -> (state, [metrics, ...])`, as
        many steps in one compiled call (jitted or pmapped like `step`, state donated).
    """

    step: Callable[..., Any]
    place_state: Callable[[PyTree], PyTree]
    place_batch: Callable[[Mapping[str, np.ndarray]], PyTree]
    unplace_state: Callable[[PyTree], PyTree]
    unplace_metrics: Callable[[PyTree], PyTree]
    steps: Callable[..., Any] | None = None

    def run(self, state: PyTree, batches: Sequence[PyTree], keys: Sequence[Any]):
        """`len(batches)` steps from `state` (one call): `(state, [metrics of each step])`."""
        if len(batches) != len(keys):
            raise ValueError(f"{len(batches)} batches but {len(keys)} keys.")
        if len(batches) == 1 or self.steps is None:
            return _in_turn(self.step)(state, batches, keys)  # a call for each step
        return self.steps(state, list(batches), list(keys))


def steps_in_call(step: int, num_steps: int, most: int, cadences: Sequence[int]) -> int:
    """How many steps the trainer's next call runs, from `step` (the steps done so far): `most`,
    unless the last step comes sooner or one of the steps before the call's last completes a
    multiple of a cadence (logging, checkpoints, hooks: they need the state after that step);
    then one. The calls therefore compile for `most` steps and for one, nothing else."""
    most = int(most)
    if most < 1:
        raise ValueError(f"training.steps_per_call must be at least 1, got {most}.")
    if most == 1 or step + most > num_steps:
        return 1
    inner = range(step + 1, step + most)  # the steps completed inside the call, before its last
    if any(c > 0 and done % c == 0 for done in inner for c in cadences):
        return 1
    return most


def make_step(train_step: Callable[..., Any], config, mesh=None) -> StepFunctions:
    """The trainer's step: `train_step(state, batch, key, *, config[, axis_name])` jitted over a
    device mesh (batch sharded, state replicated; `config.training.parallelism = "mesh"`, the
    default) or pmapped with averaged gradients ("pmap"; `train_step` takes `axis_name`).

    Args:
      train_step: a model's `train_step` (the model contract) or the classifier's.
      config: the full config, bound to `train_step` with `functools.partial`.
      mesh: the device mesh (default: every device, `parallel.make_mesh()`).
    """
    if config.training.get("parallelism", "mesh") == "pmap":
        one = functools.partial(train_step, config=config, axis_name=parallel.PMAP_AXIS)
        pmap = functools.partial(jax.pmap, axis_name=parallel.PMAP_AXIS, in_axes=(0, 0, None),
                                 donate_argnums=0)
        n = jax.local_device_count()
        return StepFunctions(pmap(one), parallel.pmap_replicate,
                             lambda b: parallel.pmap_split_batch(b, n), parallel.pmap_unreplicate,
                             lambda m: jax.tree_util.tree_map(lambda x: x[0], m),
                             steps=pmap(_in_turn(one)))
    mesh = mesh if mesh is not None else parallel.make_mesh()
    repl = parallel.replicated(mesh)
    one = functools.partial(train_step, config=config)
    jit = functools.partial(jax.jit, in_shardings=(repl, parallel.batch_sharding(mesh), repl),
                            out_shardings=(repl, repl), donate_argnums=0)
    return StepFunctions(jit(one), lambda s: parallel.replicate(s, mesh),
                         lambda b: _place_batch_on_mesh(b, mesh), lambda s: s, lambda m: m,
                         steps=jit(_in_turn(one)))


def _in_turn(one: Callable[..., Any]) -> Callable[..., Any]:
    """`(state, [batch, ...], [key, ...]) -> (state, [metrics, ...])`: `one` step per batch, in
    turn (one program when jitted)."""
    def steps(state, batches, keys):
        metrics = []
        for batch, key in zip(batches, keys):
            state, m = one(state, batch, key)
            metrics.append(m)
        return state, metrics
    return steps


def _place_batch_on_mesh(batch: Mapping[str, Any], mesh) -> PyTree:
    """A host batch -> `parallel.shard_batch`; a batch already on the devices (the
    device-resident path, one process) -> the batch sharding without a trip through the host
    (a no-op when it already has it)."""
    if jax.process_count() == 1 and all(isinstance(v, jax.Array) for v in batch.values()):
        return jax.device_put(dict(batch), parallel.batch_sharding(mesh))
    return parallel.shard_batch(batch, mesh)
