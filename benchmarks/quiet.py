"""Was the machine quiet while we measured? Load and the neighbours' share of the CPUs.

Speed on a shared 2-core VM says as much about the neighbours as about the code (issue #22: the
same JAX-vs-PyTorch comparison gave 0.81x quiet and 1.31x beside a training). Every benchmark
therefore records, around each measurement, the 1-minute load average and the share of the
machine's CPU time that other processes used (from /proc/stat, less this process's own CPU time),
and marks the measurement busy when the neighbours took more than `BUSY_SHARE` of the CPUs (the
load average counts the benchmark's own threads too, so it decides only where /proc/stat cannot
be read: busy at `BUSY_LOAD` or more before the measurement). RESULTS.md reports quiet runs; busy
ones only beside them, as such.

    with quiet.Monitor() as m:
        ... measure ...
    record.update(m.summary())   # load_before, load_after, neighbours_cpu_share, busy
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

BUSY_LOAD = 1.5  # the 1-minute load average before a measurement (without /proc/stat only)
BUSY_SHARE = 0.10  # of all CPUs, used by other processes during the measurement


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used (user + nice + system + irq + softirq + steal)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> float:
    return os.getloadavg()[0]


class Monitor:
    """A context manager: load before and after, and the neighbours' CPU share in between."""

    def __enter__(self) -> "Monitor":
        self.load_before = load_average()
        self._machine = _machine_busy_seconds()
        self._own = _own_seconds()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.load_after = load_average()
        wall = time.perf_counter() - self._wall
        machine = _machine_busy_seconds()
        own = _own_seconds() - self._own
        if machine is None or self._machine is None or wall <= 0:
            self.neighbours_share = None
        else:
            other = max(0.0, (machine - self._machine) - own)
            self.neighbours_share = other / (wall * (os.cpu_count() or 1))

    def busy(self) -> bool:
        if self.neighbours_share is None:
            return self.load_before >= BUSY_LOAD
        return self.neighbours_share > BUSY_SHARE

    def summary(self) -> dict[str, Any]:
        return {"load_before": round(self.load_before, 2), "load_after": round(self.load_after, 2),
                "neighbours_cpu_share": None if self.neighbours_share is None
                else round(self.neighbours_share, 3), "busy": self.busy()}


def describe(records) -> str:
    """A line under a table: quiet, or which rows were busy and how busy (records made without
    a `Monitor`: said so)."""
    records = [r for r in records if "load_before" in r]
    if not records:
        return "The machine's load was not recorded for these measurements."
    busy = [r for r in records if r.get("busy")]
    if not busy:
        shares = [r["neighbours_cpu_share"] for r in records
                  if r.get("neighbours_cpu_share") is not None]
        return ("Quiet: other processes used at most "
                f"{100 * max(shares, default=0):.1f}% of the CPUs during the measurements "
                f"(load average before them up to {max(r['load_before'] for r in records):.1f}, "
                "the benchmark's own threads included).")
    worst = max(busy, key=lambda r: r.get("neighbours_cpu_share") or 0)
    return (f"BUSY MACHINE: {len(busy)} of {len(records)} measurements had neighbours (load "
            f"before up to {max(r['load_before'] for r in busy):.1f}, other processes up to "
            f"{100 * (worst.get('neighbours_cpu_share') or 0):.0f}% of the CPUs); compare only "
            "ratios taken in this run, and not with quiet runs.")
