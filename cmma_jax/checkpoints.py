"""Checkpoints of a workdir: the one place that saves and restores them (Orbax).

Layout: `<workdir>/checkpoints/<step>/` with the item "state" (the whole train state, Orbax's
StandardSave: array files, never a pickle) and, for training runs, the item "data" (the grain
iterator's position, saved per process). The trainer, the classifier and every loader of trained
models (`cmma_jax.workdirs`) go through these functions.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from grain import checkpoint as grain_checkpoint

PyTree = Any

CHECKPOINT_DIR = "checkpoints"


def directory(workdir: str) -> str:
    """`<workdir>/checkpoints`, absolute (Orbax wants absolute paths)."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def manager(workdir: str, keep: int | None = None, *, create: bool = True
            ) -> ocp.CheckpointManager:
    """The Orbax manager of `<workdir>/checkpoints`.

    Args:
      workdir: the workdir.
      keep: how many of the latest checkpoints to keep (None: all). Only a writer passes it.
      create: create the folder (writers); readers pass False so that loading from a wrong
        path leaves nothing behind.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    return ocp.CheckpointManager(directory(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: PyTree, grain_iterator=None) -> None:
    """Saves `state` (and the grain iterator's position, if given) as checkpoint `step`."""
    items = {"state": ocp.args.StandardSave(state)}
    if grain_iterator is not None:
        items["data"] = grain_checkpoint.CheckpointSave(grain_iterator)
    mngr.save(step, args=ocp.args.Composite(**items))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: PyTree,
            grain_iterator=None) -> PyTree:
    """The state of checkpoint `step`, shaped (and sharded) like `abstract_state`; with
    `grain_iterator`, its position is restored in place too."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if grain_iterator is not None:
        items["data"] = grain_checkpoint.CheckpointRestore(grain_iterator)
    return mngr.restore(step, args=ocp.args.Composite(**items))["state"]


def abstract(state: PyTree) -> PyTree:
    """The restore target of a concrete (or `jax.eval_shape`) state: shapes, dtypes, shardings."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)


def _on_default_device(abstract_state: PyTree) -> PyTree:
    """The restore target with every array on this process's first device. A checkpoint
    remembers the devices it was saved from (a mesh, several processes); a reader wants one
    local copy whatever they were."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_state)


def restore_state(workdir: str, abstract_state: PyTree, step: int | None = None
                  ) -> tuple[PyTree, int]:
    """The train state saved in `workdir` (read only; nothing is created or deleted).

    Args:
      workdir: a workdir written by the trainer or the classifier.
      abstract_state: the state's structure: `jax.eval_shape` of an `init_state` (static fields
        such as `apply_fn` and `tx` are kept) or `abstract(state)`.
      step: the checkpoint (None: the latest).

    Returns:
      `(state, step)`.

    Raises:
      FileNotFoundError: if the workdir has no checkpoint (or not that step).
    """
    path = directory(workdir)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No checkpoint in {path}: the folder does not exist.")
    mngr = manager(workdir, create=False)
    try:
        if step is None:
            step = mngr.latest_step()
            if step is None:
                raise FileNotFoundError(f"No checkpoint in {path}.")
        elif step not in mngr.all_steps():
            raise FileNotFoundError(f"No checkpoint of step {step} in {path}; there are "
                                    f"{sorted(mngr.all_steps())}.")
        return restore(mngr, step, _on_default_device(abstract_state)), int(step)
    finally:
        mngr.close()
