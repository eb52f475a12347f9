"""Checkpoints of a workdir: the one place that saves, verifies and restores them (Orbax).

Layout: `<workdir>/checkpoints/<step>/` with the item "state" (the whole train state, Orbax's
StandardSave: array files, never a pickle) and, for training runs, the item "data" (the grain
iterator's position, saved per process). The trainer, the classifier and every loader of trained
models (`cmma_jax.workdirs`) go through these functions.

Every checkpoint the trainer saves gets a content hash (SHA-256 of every file of the step, in
`<workdir>/checkpoint_hashes.json`), checked before it is restored: bytes damaged after the save
are found. A damaged checkpoint is never loaded: readers (`restore_state`) refuse it with
`DamagedCheckpointError`; a resuming run warns, moves it to `<workdir>/damaged_checkpoints/` (kept
for inspection, and so never counted among the checkpoints to keep) and resumes from the newest
checkpoint that verifies. Checkpoints saved before hashes existed are restored unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from grain import checkpoint as grain_checkpoint

from cmma_jax import files

PyTree = Any

CHECKPOINT_DIR = "checkpoints"
HASH_FILE = "checkpoint_hashes.json"
DAMAGED_DIR = "damaged_checkpoints"


class DamagedCheckpointError(ValueError):
    """A checkpoint whose bytes no longer match its recorded hash, or that cannot be read."""


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


def latest_step(workdir: str) -> int | None:
    """The step of the latest checkpoint in `workdir` (None: none), read from the folder names
    alone (nothing is restored or verified)."""
    path = directory(workdir)
    if not os.path.isdir(path):
        return None
    steps = [int(n) for n in os.listdir(path) if n.isdigit()]
    return max(steps) if steps else None


def save(mngr: ocp.CheckpointManager, step: int, state: PyTree, grain_iterator=None) -> None:
    """Saves `state` (and the grain iterator's position, if given) as checkpoint `step`.

    `grain_iterator` may also be an iterator with its own orbax item (the device-resident
    iterator of `cmma_jax.data.resident`: `checkpoint_save_args()`, a small JSON item)."""
    items = {"state": ocp.args.StandardSave(state)}
    if hasattr(grain_iterator, "checkpoint_save_args"):
        items["data"] = grain_iterator.checkpoint_save_args()
    elif grain_iterator is not None:
        items["data"] = grain_checkpoint.CheckpointSave(grain_iterator)
    mngr.save(step, args=ocp.args.Composite(**items))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: PyTree,
            grain_iterator=None) -> PyTree:
    """The state of checkpoint `step`, shaped (and sharded) like `abstract_state`; with
    `grain_iterator`, its position is restored in place too (an iterator with
    `checkpoint_restore_args()` gets the restored item through its `set_state`)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    own_item = hasattr(grain_iterator, "checkpoint_restore_args")
    if own_item:
        items["data"] = grain_iterator.checkpoint_restore_args()
    elif grain_iterator is not None:
        items["data"] = grain_checkpoint.CheckpointRestore(grain_iterator)
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    if own_item:
        grain_iterator.set_state(restored["data"])
    return restored["state"]


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


# ---------------------------------------------------------------------------------------------
# Content hashes


def step_directory(workdir: str, step: int) -> str:
    return os.path.join(directory(workdir), str(int(step)))


def content_hash(path: str) -> str:
    """SHA-256 of every file under `path`: their relative paths, sizes and bytes, in sorted
    order."""
    digest = hashlib.sha256()
    files = sorted(os.path.relpath(os.path.join(root, f), path)
                   for root, _, names in os.walk(path) for f in names)
    for rel in files:
        full = os.path.join(path, rel)
        digest.update(f"{rel}\0{os.path.getsize(full)}\0".encode())
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_hashes(workdir: str) -> dict[str, str]:
    path = os.path.join(workdir, HASH_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        logging.warning("%s is unreadable: its checkpoints are restored unverified.", path)
        return {}


def record_hashes(workdir: str, steps) -> None:
    """Records the hash of each finished checkpoint of `steps` and forgets those of checkpoints
    that no longer exist (atomically: write, then rename)."""
    hashes = _read_hashes(workdir)
    for step in steps:
        hashes[str(int(step))] = content_hash(step_directory(workdir, step))
    present = {name for name in os.listdir(directory(workdir))} if os.path.isdir(
        directory(workdir)) else set()
    hashes = {k: v for k, v in hashes.items() if k in present}
    files.write_json(os.path.join(workdir, HASH_FILE), hashes, indent=1, sort_keys=True)


def verify(workdir: str, step: int) -> bool | None:
    """True if checkpoint `step` matches its recorded hash, False if it does not (or is gone),
    None if no hash was recorded for it."""
    expected = _read_hashes(workdir).get(str(int(step)))
    if expected is None:
        return None
    path = step_directory(workdir, step)
    return os.path.isdir(path) and content_hash(path) == expected


def quarantine(workdir: str, step: int, reason: str) -> str:
    """Moves a damaged checkpoint out of `checkpoints/` (to `damaged_checkpoints/<step>`) with a
    warning; returns where it went."""
    target_dir = os.path.join(workdir, DAMAGED_DIR)
    os.makedirs(target_dir, exist_ok=True)
    target, n = os.path.join(target_dir, str(int(step))), 1
    while os.path.exists(target):
        target, n = os.path.join(target_dir, f"{int(step)}.{n}"), n + 1
    shutil.move(step_directory(workdir, step), target)
    logging.warning("The checkpoint of step %d in %s is damaged (%s); moved it to %s and resume "
                    "from the newest checkpoint that verifies.", step, directory(workdir),
                    reason, target)
    return target


def drop_damaged(workdir: str) -> list[int]:
    """Moves every checkpoint newer than the newest verified one whose hash does not match out
    of `checkpoints/` (`quarantine`); returns their steps. Only the process that writes the
    workdir (process 0) calls this."""
    if not os.path.isdir(directory(workdir)):
        return []
    steps = sorted((int(n) for n in os.listdir(directory(workdir)) if n.isdigit()), reverse=True)
    dropped = []
    for step in steps:
        ok = verify(workdir, step)
        if ok is False:
            quarantine(workdir, step, "its bytes do not match the hash recorded when it was saved")
            dropped.append(step)
        else:
            break
    return dropped


class _RotatedAway(Exception):
    """The checkpoint being read was removed meanwhile (a training run rotating its checkpoints:
    `keep_checkpoints`)."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


# How many times a reader of the latest checkpoint moves on to the newest one when a training run
# rotates the one it was reading away.
ROTATION_RETRIES = 5


def restore_state(workdir: str, abstract_state: PyTree, step: int | None = None
                  ) -> tuple[PyTree, int]:
    """The train state saved in `workdir` (read only; nothing is created or deleted).

    A training run may be writing the workdir meanwhile (`evaluate` beside a training): when the
    checkpoint being read is rotated away, a reader of the latest checkpoint reads the newest one
    instead; a reader of a given `step` is told it was removed.

    Args:
      workdir: a workdir written by the trainer or the classifier.
      abstract_state: the state's structure: `jax.eval_shape` of an `init_state` (static fields
        such as `apply_fn` and `tx` are kept) or `abstract(state)`.
      step: the checkpoint (None: the latest).

    Returns:
      `(state, step)`.

    Raises:
      FileNotFoundError: if the workdir has no checkpoint (or not that step, or it was removed
        while it was read).
      DamagedCheckpointError: if the checkpoint does not match its recorded hash or cannot be
        read (nothing is loaded from it).
    """
    for _ in range(ROTATION_RETRIES):
        try:
            return _restore_once(workdir, abstract_state, step)
        except _RotatedAway as e:
            if step is not None:
                raise FileNotFoundError(
                    f"The checkpoint of step {e.step} in {directory(workdir)} was removed while "
                    "it was read (a training run keeps only its last keep_checkpoints); load "
                    "the latest (step=None) or a step that is kept.") from None
            logging.warning("The checkpoint of step %d in %s was rotated away while it was read; "
                            "reading the newest one.", e.step, directory(workdir))
    raise FileNotFoundError(f"The checkpoints in {directory(workdir)} were rotated away "
                            f"{ROTATION_RETRIES} times while being read; read them once the "
                            "training run has stopped, or with a larger keep_checkpoints.")


def _restore_once(workdir: str, abstract_state: PyTree, step: int | None
                  ) -> tuple[PyTree, int]:
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
        path = step_directory(workdir, step)
        verified = verify(workdir, step)
        if verified is False and not os.path.isdir(path):
            raise _RotatedAway(step)
        if verified is None:
            logging.warning("The checkpoint %s has no recorded content hash (saved by an older "
                            "version, or its %s is missing): it is restored unverified, so "
                            "damage to its bytes would go unnoticed.", path, HASH_FILE)
        if verified is False:
            raise DamagedCheckpointError(
                f"The checkpoint {path} is damaged: its bytes do not match the hash recorded when "
                "it was saved. Load an earlier step (step=...), or resume training, which moves "
                "it aside and continues from the newest checkpoint that verifies.")
        try:
            return restore(mngr, step, _on_default_device(abstract_state)), int(step)
        except (OSError, ValueError, KeyError) as e:
            if not os.path.isdir(path):
                raise _RotatedAway(step) from e
            raise DamagedCheckpointError(
                f"The checkpoint {path} cannot be read ({type(e).__name__}: {e}); load an "
                "earlier step (step=...).") from e
    finally:
        mngr.close()
