"""The grain side of the input pipeline: records to model inputs (the attribute encodings), the
sampler that splits every global batch over the processes, and the batch iterator whose position
is saved with a checkpoint.

`cmma_jax.data.pipeline.load` puts them together and offers every name here too
(`pipeline.Loaded`, `pipeline.encode_attributes`, ...).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import weakref
from typing import Any, Mapping

import grain
import numpy as np

from cmma_jax.data import _images
from cmma_jax.data import _parallel
from cmma_jax.data import celeba as celeba_lib

ENCODINGS = ("binary", "signed", "raw")


def check_encoding(encoding: str) -> None:
    """Raises ValueError for an attribute encoding that is not one of `ENCODINGS`."""
    if encoding not in ENCODINGS:
        raise ValueError(f"Unknown attribute encoding {encoding!r}; expected one of {ENCODINGS}.")


def encode_attributes(raw: np.ndarray, encoding: str, xp: Any = np) -> np.ndarray:
    """Encodes raw attribute values (`[..., A]`) as float32: "binary", "signed" or "raw".

    `xp`: the array module, numpy (on the host) or `jax.numpy` (on the device, e.g. inside a jitted
    function: `cmma_jax.data.resident`); the same values either way.
    """
    check_encoding(encoding)
    raw = xp.asarray(raw, xp.float32)
    if encoding == "binary":
        return (raw > 0).astype(xp.float32)
    if encoding == "signed":
        return xp.where(raw > 0, xp.float32(1), xp.float32(-1))
    return raw


@dataclasses.dataclass(frozen=True)
class _ToArrays(grain.transforms.Map):
    """One record -> {"image": uint8 [64, 64, 3], "attributes": float32 [A] raw}."""

    upstream_celeb_a: bool = False

    def map(self, record):
        if self.upstream_celeb_a:
            flags = record["attributes"]
            return {
                "image": _images.crop_celeba(record["image"]),
                "attributes": np.array(
                    [1.0 if flags[n] else -1.0 for n in celeba_lib.ATTRIBUTE_NAMES], np.float32
                ),
            }
        return {
            "image": record["image"],
            "attributes": np.asarray(record["attributes"], np.float32),
        }


@dataclasses.dataclass(frozen=True)
class _ToModelInputs(grain.transforms.Map):
    """A uint8 batch -> float32 images in [0, 1] and encoded attributes.

    Applied after batching: one vectorised conversion per batch rather than one per record.
    """

    encoding: str

    def map(self, batch):
        return {
            "image": batch["image"].astype(np.float32) * np.float32(1.0 / 255.0),
            "attributes": encode_attributes(batch["attributes"], self.encoding),
        }


class BatchIterator:
    """Batches of one split: `next(it)` -> `{"image": [B, 64, 64, 3], "attributes": [B, A]}`.

    Wraps grain's `DataLoaderIterator` (kept as `.grain_iterator`, e.g. for grain's orbax
    checkpoint handler). Batches are plain numpy arrays that the caller owns: with worker
    processes grain hands them over in shared memory, and they are copied out of it here (about a
    millisecond per batch), so that keeping a batch does not pin shared memory.
    """

    def __init__(self, grain_iterator: grain.DataLoaderIterator, *, copy_out: bool):
        self.grain_iterator = grain_iterator
        self._copy_out = copy_out
        # Stop worker processes and free shared memory at exit even if `close` is never called.
        self._finalizer = weakref.finalize(self, _close_grain_iterator, grain_iterator)

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self.grain_iterator)
        if self._copy_out:
            batch = {k: np.array(v, copy=True) for k, v in batch.items()}
        return batch

    def get_state(self) -> dict[str, Any]:
        """The position as a JSON-able dict, to save with a checkpoint."""
        return json.loads(self.grain_iterator.get_state().decode("utf-8"))

    def set_state(self, state: Mapping[str, Any] | bytes | str) -> None:
        """Moves to a saved position (from an iterator of `load` with the same arguments)."""
        if isinstance(state, Mapping):
            state = json.dumps(dict(state))
        if isinstance(state, str):
            state = state.encode("utf-8")
        self.grain_iterator.set_state(state)

    def close(self) -> None:
        """Stops the worker processes, if any. Idempotent."""
        self._finalizer()

    def __enter__(self) -> "BatchIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_grain_iterator(grain_iterator: grain.DataLoaderIterator) -> None:
    """Stops grain's workers and drops its iterator chain while the interpreter is still whole.

    Left to interpreter shutdown, grain's iterators close themselves in `__del__` after their
    modules are torn down, which prints "Exception ignored ... 'NoneType' object ..." noise.
    """
    inner = getattr(grain_iterator, "_iterator", None)
    close = getattr(inner, "close", None)
    if close is not None:
        close()
    if inner is not None:
        grain_iterator._iterator = None  # pylint: disable=protected-access
        del inner
        gc.collect()


@dataclasses.dataclass
class Loaded:
    """What `load` returns.

    Attributes:
        iterator: yields `{"image": float32 [B, 64, 64, 3], "attributes": float32 [B, A]}` batches;
            `get_state()` / `set_state()` save and restore its position.
        attribute_names: the A attribute names, in column order.
        num_examples: examples in the split (all processes together).
        num_examples_per_shard: examples this process reads per epoch (whole global batches).
        batches_per_epoch: full batches this process makes per epoch.
        loader: the underlying `grain.DataLoader`.
    """

    iterator: BatchIterator
    attribute_names: tuple[str, ...]
    num_examples: int
    num_examples_per_shard: int
    batches_per_epoch: int
    loader: grain.DataLoader

    def __iter__(self) -> BatchIterator:
        return self.iterator

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self.iterator)

    def close(self) -> None:
        self.iterator.close()

    def __enter__(self) -> "Loaded":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GlobalBatchSampler:
    """A grain sampler that splits every global batch over the shards (processes).

    One global order of the records (shuffled with `seed`, a new order every epoch) is cut into
    global batches of `shard_count * batch_size` records; shard p reads rows
    [p * batch_size, (p + 1) * batch_size) of each. The global batches are therefore the same
    whatever the number of shards: two processes with 4 examples each see exactly the batch of 8
    that one process sees, in the same row order. (grain's own sharding gives each shard a block
    of the records with its own shuffle, so the global batch would change with the process count.)

    grain's `DataLoader` asks for sampler index `i * shard_count + shard_index` for the i-th record
    of this shard; `__getitem__` maps that to the record's position in the global order.

    With `worker_count > 0` grain batches within each worker process, so batches group the
    shard's records differently (still disjoint across shards and covering the same records).
    """

    def __init__(self, num_records: int, batch_size: int, shard_options, *, shuffle: bool,
                 num_epochs: int | None, seed: int):
        self._num_records = num_records
        self._batch_size = batch_size
        self._shard_options = shard_options  # read by grain's DataLoader
        self._shuffle, self._num_epochs, self._seed = shuffle, num_epochs, seed
        self._global = grain.samplers.IndexSampler(
            num_records=num_records, shard_options=grain.sharding.NoSharding(),
            shuffle=shuffle, num_epochs=num_epochs, seed=seed)
        global_batch = batch_size * shard_options.shard_count
        # Whole global batches only, so that every shard makes the same number of batches.
        self._max_index = (None if num_epochs is None
                           else (num_records // global_batch) * global_batch * num_epochs)

    def __len__(self) -> int:
        return sys.maxsize if self._max_index is None else self._max_index

    # grain pickles the sampler into each worker process (`worker_count > 0`). Unpickled in a
    # child of the process that pickled it, it makes that worker exit when its parent is gone:
    # a `kill -9`ed run would otherwise leave its workers (~280 MB each) blocked for minutes.
    def __getstate__(self):
        return {**self.__dict__, "_pickled_by": os.getpid()}

    def __setstate__(self, state):
        state = dict(state)
        pickled_by = state.pop("_pickled_by", None)
        self.__dict__.update(state)
        if pickled_by is not None:
            _parallel.exit_with_parent(pickled_by)

    def __repr__(self) -> str:
        return (f"GlobalBatchSampler(num_records={self._num_records}, "
                f"batch_size={self._batch_size}, shard_options={self._shard_options!r}, "
                f"shuffle={self._shuffle}, num_epochs={self._num_epochs}, seed={self._seed})")

    def __getitem__(self, index: int):
        if index < 0 or (self._max_index is not None and index >= self._max_index):
            raise IndexError(f"Sampler index {index} out of range [0, {self._max_index}).")
        shards = self._shard_options.shard_count
        shard, local = index % shards, index // shards
        batch, row = divmod(local, self._batch_size)
        position = (batch * shards + shard) * self._batch_size + row
        metadata = self._global[position]
        return grain.RecordMetadata(index=index, record_key=metadata.record_key,
                                    rng=metadata.rng)
