"""What the estimators share: per-face inputs, the cache of compiled per-face functions, the
progress callback, and the summaries of per-face values (nats, bits/dim, standard errors)."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np

from cmma_jax import stats

Array = jax.Array
ProgressFn = Callable[[float, float], None]

LN2 = math.log(2.0)


def call_progress(progress: ProgressFn | None, done: float, total: float) -> None:
    if progress is not None:
        progress(done, total)


def bits_per_dim(nats_per_image: float | np.ndarray, dim: int) -> float | np.ndarray:
    """A log-density in nats per image as bits per dimension: `-nats / (dim · ln 2)`.

    The sign flips: a log-likelihood (higher is better) becomes a code length (lower is better).
    `dim` is the number of values per image (12,288 for 64×64×3).
    """
    return -np.asarray(nats_per_image, np.float64) / (dim * LN2)


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def summarize(values: np.ndarray, dim: int | None = None) -> dict[str, float]:
    """Mean, standard error and count of per-face values (nats); with `dim`, bits/dim too."""
    v = np.asarray(values, np.float64)
    n = int(v.size)
    out = {"nats": float(np.mean(v)),
           "stderr": nan_if_none(stats.standard_error(v)),
           "num_images": n}
    if dim is not None:
        out["bits_per_dim"] = float(bits_per_dim(out["nats"], dim))
        out["bits_per_dim_stderr"] = out["stderr"] / (dim * LN2)
    return out


def single_face(batch_x, batch_y):
    return {"image": batch_x[None], "attributes": batch_y[None]}


# Jitted per-face functions, kept per (kind, model library, config, static settings), so that a
# second estimator (or a second split) on the same model reuses the compiled code. The config is
# kept alive with its entry, so its id cannot be reused by another object.
_COMPILED: dict[tuple, tuple[Any, Callable]] = {}


def compiled(kind: str, model_lib, config, static: tuple, build: Callable[[], Callable]):
    key = (kind, id(model_lib), id(config), static)
    hit = _COMPILED.get(key)
    if hit is None or hit[0] is not config:
        hit = (config, build())
        _COMPILED[key] = hit
    return hit[1]
