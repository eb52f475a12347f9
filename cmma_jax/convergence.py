"""The convergence rule: stop training when a validation metric has stopped improving, and keep
the best checkpoint.

The trainer (`cmma_jax.train.fit`) applies it when `training.stop_patience` is set: every time the
validation hook reports `training.stop_metric` (the validation bound `val_elbo` of the CMMA and the
CVAE by default; higher is better), the rule compares it with the best value so far. A value above
the best by more than `training.stop_min_delta` is an improvement: its state is saved as the best
checkpoint (`<workdir>/best/`, one checkpoint, verified like the others). After `stop_patience`
evaluations in a row without an improvement the run stops; otherwise it stops at
`training.num_steps` (the budget). Either way `<workdir>/stopped.json` says which rule stopped it, at
which step and epoch, and which step was best; `metrics.jsonl` has the same in its last row.

The rule's state is never saved: it is replayed from the rows of `metrics.jsonl` that a resumed run
keeps (those up to its checkpoint), so a run resumed after a kill stops where an uninterrupted run
stops, and rerunning a converged run trains nothing.

Without `stop_patience` (the paper's protocol, and the default) nothing changes: the run trains
`num_steps` steps, and loaders read the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Any, Iterable, Mapping, Optional

from cmma_jax import checkpoints, files

BEST_DIR = "best"
STOPPED_FILE = "stopped.json"

# Why a run stopped (`stopped.json`'s "rule").
CONVERGED = "converged"
BUDGET = "budget"


@dataclasses.dataclass
class Convergence:
    """The state of the rule: the best value of `metric` so far and how many evaluations since.

    Attributes:
      metric: the scalar the validation hook reports (higher is better).
      patience: evaluations in a row without an improvement that stop the run (>= 1).
      min_delta: how much (in the metric's units, nats for a bound) a value must exceed the best
        by to count as an improvement (>= 0).
      every: the steps between evaluations (every process knows when one is due).
      best, best_step: the best value and its step (None before the first evaluation).
      stale: evaluations since the best one.
    """

    metric: str
    patience: int
    min_delta: float
    every: int
    best: Optional[float] = None
    best_step: Optional[int] = None
    stale: int = 0

    def __post_init__(self):
        if int(self.patience) < 1:
            raise ValueError(f"training.stop_patience must be at least 1, got {self.patience}.")
        if not (math.isfinite(float(self.min_delta)) and float(self.min_delta) >= 0):
            raise ValueError("training.stop_min_delta must be a finite number >= 0 (nats), got "
                             f"{self.min_delta}.")
        if int(self.every) < 1:
            raise ValueError(f"training.eval_every must be positive, got {self.every}.")

    @classmethod
    def from_config(cls, training) -> Optional["Convergence"]:
        """The rule of a config's `training` section, or None when `stop_patience` is unset/0."""
        patience = training.get("stop_patience")
        if not patience:
            return None
        every = training.get("eval_every") or training.get("sample_every")
        return cls(metric=str(training.get("stop_metric") or "val_elbo"), patience=int(patience),
                   min_delta=float(training.get("stop_min_delta") or 0.0), every=int(every))

    def observe(self, step: int, value: float) -> bool:
        """Takes the metric's value at `step`; True if it improves on the best."""
        value = float(value)
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_step, self.stale = value, int(step), 0
            return True
        self.stale += 1
        return False

    @property
    def converged(self) -> bool:
        """Whether `patience` evaluations in a row have not improved on the best."""
        return self.stale >= self.patience

    def replay(self, rows: Iterable[Mapping[str, Any]]) -> "Convergence":
        """Observes the metric in `rows` (metrics.jsonl's, in order); returns self."""
        for row in rows:
            if self.metric in row:
                self.observe(int(row["step"]), row[self.metric])
        return self

    def record(self, rule: str, step: int, epoch: float) -> dict[str, Any]:
        """What `stopped.json` holds."""
        return {"rule": rule, "step": int(step), "epoch": round(float(epoch), 4),
                "best_step": self.best_step, "best": self.best, "metric": self.metric,
                "patience": self.patience, "min_delta": self.min_delta,
                "evaluations_since_best": self.stale}


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The rows of `<workdir>/metrics.jsonl` (none if it does not exist); lines cut by a kill
    are skipped."""
    path = os.path.join(workdir, "metrics.jsonl")
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows


def best_workdir(workdir: str) -> str:
    """Where the best checkpoint lives: `<workdir>/best`, laid out as a workdir of its own
    (`best/checkpoints/<step>/`, `best/checkpoint_hashes.json`), so that `cmma_jax.checkpoints`
    saves, verifies and restores it as any other."""
    return os.path.join(workdir, BEST_DIR)


def forget_best_after(workdir: str, step: int) -> None:
    """Removes a best checkpoint newer than `step` (a resumed run replays those steps and saves
    it again when the replayed evaluation finds it best again)."""
    best = best_workdir(workdir)
    latest = checkpoints.latest_step(best)
    if latest is not None and latest > step:
        shutil.rmtree(checkpoints.step_directory(best, latest))


def write_stopped(workdir: str, record: Mapping[str, Any]) -> None:
    """Writes `stopped.json` atomically."""
    files.write_json(os.path.join(workdir, STOPPED_FILE), dict(record), indent=1)


def read_stopped(workdir: str) -> Optional[dict[str, Any]]:
    """`stopped.json` of a workdir, or None."""
    path = os.path.join(workdir, STOPPED_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


__all__ = ["BEST_DIR", "STOPPED_FILE", "CONVERGED", "BUDGET", "Convergence", "read_metrics",
           "best_workdir", "forget_best_after", "write_stopped", "read_stopped"]
