"""Prepared datasets: a dataset's tfds builder, preparing it once as array_record (processes
preparing the same folder take turns under a lock), the random-access source of a split, and the
attribute names without building any batches.

`cmma_jax.data.pipeline` (the input pipeline, whose docstring describes the datasets, options and
folders) offers every name here too (`pipeline.prepare`, `pipeline.data_source`, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from typing import Any, Mapping

import tensorflow_datasets as tfds

from cmma_jax.data import registry

SPLITS = ("train", "validation", "test")
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
