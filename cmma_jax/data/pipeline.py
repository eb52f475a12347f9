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

from typing import Any, Mapping

import grain
import tensorflow_datasets as tfds

from cmma_jax.data import registry
# The grain side (encodings, the sampler, the iterator) and the prepared datasets (builders,
# preparing, sources) live in cmma_jax.data.batching and cmma_jax.data.preparing; their names are
# this module's too.
from cmma_jax.data.batching import (  # noqa: F401
    ENCODINGS,
    BatchIterator,
    GlobalBatchSampler,
    Loaded,
    _close_grain_iterator,
    _ToArrays,
    _ToModelInputs,
    check_encoding,
    encode_attributes,
)
from cmma_jax.data.preparing import (  # noqa: F401
    PREPARED_DIR_ENV,
    SPLITS,
    PathLike,
    _download_and_prepare,
    _is_prepared,
    _prepared_dir,
    _preparing_lock,
    attribute_names,
    data_source,
    default_prepared_dir,
    get_builder,
    prepare,
)

DATASETS = registry.DATASETS


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
    check_encoding(encoding)
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
