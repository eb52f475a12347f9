"""Sharpness: how much of a face's fine detail a model's reconstructions and faces from attributes
keep, and how far its reconstructions are from the faces.

For each test face x with attributes y:

    reconstruction error   mean over pixels of (g_μ(h_μ(x, y)) - x)²          (lower is closer)
    reconstruction detail  E(g_μ(h_μ(x, y))) / E(x)
    sample detail          E(face generated from y at temperature 0) / E(x)

with E the mean squared Laplacian (`metrics.laplacian_energy`): 1 is as much fine detail as the
real faces, a blurred average face is far below. Temperature 0 (the means of the prior, the
figures' faces) is the face a reader sees; the bounds cannot say whether it is blurred, because a
learnt decoder variance can explain the detail a model does not draw as noise.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import jax
import numpy as np

from cmma_jax import metrics, stats
from cmma_jax.data.reading import Chunk
from cmma_jax.evaluate.common import ProgressFn, call_progress, compiled
from cmma_jax.evaluate.estimator import Context, Estimate, Estimator, fmt
from cmma_jax.evaluate.parzen import per_face_sampler

NUMBERS = ("reconstruction_mse", "reconstruction_detail", "sample_detail")


def sharpness_per_face(model_lib, params, config, chunks: Iterable[Chunk], key, *, encoding: str,
              progress: ProgressFn | None = None, total: int | None = None
              ) -> dict[str, np.ndarray]:
    """Per face: reconstruction error and the detail ratios of the module docstring.

    Args:
      model_lib: a model library with `reconstruct` and `sample` (`cmma_jax.models`).
      params, config: the trained model.
      chunks: `Chunk`s of the split.
      key: the sampling key (temperature 0 does not use it; kept for models that would).
      encoding: the model's attribute encoding.
      progress, total: as `bounds.conditional_bound`.

    Returns:
      {name: `[n]` float64} for each name of `NUMBERS`.
    """
    reconstruct = compiled("reconstruct", model_lib, config, (), lambda: jax.jit(
        lambda p, x, y: model_lib.reconstruct(p, x, y, config=config)))
    sampler = per_face_sampler(model_lib, config, 0.0)
    zero = np.zeros((1,), np.int32)
    out: dict[str, list[np.ndarray]] = {n: [] for n in NUMBERS}
    done = 0
    for chunk in chunks:
        n = chunk.num_valid
        x = chunk.images[:n].astype(np.float64)
        y = chunk.attributes(encoding)
        recon = np.asarray(reconstruct(params, chunk.images, y), np.float64)[:n]
        faces = np.asarray(sampler(params, y, chunk.indices, zero, key), np.float64)[:n, 0]
        real = metrics.laplacian_energy(x)
        out["reconstruction_mse"].append(np.mean(np.square(recon - x), axis=(1, 2, 3)))
        out["reconstruction_detail"].append(metrics.laplacian_energy(recon) / real)
        out["sample_detail"].append(metrics.laplacian_energy(faces) / real)
        done += n
        call_progress(progress, done, total or done)
    return {k: np.concatenate(v) for k, v in out.items()}


# The registry's entry (cmma_jax.evaluate.registry)


def _estimate(ctx: Context) -> Estimate:
    s, m = ctx.settings, ctx.model
    chunks = ctx.reader(s.split, s.num_test, s.batch_size)
    per_face = sharpness_per_face(m.model_lib, m.params, m.config, chunks, ctx.key, encoding=m.encoding,
                         progress=ctx.progress("sharpness", chunks.num_examples),
                         total=chunks.num_examples)
    summary: dict[str, Any] = {}
    for name, values in per_face.items():
        ms = stats.mean_stderr(values)
        summary[name], summary[name + "_stderr"] = ms["mean"], ms["stderr"]
    summary["num_images"] = int(len(per_face["reconstruction_mse"]))
    return Estimate(summary, per_face=per_face)


def _cell(name: str, digits: int):
    return lambda m: fmt(m.get("sharpness"), name, name + "_stderr", digits)


def _numbers(summary: Mapping[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    return {n: (summary.get(n), summary.get(n + "_stderr")) for n in NUMBERS}


SHARPNESS = Estimator(
    name="sharpness", requires="reconstruct", estimate=_estimate,
    columns=lambda _: [("reconstruction MSE", _cell("reconstruction_mse", 4)),
                       ("reconstruction detail", _cell("reconstruction_detail", 2)),
                       ("detail, faces from attributes", _cell("sample_detail", 2))],
    numbers=_numbers,
    label={"reconstruction_mse": ("reconstruction MSE", 4),
           "reconstruction_detail": ("reconstruction detail", 2),
           "sample_detail": ("detail, faces from attributes", 2)}.get,
    describe=lambda s: (f"sharpness: {s['num_test'] or 'all'} faces, reconstructions and faces "
                        "from attributes at temperature 0, detail = mean squared Laplacian "
                        "relative to the real face's"))
