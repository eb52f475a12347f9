"""The input pipeline: a prepared tfds dataset -> grain loader -> fixed-shape dict batches.

        data = load("synthetic_faces", "train", batch_size=64, seed=0)
        batch = next(data.iterator)
        batch["image"]       # float32 [64, 64, 64, 3] in [0, 1]
        batch["attributes"]  # float32 [64, A], encoded as asked ("binary" {0,1} by default)
        data.attribute_names # the A names, in column order

How a batch flows: the dataset is prepared once as array_record (built on first use if absent,
see `prepare`), read through `tfds.data_source` (no TensorFlow), and fed to a `grain.DataLoader`
that shuffles the records with a seed (a new order every epoch) and shards each *global* batch
over the processes (`GlobalBatchSampler`: process p reads rows [p·b, (p+1)·b) of every global
batch of P·b records, so the global batch is the same whatever the number of processes), maps
each record to a uint8 image and raw attribute vector, batches with a fixed shape (the remainder
is dropped, so a jitted step never recompiles), then converts the batch to float32 and encodes
the attributes. Training repeats forever; evaluation makes one pass. With `worker_count > 0`
the reading and mapping run in that many worker processes.

The iterator (`BatchIterator`, a thin wrapper of grain's `DataLoaderIterator`) has
`get_state()`, a JSON-able dict to save with a checkpoint, and `set_state(state)`: on a fresh
iterator (same arguments to `load`) it resumes with exactly the batches the first run would have
produced next. The batches depend on `worker_count` (grain batches within each worker), so a
run must resume with the worker count it saved with; grain checks this.

From a config: the functions at the end take the `data` section of a config itself
(`load_split`, `prepare_from_config`, `builder_options`, `attribute_names_from_config`,
`check_num_attributes`), so that callers need not know what each dataset takes:

        data = load_split(config.data, "train", batch_size=64, seed=config.training.seed)

Two folders, with the names of the configs and the launch flags: `data_dir`, the raw dataset
folder ("celeba", "lfw"), and `prepared_dir`, where prepared datasets are cached (default
`default_prepared_dir()`).

Datasets (`DATASETS`, entries of `cmma_jax.data.registry`; each builder module's `OPTIONS`):
    "synthetic_faces"  rendered locally (`cmma_jax.data.synthetic_faces`); options: num_train,
                       num_validation, num_test, seed, num_workers.
    "celeba"           a local CelebA folder (`cmma_jax.data.celeba`), `data_dir`; options:
                       max_bad_images, num_workers.
    "celeb_a"          the upstream tfds `celeb_a` (tfds downloads it), cropped like "celeba".
    "lfw"              LFWcrop faces + lfw_attributes.txt (`cmma_jax.data.lfw`), `data_dir`;
                       options: num_train, num_validation, max_bad_images, num_workers.

Attribute encodings (`ENCODINGS`), from each dataset's raw values (CelebA's and the synthetic
faces' -1/+1, LFW's real-valued scores):
    "binary"  1 where the raw value is > 0, else 0
    "signed"  +1 where the raw value is > 0, else -1
    "raw"     the stored values unchanged (LFW's scores; -1/+1 for the others)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gc
import json
import logging
import os
import socket
import sys
import weakref
from typing import Any, Mapping

import grain
import numpy as np
import tensorflow_datasets as tfds

from cmma_jax.data import _images
from cmma_jax.data import _parallel
from cmma_jax.data import celeba as celeba_lib
from cmma_jax.data import registry

DATASETS = registry.DATASETS
SPLITS = ("train", "validation", "test")
ENCODINGS = ("binary", "signed", "raw")
PREPARED_DIR_ENV = "CMMA_DATA_DIR"

PathLike = str | os.PathLike[str]


def default_prepared_dir() -> str:
    """Where prepared datasets live: $CMMA_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets
    (tfds's own default)."""
    path = (
        os.environ.get(PREPARED_DIR_ENV)
        or os.environ.get("TFDS_DATA_DIR")
        or "~/tensorflow_datasets"
    )
    return os.path.expanduser(path)


def _prepared_dir(prepared_dir: PathLike | None) -> str:
    if prepared_dir is None:
        return default_prepared_dir()
    return os.path.expanduser(os.fspath(prepared_dir))


def get_builder(
    name: str,
    *,
    data_dir: PathLike | None = None,
    prepared_dir: PathLike | None = None,
    options: Mapping[str, Any] | None = None,
) -> tfds.core.DatasetBuilder:
    """The tfds builder of a dataset (not prepared yet, see `prepare`).

    Args:
        name: one of `DATASETS`.
        data_dir: the raw folder of "celeba" and "lfw" (None: tfds's manual directory).
        prepared_dir: where prepared datasets live (default: `default_prepared_dir()`).
        options: builder options, see the module docstring.
    """
    dataset = registry.get(name)
    options = registry.check_options(name, options)
    return dataset.make_builder(data_dir, _prepared_dir(prepared_dir), options)


def prepare(
    name: str,
    *,
    data_dir: PathLike | None = None,
    prepared_dir: PathLike | None = None,
    options: Mapping[str, Any] | None = None,
) -> tfds.core.DatasetBuilder:
    """Prepares a dataset as array_record if it is not prepared yet; returns its builder.

    Same arguments as `get_builder`. Preparing is done once per prepared_dir; later calls find the
    files and return at once. Processes preparing the same dataset at once (two runs started
    together, the processes of one multi-host run) take turns: preparing holds an exclusive OS
    lock on `<prepared folder>.lock` (`_preparing_lock`), and a process that finds it held logs
    that it waits for another process preparing that folder, then finds the prepared data.
    """
    where = dict(data_dir=data_dir, prepared_dir=prepared_dir, options=options)
    builder = get_builder(name, **where)
    if _is_prepared(builder):
        return builder
    with _preparing_lock(os.fspath(builder.data_dir)):
        # Made afresh under the lock: another process may have prepared the data meanwhile,
        # and a tfds builder reads its prepared folder's info only when it is made.
        builder = get_builder(name, **where)
        _download_and_prepare(name, builder)
    return builder


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether the builder's folder holds prepared data (tfds writes it whole, by a rename)."""
    return os.path.isfile(os.path.join(os.fspath(builder.data_dir), "dataset_info.json"))


@contextlib.contextmanager
def _preparing_lock(folder: str):
    """Holds an exclusive lock on `<folder>.lock` (`fcntl.flock`); waits while another has it.

    The OS releases the lock when its holder exits, however it exits (`kill -9` included), so a
    stale lock file never blocks anyone: the file stays, the lock does not. The file records the
    holder's host and PID, for the waiting message.
    """
    path = folder.rstrip(os.sep) + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            logging.warning(
                "Waiting for another process (%s) preparing %s; it holds %s.", holder, folder, path
            )
            fcntl.flock(f, fcntl.LOCK_EX)
            logging.warning("Done waiting: %s is no longer being prepared by another process.",
                            folder)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"host {socket.gethostname()}, PID {os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download_and_prepare(name: str, builder: tfds.core.DatasetBuilder) -> None:
    try:
        builder.download_and_prepare(file_format="array_record")
    except ModuleNotFoundError as e:
        if not registry.get(name).upstream:
            raise
        raise ModuleNotFoundError(
            f"tensorflow-datasets needs the package {e.name!r} to download and prepare {name}; "
            f"install it (pip install {e.name}), or prepare CelebA from a local folder with "
            "name='celeba', data_dir=<folder>."
        ) from e
    except Exception as e:  # noqa: BLE001 - re-raised with the way out
        if not registry.get(name).upstream:
            raise
        raise RuntimeError(
            f"tfds could not download and prepare {name} into {builder.data_dir}"
            f" ({type(e).__name__}: {e}). It downloads from Google Drive, which is often"
            " rate-limited or unreachable; download CelebA yourself and use name='celeba',"
            " data_dir=<folder>."
        ) from e


def data_source(
    name: str,
    split: str,
    *,
    data_dir: PathLike | None = None,
    prepared_dir: PathLike | None = None,
    options: Mapping[str, Any] | None = None,
):
    """The random-access source (`source[i]` -> dict of numpy arrays) of one split, prepared."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    if registry.get(name).upstream:
        # Through tfds.data_source, so that tfds.testing.mock_data can stand in for the download.
        registry.check_options(name, options)
        if data_dir is not None:
            get_builder(name, data_dir=data_dir)  # raises the explanation
        try:
            return tfds.data_source(
                name,
                split=split,
                data_dir=_prepared_dir(prepared_dir),
                builder_kwargs={"file_format": "array_record"},
            )
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(
                f"tensorflow-datasets needs the package {e.name!r} to prepare {name}; install it,"
                " or use name='celeba' with a local CelebA folder."
            ) from e
    builder = prepare(name, data_dir=data_dir, prepared_dir=prepared_dir, options=options)
    if split not in builder.info.splits:  # a folder too small to give this split any face
        sizes = {s: int(builder.info.splits[s].num_examples) for s in SPLITS
                 if s in builder.info.splits}
        option = f"num_{split}"
        if (options or {}).get(option) == 0:  # asked for: the fix is the option, not the folder
            raise ValueError(
                f"The {split!r} split of {name!r} has no faces: it was made with {option}=0"
                f" (--config.data.options.{option}). Use another split, or data (and models"
                f" trained on it) with {option} > 0."
            )
        raise ValueError(
            f"The {split!r} split of {name!r} has no faces: the folder is too small to give it"
            f" any. The splits have: {', '.join(f'{s} {n}' for s, n in sizes.items())} faces."
            f" Use a larger folder (docs/data.md says how each dataset is split), or another"
            " split."
        )
    return builder.as_data_source(split=split)


def attribute_names(
    name: str,
    *,
    data_dir: PathLike | None = None,
    prepared_dir: PathLike | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[str, ...]:
    """The attribute names of a dataset, in column order, without building any batches.

    Nothing is prepared: the names are fixed for "synthetic_faces", "celeba" and "celeb_a"; for
    "lfw" they come from the prepared dataset if there is one, else from the attribute file's
    header in `data_dir`, else the released file's names.
    """
    dataset = registry.get(name)
    if dataset.names_of is None:
        return dataset.attribute_names
    builder = get_builder(name, data_dir=data_dir, prepared_dir=prepared_dir, options=options)
    return dataset.names_of(builder, data_dir) or dataset.attribute_names


def encode_attributes(raw: np.ndarray, encoding: str) -> np.ndarray:
    """Encodes raw attribute values (`[..., A]`) as float32: "binary", "signed" or "raw"."""
    raw = np.asarray(raw, np.float32)
    if encoding == "binary":
        return (raw > 0).astype(np.float32)
    if encoding == "signed":
        return np.where(raw > 0, np.float32(1), np.float32(-1))
    if encoding == "raw":
        return raw
    raise ValueError(f"Unknown attribute encoding {encoding!r}; expected one of {ENCODINGS}.")


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


def _allow_worker_processes() -> None:
    """grain's worker processes read absl flags; outside `app.run` they are not parsed yet."""
    from absl import flags  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def load(
    name: str,
    split: str,
    *,
    batch_size: int,
    seed: int = 0,
    data_dir: PathLike | None = None,
    prepared_dir: PathLike | None = None,
    encoding: str = "binary",
    shuffle: bool | None = None,
    num_epochs: int | None | str = "auto",
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    shard_index: int | None = None,
    shard_count: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Loaded:
    """Batches of one split of a dataset, prepared on first use.

    Args:
        name: one of `DATASETS`.
        split: "train", "validation" or "test".
        batch_size: examples per batch on this process; the remainder is dropped.
        seed: the shuffle seed (the same seed gives the same batches).
        data_dir: the raw folder of "celeba" and "lfw" (None: tfds's manual directory).
        prepared_dir: where prepared datasets live (default `default_prepared_dir()`).
        encoding: attribute encoding, one of `ENCODINGS`.
        shuffle: shuffle the records (default: for "train" only).
        num_epochs: passes over the split; None repeats forever; "auto" (the default) repeats
            forever for "train" and makes one pass otherwise.
        worker_count: worker processes for reading and mapping (0: in this process).
        worker_buffer_size: batches each worker prepares ahead.
        shard_index, shard_count: this process's shard (default `jax.process_index()` and
            `jax.process_count()`); each shard reads its own `batch_size` rows of every global
            batch of `batch_size * shard_count` records (`GlobalBatchSampler`).
        options: dataset builder options (see the module docstring).

    Returns:
        A `Loaded` with the iterator and the attribute names.

    Raises:
        ValueError: unknown name, split, encoding or option; a split with fewer examples per shard
            than `batch_size`.
    """
    registry.get(name)  # an unknown name fails first
    if encoding not in ENCODINGS:
        raise ValueError(f"Unknown attribute encoding {encoding!r}; expected one of {ENCODINGS}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    where = dict(data_dir=data_dir, prepared_dir=prepared_dir, options=options)
    source = data_source(name, split, **where)
    names = attribute_names(name, **where)

    if shard_index is None or shard_count is None:
        if (shard_index is None) != (shard_count is None):
            raise ValueError(
                "Pass both shard_index and shard_count, or neither (then JAX's process index and"
                " count)."
            )
        import jax  # pylint: disable=g-import-not-at-top

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise ValueError(
            f"shard_index must be in [0, shard_count); got {shard_index} of {shard_count}."
        )
    num_examples = len(source)
    batches_per_epoch = num_examples // (batch_size * shard_count)
    per_shard = batches_per_epoch * batch_size
    if batches_per_epoch < 1:
        raise ValueError(_too_small_message(name, split, num_examples, batch_size, shard_count,
                                            **where))
    if shuffle is None:
        shuffle = split == "train"
    if num_epochs == "auto":
        num_epochs = None if split == "train" else 1
    elif num_epochs is not None and (not isinstance(num_epochs, int) or num_epochs < 1):
        raise ValueError(
            f"num_epochs must be a positive integer, None (forever) or 'auto'; got {num_epochs!r}."
        )

    sampler = GlobalBatchSampler(
        num_examples, batch_size,
        grain.sharding.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                                    drop_remainder=True),
        shuffle=shuffle, num_epochs=num_epochs, seed=seed,
    )
    if worker_count > 0:
        _allow_worker_processes()
    loader = grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[
            _ToArrays(upstream_celeb_a=name == "celeb_a"),
            grain.transforms.Batch(batch_size=batch_size, drop_remainder=True),
            _ToModelInputs(encoding=encoding),
        ],
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
    )
    return Loaded(
        iterator=BatchIterator(iter(loader), copy_out=worker_count > 0),
        attribute_names=tuple(names),
        num_examples=num_examples,
        num_examples_per_shard=per_shard,
        batches_per_epoch=batches_per_epoch,
        loader=loader,
    )


def _split_sizes(name: str, **where) -> dict[str, int]:
    """The number of faces in each split of a prepared dataset ({} if unknown)."""
    try:
        if registry.get(name).upstream:
            builder = tfds.builder(name, data_dir=_prepared_dir(where.get("prepared_dir")))
        else:
            builder = get_builder(name, **where)
        return {s: int(builder.info.splits[s].num_examples) for s in SPLITS
                if s in builder.info.splits}
    except Exception:  # noqa: BLE001 - only for a message
        return {}


def _too_small_message(name, split, num_examples, batch_size, shard_count, **where) -> str:
    """Why a split cannot make one batch: every split's size, the batch it needs, the fixes."""
    needed = batch_size * shard_count
    sizes = _split_sizes(name, **where)
    listed = ", ".join(f"{s} {n}" for s, n in sizes.items()) or f"{split} {num_examples}"
    largest = num_examples // shard_count
    fixes = [f"a batch size of at most {largest}{' per process' if shard_count > 1 else ''}"
             if largest >= 1 else f"fewer than {shard_count + 1} processes"]
    if name == "synthetic_faces":
        fixes.append(f"--config.data.options.num_{split}={needed} (or more)")
    elif name == "lfw" and split in ("train", "validation"):
        fixes.append(f"--config.data.options.num_{split}={needed} (or more; the test split is"
                     " the rows after train and validation)")
    else:
        fixes.append(f"a folder with at least {needed} faces in its {split} split")
    return (
        f"The {split!r} split of {name!r} has {num_examples} examples: fewer than one global"
        f" batch of {batch_size} x {shard_count} shard(s) (the batch size asked x the processes),"
        f" so it makes no batch; that split needs at least {needed} faces. The splits have:"
        f" {listed} faces. Use {', or '.join(fixes)}."
    )


def get_state(iterator: BatchIterator | Loaded) -> dict[str, Any]:
    """The iterator's position as a JSON-able dict, to save with a checkpoint."""
    if isinstance(iterator, Loaded):
        iterator = iterator.iterator
    return iterator.get_state()


def set_state(iterator: BatchIterator | Loaded, state: Mapping[str, Any] | bytes | str) -> None:
    """Moves a fresh iterator (from `load` with the same arguments) to a saved position."""
    if isinstance(iterator, Loaded):
        iterator = iterator.iterator
    iterator.set_state(state)


# ---------------------------------------------------------------------------------------------
# From the `data` section of a config


def _section(data_config) -> Mapping[str, Any]:
    """The `data` section (a ConfigDict or a mapping); a whole config is refused."""
    if "name" not in data_config and "data" in data_config:
        raise ValueError("Pass the data section of the config (config.data), not the whole config.")
    return data_config


def builder_options(data_config) -> dict[str, Any] | None:
    """The builder options that `data.options` sets, checked against what the builder takes.

    None values mean "the builder's default" and are left out (a config lists the split sizes for
    every dataset, unset). A value that is set for an option the dataset's builder does not take
    is an error, never dropped: it would be recorded in the run's config as if applied.

    Returns:
        The options, or None if none is set.

    Raises:
        ValueError: an unknown dataset, or an option set that the builder does not take (the
            message names the option, the dataset and the options it takes).
    """
    data_config = _section(data_config)
    name = data_config["name"]
    taken = registry.get(name).options
    options = {k: v for k, v in dict(data_config.get("options") or {}).items() if v is not None}
    unsupported = sorted(set(options) - set(taken))
    if unsupported:
        settings = ", ".join(f"data.options.{k}={options[k]!r}" for k in unsupported)
        raise ValueError(
            f"{settings}: dataset {name!r} does not take "
            f"{'this option' if len(unsupported) == 1 else 'these options'}; it takes "
            f"{', '.join(taken) if taken else 'no options'}. Leave "
            f"{'it' if len(unsupported) == 1 else 'them'} unset (None)."
        )
    return options or None


def _where(data_config) -> dict[str, Any]:
    """The folders and options of `get_builder`, `prepare`, `load`, ... that a section gives."""
    return dict(
        data_dir=data_config.get("data_dir"),
        prepared_dir=data_config.get("prepared_dir"),
        options=builder_options(data_config),
    )


def load_split(
    data_config,
    split: str,
    *,
    batch_size: int,
    seed: int,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> Loaded:
    """The batches of one split as a config's `data` section describes them.

    The training split repeats forever in an order shuffled by `seed`; other splits make one pass
    in file order. The attributes come in `data.attribute_encoding`, read by
    `data.worker_count` worker processes.

    Args:
        data_config: the `data` section (`name`, `data_dir`, `prepared_dir`,
            `attribute_encoding`, `options`, `worker_count`).
        split: "train", "validation" or "test".
        batch_size: examples per batch on this process.
        seed: the shuffle seed (the training seed).
        shard_index, shard_count: this process's shard (default: JAX's process index and count;
            0 and 1 read the whole split on this process).
    """
    data_config = _section(data_config)
    return load(
        data_config["name"], split, batch_size=batch_size, seed=int(seed),
        encoding=data_config["attribute_encoding"],
        worker_count=int(data_config.get("worker_count", 0) or 0),
        shard_index=shard_index, shard_count=shard_count,
        **_where(data_config),
    )


def prepare_from_config(data_config) -> tfds.core.DatasetBuilder:
    """Prepares the dataset a `data` section describes (if it is not prepared yet); its builder."""
    data_config = _section(data_config)
    return prepare(data_config["name"], **_where(data_config))


def attribute_names_from_config(data_config) -> tuple[str, ...]:
    """The attribute names of the dataset a `data` section describes, without preparing it."""
    data_config = _section(data_config)
    return attribute_names(data_config["name"], **_where(data_config))


def check_num_attributes(data_config, names) -> None:
    """Checks the optional `data.num_attributes` against the dataset's attribute names."""
    data_config = _section(data_config)
    expected = data_config.get("num_attributes")
    if expected is not None and int(expected) != len(names):
        raise ValueError(
            f"data.num_attributes={expected} but dataset {data_config['name']!r} has "
            f"{len(names)} attributes; set --config.data.num_attributes="
            f"{len(names)} or leave it unset."
        )
