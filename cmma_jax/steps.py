"""The trainer's compiled step: a train step jitted over a device mesh (batch sharded, state
replicated) or pmapped, with the functions that move its inputs onto the devices and its outputs
back (`make_step`, which `cmma_jax.train.fit` runs and the benchmarks time).

The names are the trainer's too (`cmma_jax.train.make_step`, `cmma_jax.train.StepFunctions`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

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
    """

    step: Callable[..., Any]
    place_state: Callable[[PyTree], PyTree]
    place_batch: Callable[[Mapping[str, np.ndarray]], PyTree]
    unplace_state: Callable[[PyTree], PyTree]
    unplace_metrics: Callable[[PyTree], PyTree]


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
        step = jax.pmap(
            functools.partial(train_step, config=config, axis_name=parallel.PMAP_AXIS),
            axis_name=parallel.PMAP_AXIS, in_axes=(0, 0, None), donate_argnums=0)
        n = jax.local_device_count()
        return StepFunctions(step, parallel.pmap_replicate,
                             lambda b: parallel.pmap_split_batch(b, n), parallel.pmap_unreplicate,
                             lambda m: jax.tree_util.tree_map(lambda x: x[0], m))
    mesh = mesh if mesh is not None else parallel.make_mesh()
    repl = parallel.replicated(mesh)
    step = jax.jit(functools.partial(train_step, config=config),
                   in_shardings=(repl, parallel.batch_sharding(mesh), repl),
                   out_shardings=(repl, repl), donate_argnums=0)
    return StepFunctions(step, lambda s: parallel.replicate(s, mesh),
                         lambda b: _place_batch_on_mesh(b, mesh), lambda s: s, lambda m: m)


def _place_batch_on_mesh(batch: Mapping[str, Any], mesh) -> PyTree:
    """A host batch -> `parallel.shard_batch`; a batch already on the devices (the
    device-resident path, one process) -> the batch sharding without a trip through the host
    (a no-op when it already has it)."""
    if jax.process_count() == 1 and all(isinstance(v, jax.Array) for v in batch.values()):
        return jax.device_put(dict(batch), parallel.batch_sharding(mesh))
    return parallel.shard_batch(batch, mesh)
