"""The workdir's records: the settings and every command run on it (reproduce.json, merged with a
rerun's settings by `_merge_settings`), and the seconds per stage (timings.json), each read,
changed and written under one lock."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import os
import socket
import time
from typing import Any, Iterator, Sequence

from cmma_jax.reproduce.layout import _read_json, _write_json
from cmma_jax.reproduce.settings import (SETTINGS_FILE, TIMINGS_FILE, ReproduceSettings,
                                         settings_differences)


def _merge_settings(workdir: str, settings: ReproduceSettings
                    ) -> tuple[dict[str, Any], ReproduceSettings]:
    """Checks the settings against reproduce.json and merges the seeds and models of earlier runs.

    Returns the record (not yet written) and the settings of the whole workdir."""
    path = os.path.join(workdir, SETTINGS_FILE)
    record = _read_json(path)
    if record is None:
        return {"runs": []}, settings
    diff = settings_differences(record["settings"], settings.to_dict())
    if diff:
        raise ValueError(
            f"{workdir} holds a run with other settings ({path}); they differ in "
            + "; ".join(diff) + ". Use another --workdir, or the same settings (seeds and "
            "models may be added; training.num_steps and classifier_steps may be raised).")
    old = record["settings"]
    seeds = tuple(dict.fromkeys([*old["seeds"], *settings.seeds]))
    models = tuple(dict.fromkeys([*old["models"], *settings.models]))
    return record, dataclasses.replace(settings, seeds=seeds, models=models)


@contextlib.contextmanager
def _records_lock(workdir: str) -> Iterator[None]:
    """Holds `<workdir>/.records.lock` while reproduce.json or timings.json is read, changed and
    written, so that two reproductions on one workdir (one training, one evaluating) keep every
    record. Held for milliseconds; the OS releases it when the process ends."""
    with open(os.path.join(workdir, ".records.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _record_run(workdir: str, record: dict[str, Any], settings: ReproduceSettings,
                command: str | None, stages: Sequence[str]) -> str:
    """Appends this run to reproduce.json (read again under the lock: another reproduction may
    have added its own run meanwhile); returns the run's id."""
    run_id = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    path = os.path.join(workdir, SETTINGS_FILE)
    with _records_lock(workdir):
        stored = _read_json(path) or {"runs": []}
        stored["settings"] = settings.to_dict()
        stored["runs"].append({"command": command, "stages": list(stages),
                               "date": datetime.datetime.now().isoformat(timespec="seconds"),
                               "host": socket.gethostname(), "seconds": None, "id": run_id})
        _write_json(path, stored)
    record.clear()
    record.update(stored)
    return run_id


def _finish_run(workdir: str, run_id: str, seconds: float) -> dict[str, Any]:
    """Records this run's seconds in reproduce.json (under the lock); returns the record."""
    path = os.path.join(workdir, SETTINGS_FILE)
    with _records_lock(workdir):
        stored = _read_json(path) or {"runs": []}
        for run in stored["runs"]:
            if run.get("id") == run_id:
                run["seconds"] = seconds
        _write_json(path, stored)
    return stored


class _Timings:
    """Seconds per stage, summed over the runs that worked on it (timings.json)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, TIMINGS_FILE)

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            # Read again under the lock: another reproduction may have added its seconds.
            with _records_lock(self.workdir):
                values = _read_json(self.path, {})
                values[name] = values.get(name, 0.0) + time.perf_counter() - start
                _write_json(self.path, values)
