"""One progress display for every long job: training steps, estimators, dataset reads.

A bottom layer: it imports nothing of `cmma_jax`. On a terminal it is a `tqdm` bar (tqdm comes with
tensorflow-datasets); elsewhere (logs, CI, a pipe) it prints plain lines, at most one every
`interval` seconds and always the last, since a bar redrawn with carriage returns is unreadable
in a log file:

    progress = Progress("train", total=3000, initial=1200, unit="step")
    progress.update(1250, loss=1234.5, steps_per_sec=3.1)   # absolute position, shown values
    progress.close()

An instance is also the callback `progress(done, total)` that the estimators of
`cmma_jax.evaluate` take.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO

import tqdm


def format_seconds(seconds: float) -> str:
    """`h:mm:ss`."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Progress of one job towards `total`, on `stream`.

    Args:
      label: what is progressing ("train", "[cmma] bound").
      total: the end position (updated by `__call__` if a caller passes another).
      initial: the start position (a resumed run starts past 0); the ETA counts from here.
      unit: the word before the count ("step": "train: step 5/10 ..."); none by default.
      interval: plain-line mode: seconds between lines (0: a line at every update).
      enabled: False shows nothing (processes other than 0 of a multi-host run, quiet flags).
      stream: where to write (default stderr). A bar is drawn only when it is a terminal.
    """

    def __init__(self, label: str, total: float, *, initial: float = 0, unit: str = "",
                 interval: float = 10.0, enabled: bool = True, stream: IO[str] | None = None):
        self.label, self.total, self.initial, self.unit = label, total, initial, unit
        self.interval, self.enabled = interval, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.calls = 0
        self._t0 = time.perf_counter()
        self._last_line = -math.inf
        self._bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            self._bar = tqdm.tqdm(total=total, initial=initial, desc=label, file=self.stream,
                                  dynamic_ncols=True, leave=True)

    def update(self, done: float, **shown) -> None:
        """Moves to position `done`, showing `shown` (name=value) beside the count."""
        self.calls += 1
        if not self.enabled:
            return
        text = " ".join(f"{k}={_format_value(v)}" for k, v in shown.items())
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            if text:
                self._bar.set_postfix_str(text, refresh=False)
            self._bar.refresh()
            return
        now = time.perf_counter()
        if done < self.total and now - self._last_line < self.interval:
            return
        self._last_line = now
        elapsed = now - self._t0
        rate = (done - self.initial) / max(elapsed, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else math.inf
        pct = 100.0 * done / self.total if self.total else 100.0
        eta_text = format_seconds(eta) if math.isfinite(eta) else "?"
        count = f"{self.unit} " if self.unit else ""
        self.stream.write(f"{self.label}: {count}{done:.0f}/{self.total:.0f} ({pct:.0f}%) "
                          + (f"{text} " if text else "")
                          + f"elapsed {format_seconds(elapsed)} ETA {eta_text}\n")
        self.stream.flush()

    def __call__(self, done: float, total: float) -> None:
        """The estimators' callback: `done` of `total`."""
        if total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        self.update(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
