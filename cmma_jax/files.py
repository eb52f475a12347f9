"""Results written whole or not at all.

Every record the project writes beside a run (results.json, report.md, reproduce.json,
stopped.json, config.json, ...) goes through `write_text`/`write_json`/`write_npz`: the bytes go to
a temporary file in the same folder, which replaces the target only once it is complete. A full
disk or a kill mid-write leaves the previous file as it was (and no temporary file), never a
truncated one that a later run cannot parse.

A bottom layer: standard library and numpy only.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Any, Iterator, Mapping

import numpy as np


@contextlib.contextmanager
def _replacing(path: str, mode: str) -> Iterator[Any]:
    """A file object to write; on success it replaces `path` (atomically), on failure it is
    removed and `path` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    # Mode 0666 less the umask, as for any new file (mkstemp's would be private, 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> str:
    """Writes `text` to `path` whole or not at all; returns `path`."""
    with _replacing(path, "w") as f:
        f.write(text)
    return path


def write_json(path: str, value: Any, **dump_options) -> str:
    """`json.dump(value)` to `path`, whole or not at all (indent 2 unless told); returns `path`.
    The value is serialised before anything is written, so an unserialisable value leaves
    `path` as it was."""
    dump_options.setdefault("indent", 2)
    return write_text(path, json.dumps(value, **dump_options))


def write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> str:
    """`np.savez(path, **arrays)`, whole or not at all; returns `path`."""
    with _replacing(path, "wb") as f:
        # numpy's stubs read any keyword as its own `allow_pickle` flag.
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


class OutputDirError(ValueError):
    """An output folder that cannot be written (a file is in the way, no permission)."""


def ensure_writable_dir(path: str, what: str = "the output folder") -> str:
    """Checks, before any work whose results would go to `path`, that they can be written
    there: `path` is a writable folder, or does not exist yet and its nearest existing parent is
    one. Nothing is created (a run refused later for another reason leaves nothing behind).
    Returns `path`.

    Raises:
      OutputDirError: naming `what`, the path and the problem.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputDirError(f"{what} {path} is a file, not a folder: choose another path or "
                             "move the file away. Nothing was computed.")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputDirError(f"{what} {path} cannot be made: {existing} is a file. Choose "
                             "another path. Nothing was computed.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"{what} {path} cannot be written ({existing} is not writable): "
                             "choose another path or fix its permissions. Nothing was computed.")
    return path


__all__ = ["write_text", "write_json", "write_npz", "OutputDirError", "ensure_writable_dir"]
