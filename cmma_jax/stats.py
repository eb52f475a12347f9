"""The summary every report shares: a mean with its standard error.

One definition for the whole project (evaluation, ground truth, reproduction, scripts): the
standard error of a mean is the sample standard deviation (ddof 1) over √n, and it does not exist
for fewer than two values; `standard_error` says so with None, which JSON writes as null.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np


def standard_error(values: Iterable[float] | np.ndarray) -> float | None:
    """Standard error of the mean of `values`: std (ddof=1) / √n; None for fewer than two."""
    v = np.asarray(values, np.float64).ravel()
    n = int(v.size)
    return float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else None


def mean_stderr(values: Iterable[float | None]) -> dict[str, Any]:
    """{"mean", "stderr", "n"} of the values that are not None (mean None when there are none)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    n = int(v.size)
    return {"mean": float(v.mean()) if n else None, "stderr": standard_error(v), "n": n}
