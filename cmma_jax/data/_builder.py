"""The common base of this package's tfds builders, and what the folder builders share.

`LocalBuilder` is the base of every builder here; the builders of a local folder (`celeba`,
`lfw`) also share how they find the folder (`LocalBuilder._source_dir`), read its index files
(`read_index_file`, `index_rows`), decode its images in worker processes (`read_faces`, or
`LocalBuilder._read_faces` for the rows of a split) and skip bad images (`BadImages`), and how a
folder's prepared copy is named (`folder_config_name`). Every builder here describes its dataset
with `LocalBuilder._face_info`: 64x64 faces, their attributes and the builder's own features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import tempfile
import warnings
from typing import Any, Callable, Iterator, Mapping, MutableMapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

from cmma_jax.data import _images
from cmma_jax.data import _parallel
from cmma_jax.data._images import UnreadableImageError
from cmma_jax.images import IMAGE_SHAPE

FACE_CHUNK = 200  # images per unit of work of a decoding process


class DatasetInfo(tfds.core.DatasetInfo):
    """`tfds.core.DatasetInfo` without the lookup on tfds's bucket, which these datasets are never
    in: tfds (4.9) calls `initialize_from_bucket` for every builder whose data is not prepared yet,
    and each call leaves an empty temporary directory behind (one per preparation, thousands
    in /tmp after a few test sessions). `_info` of every builder here returns this class."""

    def initialize_from_bucket(self) -> None:
        return None


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A `GeneratorBasedBuilder` whose code lives in this package.

    tfds locates a builder's source file (for checksums and metadata) through
    `importlib_resources`, a package that tensorflow-datasets imports but does not install. These
    builders download nothing, so the file found by `inspect` is all tfds needs.

    A builder of a local folder (its config has a `source_dir`) names the dataset in
    `FOLDER_NAME` and describes the folder in `FOLDER_LAYOUT`, for `_source_dir`'s error; its
    `_split_generators` sets `self._bad` (`BadImages`) before `_read_faces` runs, and its
    constructor `self._num_workers`.
    """

    FOLDER_NAME = ""
    FOLDER_LAYOUT = ""

    def __init__(self, *, config: tfds.core.BuilderConfig | str | None = None, **kwargs):
        # A predefined config is passed by name: tfds rebuilds builders from their constructor
        # arguments when they are unpickled (in grain's worker processes), and it rejects a copy of
        # a predefined config object as "a custom config with the same name".
        if isinstance(config, tfds.core.BuilderConfig):
            predefined = type(self).builder_configs.get(config.name)
            if predefined is not None and dataclasses.asdict(predefined) == dataclasses.asdict(
                config
            ):
                config = config.name
        super().__init__(config=config, **kwargs)

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None

    def _source_dir(self, dl_manager) -> str:
        """The folder to prepare: the config's `source_dir`, else tfds's manual directory."""
        if self.builder_config.source_dir is not None:
            return self.builder_config.source_dir
        try:
            return os.fspath(dl_manager.manual_dir)
        except AssertionError as e:  # tfds: manual directory absent or empty
            raise FileNotFoundError(
                f"No {self.FOLDER_NAME} folder given and tfds's manual directory is absent or empty"
                f" ({e}). Pass source_dir=<{self.FOLDER_LAYOUT}>."
            ) from None

    def _face_info(
        self,
        *,
        description: str,
        attribute_names: Sequence[str],
        encoding: str,
        extra_features: Mapping[str, Any],
        **info: Any,
    ) -> DatasetInfo:
        """The `DatasetInfo` of a dataset of faces: "image" (uint8 [64, 64, 3], zlib-compressed
        raw pixels, `ZlibTensor`: lossless, and a single zlib call to decode, cheaper than PNG or
        JPEG at read time), "attributes" (float32 [A] in the order of `attribute_names`, kept in
        the metadata with their `encoding`) and the builder's `extra_features`. Records keep
        generation order (`disable_shuffling`): record i of a split is the i-th example its
        generator yields. `info`: `DatasetInfo`'s other arguments (`homepage`)."""
        return DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(
                {
                    "image": ZlibTensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding="zlib"),
                    "attributes": tfds.features.Tensor(
                        shape=(len(attribute_names),), dtype=np.float32
                    ),
                    **extra_features,
                }
            ),
            metadata=tfds.core.MetadataDict(
                attribute_names=list(attribute_names), encoding=encoding
            ),
            disable_shuffling=True,
            **info,
        )

    def _read_faces(
        self,
        work: Any,
        image_dir: str,
        files: Sequence[str],
        rows: Sequence[int],
        present: set[str],
        load: Callable[[tuple[Any, list[str]]], list[bytes | str]] = _images.load_compressed,
    ) -> Iterator[tuple[int, str, bytes]]:
        """The faces of a split's `rows` (indices into `files`, the images relative to
        `image_dir`) whose file is `present`, decoded by `read_faces` (`work`, `load`) with this
        builder's bad images, workers and metadata.

        Yields:
            `(row, file, face)` for each readable face, in the order of `rows`: the zlib-compressed
            uint8 face.
        """
        rows = [int(r) for r in rows if files[r] in present]
        names = [files[r] for r in rows]
        faces = read_faces(
            work,
            image_dir,
            names,
            bad=self._bad,
            num_workers=self._num_workers,
            metadata=self.info.metadata,
            load=load,
        )
        for i, face in faces:
            yield rows[i], names[i], face


def read_index_file(path: str, *, not_found: str, header: str, fix: str) -> list[str]:
    """The lines of a text index file that starts with two header lines (undecodable bytes
    replaced).

    Raises:
        FileNotFoundError: `not_found`, if there is no such file.
        ValueError: the file has under two lines; the message says what they must be (`header`)
            and how to fix the file (`fix`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(not_found)
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path} has {len(lines)} line(s); it needs {header}. {fix}")
    return lines


def index_rows(
    lines: Sequence[str],
    path: str,
    *,
    num_keys: int,
    num_values: int,
    value: str,
    fix: str,
    sep: str | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """The rows of an attribute file (`read_index_file`'s lines, from line 3; blank lines
    skipped): `num_keys` fields naming the image, then one `value` per attribute name of line 2,
    split at `sep` (None: white space).

    Yields:
        `(line number, fields)` of each row.

    Raises:
        ValueError: a row with another number of values; the message gives the file, the line,
            the row and `fix`.
    """
    separated = ", tab-separated" if sep == "\t" else ""
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split(sep)
        if len(fields) - num_keys != num_values:
            raise ValueError(
                f"{path}, line {lineno}: {len(fields) - num_keys} attribute {value}s for"
                f" {num_values} attribute names (row {fields[0]!r}); every row must give one"
                f" {value} per name of line 2{separated}. {fix}"
            )
        yield lineno, fields


def read_faces(
    work: Any,
    image_dir: str,
    filenames: Sequence[str],
    *,
    bad: BadImages,
    num_workers: int | None,
    metadata: MutableMapping[str, Any],
    load: Callable[[tuple[Any, list[str]]], list[bytes | str]] = _images.load_compressed,
) -> Iterator[tuple[int, bytes]]:
    """Decodes faces, in worker processes for large folders, in order.

    Args:
        work: what `load` does with the images (for `_images.load_compressed`, the default:
            "celeba" or "square"; a builder's own `load` may take another value, e.g. a crop box).
        image_dir: the folder of the images.
        filenames: the images to read (paths relative to `image_dir`), in the order to yield them.
        bad: where an unreadable image goes (skipped within its budget, else an error).
        num_workers: decoding processes (None: one per core for large folders, else none).
        metadata: the builder's `info.metadata`; its "skipped_images" is updated at the end.
        load: the unit of work of a process, a module-level function
            `(work, [path, ...]) -> [zlib-compressed uint8 face, or an error message (str)]`.

    Yields:
        `(i, face)` for each readable `filenames[i]`: the zlib-compressed uint8 face. At the end
        the images skipped here are warned about.
    """
    chunks = [
        (work, [os.path.join(image_dir, name) for name in filenames[i : i + FACE_CHUNK]])
        for i in range(0, len(filenames), FACE_CHUNK)
    ]
    if num_workers is None:
        num_workers = _parallel.default_num_workers(len(filenames))
    skipped_before = len(bad.skipped())
    faces = _parallel.ordered_map(load, chunks, num_workers)
    for i, face in enumerate(faces):
        if isinstance(face, str):
            bad.unreadable(filenames[i], face)
            continue
        yield i, face
    metadata["skipped_images"] = bad.skipped()
    bad.warn_skipped(since=skipped_before, total=len(filenames))


class ZlibTensor(tfds.features.Tensor):
    """`tfds.features.Tensor(..., encoding="zlib")` that also takes bytes compressed elsewhere.

    Prepare-time workers compress their images themselves (`zlib.compress(array.tobytes())`), so
    that the single process writing the records does not spend most of its time in zlib. Arrays
    are accepted too and compressed here, as by the parent class. Reading is the parent's: one
    `zlib.decompress` and a reshape, cheaper than decoding PNG or JPEG.
    """

    def encode_example(self, example_data):
        if isinstance(example_data, bytes):
            return example_data
        return super().encode_example(example_data)


class BadImages:
    """Absent, undecodable or badly sized images met while preparing: skipped up to a budget,
    else an error.

    Every skip is counted, named in a warning and logged; nothing is dropped silently.
    """

    def __init__(self, *, max_bad_images: int, listed_in: str, image_dir: str):
        self._max = max_bad_images
        self._listed_in = listed_in
        self._image_dir = image_dir
        self._skipped: list[str] = []
        self._reasons: list[str] = []

    def _what_to_do(self, count: int) -> str:
        return (
            "Restore the file(s) from the original archive, delete their rows from"
            f" {self._listed_in}, or allow skipping with max_bad_images={max(count, 1)} (they are"
            " then left out with a warning)."
        )

    def check_present(self, filenames, present: set[str]) -> None:
        """Checks up front that every listed image exists; skips the absent ones within budget."""
        missing = [name for name in filenames if name not in present]
        if not missing:
            return
        if len(self._skipped) + len(missing) > self._max:
            raise FileNotFoundError(
                f"{len(missing)} image(s) listed in {self._listed_in} are missing from "
                f"{self._image_dir}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. "
                + self._what_to_do(len(self._skipped) + len(missing))
            )
        for name in missing:
            self._skipped.append(name)
            self._reasons.append("absent")
        warnings.warn(
            f"Skipping {len(missing)} image(s) listed in {self._listed_in} but absent from "
            f"{self._image_dir} (max_bad_images={self._max}): {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}",
            stacklevel=2,
        )

    def unreadable(self, filename: str, reason: str) -> None:
        """Records an undecodable or badly sized image; raises once the budget is exceeded."""
        if len(self._skipped) + 1 > self._max:
            # The class the worker met (its name starts the reason): a size far from the
            # dataset's is a BadImageSizeError, any other an UnreadableImageError.
            error = (_images.BadImageSizeError
                     if reason.startswith(_images.BadImageSizeError.__name__)
                     else UnreadableImageError)
            raise error(
                f"{reason}. The image {filename} (listed in {self._listed_in}) cannot be used. "
                + self._what_to_do(len(self._skipped) + 1)
            )
        self._skipped.append(filename)
        self._reasons.append(reason)
        logging.warning("Skipping unreadable image %s: %s", filename, reason)

    def skipped(self) -> list[str]:
        return list(self._skipped)

    def warn_skipped(self, *, since: int, total: int) -> None:
        """Warns about the images skipped since `since` (one split of `total` listed images)."""
        names = [n for n, r in zip(self._skipped[since:], self._reasons[since:]) if r != "absent"]
        if names:
            warnings.warn(
                f"Skipped {len(names)} unreadable image(s) of {total} (max_bad_images={self._max}):"
                f" {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}",
                stacklevel=2,
            )


def _scan_files(image_dir: str) -> list[tuple[str, str | None, int | None, int | None]]:
    """(name relative to `image_dir`, path, size, mtime_ns) of every file under it, sorted by
    name; a file that cannot be `stat`ed has None for its path, size and time. Raises
    FileNotFoundError or NotADirectoryError when `image_dir` is not a folder.

    Links to folders are followed (a dataset assembled from links), except a link back to a
    folder that contains it (`ln -s . loop`), which would repeat the scan without end: it is
    skipped with a warning.
    """
    files: list[tuple[str, str | None, int | None, int | None]] = []

    def scan(path: str, prefix: str, ancestors: frozenset) -> None:
        st = os.stat(path)
        ancestors = ancestors | {(st.st_dev, st.st_ino)}
        with os.scandir(path) as it:
            for entry in it:
                name = prefix + entry.name
                try:
                    if entry.is_dir():
                        target = entry.stat()
                        if (target.st_dev, target.st_ino) in ancestors:
                            logging.warning("Skipping %s: a link to a folder that contains it.",
                                            entry.path)
                            continue
                        scan(entry.path, name + "/", ancestors)
                        continue
                    st = entry.stat()
                except OSError:  # a dangling link, or removed meanwhile
                    files.append((name, None, None, None))
                    continue
                files.append((name, entry.path, st.st_size, st.st_mtime_ns))

    scan(image_dir, "", frozenset())
    files.sort(key=lambda f: f[0])
    return files


# At most this many folder states' content digests are remembered (the oldest are forgotten).
_MAX_REMEMBERED = 256


def cache_dir() -> str:
    """Where small records that spare work across runs live: $CMMA_JAX_CACHE_DIR, else
    $XDG_CACHE_HOME/cmma_jax, else ~/.cache/cmma_jax."""
    if os.environ.get("CMMA_JAX_CACHE_DIR"):
        return os.environ["CMMA_JAX_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cmma_jax")


def image_content_fingerprint(image_dir: str) -> str:
    """A digest of the name and bytes of every file under `image_dir`, read once per state of
    the folder.

    Reading every file costs seconds (13,233 LFW JPEGs, 117 MB: about 2 s warm), so the digest is
    remembered in `cache_dir()/folder_digests.json` under the folder's path and the names, sizes
    and modification times of its files (only `stat`s: 0.1 s for LFW): the next call with
    nothing changed reads no image. When only modification times change (a copy, a restored
    backup, a folder mounted afresh), the files are read again and give the same digest, so a
    prepared copy named after it is found again instead of being prepared anew. If the record
    cannot be read or written, the digest is computed every time; nothing fails. "absent" or
    "not_a_folder" when `image_dir` is not a folder.
    """
    try:
        files = _scan_files(image_dir)
    except FileNotFoundError:
        return "absent"
    except NotADirectoryError:
        return "not_a_folder"
    state = [os.path.abspath(image_dir)] + [f"{name}:{size}:{mtime}"
                                            for name, _, size, mtime in files]
    key = hashlib.sha1("\n".join(state).encode()).hexdigest()
    record = os.path.join(cache_dir(), "folder_digests.json")
    try:
        with open(record) as f:
            known = json.load(f)
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha1()
    for name, path, _, _ in files:
        digest.update(name.encode() + b"\0")
        data = None
        if path is not None:  # None: the file could not be stat'ed
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                pass
        if data is None:
            digest.update(b"unreadable\0")
        else:
            digest.update(len(data).to_bytes(8, "little") + data)
    result = digest.hexdigest()
    known.pop(key, None)
    known[key] = result
    for old in list(known)[:-_MAX_REMEMBERED]:
        del known[old]
    temporary = None
    try:
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(record), delete=False,
                                         suffix=".tmp") as f:
            temporary = f.name
            json.dump(known, f)
        os.replace(temporary, record)  # atomic: a reader sees the old record or the new one
    except OSError:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
    return result


def file_content_digest(path: str) -> str:
    """sha1 of a file's bytes, "absent" if it cannot be read (index files are a few MB)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).hexdigest()
    except OSError:
        return "absent"


def folder_config_name(
    source_dir: str,
    index_files: tuple[str, ...],
    options: dict,
    image_dir: str | None = None,
) -> str:
    """A config name for a prepared copy of a source folder: its base name and a fingerprint.

    The fingerprint hashes the folder's absolute path, the bytes of its index files (attribute
    and partition files), the names and bytes of every file under `image_dir` (a folder of
    `source_dir`, or a path; `image_content_fingerprint`, which reads them only when a size or
    modification time changed) and the builder options. So a different folder, an edited index
    file, a replaced image or other options are prepared afresh instead of read stale from the
    cache, while the same files with new modification times (a copy, a folder mounted afresh)
    find their prepared copy again.
    """
    source_dir = os.path.abspath(source_dir)
    parts = [source_dir] + [f"{k}={options[k]}" for k in sorted(options)]
    for name in index_files:
        parts.append(f"{name}:{file_content_digest(os.path.join(source_dir, name))}")
    if image_dir is not None:
        parts.append(
            f"images:{image_content_fingerprint(os.path.join(source_dir, image_dir))}"
        )
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]
    base = "".join(c if c.isalnum() else "_" for c in os.path.basename(source_dir.rstrip(os.sep)))[
        :40
    ]
    return f"{base or 'folder'}_{digest}"
