"""The Parzen-window conditional log-likelihood (the CMMA paper's Table 3), with σ chosen on
validation faces."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np

from cmma_jax import metrics
from cmma_jax.data.reading import Chunk
from cmma_jax.evaluate.common import Array, ProgressFn, call_progress, compiled, summarize
from cmma_jax.evaluate.estimator import DIM, Context, Estimate, Estimator, fmt


def per_face_sampler(model_lib, config, temperature: float):
    """A jitted `(params, attributes [b, A], indices [b], sample_ids [s], key) -> [b, s, ...]`:
    sample s of face i from `fold_in(fold_in(key, i), s)`, each face through the model alone."""

    def build():
        def one(p, y, i, s, base_key):
            k = jax.random.fold_in(jax.random.fold_in(base_key, i), s)
            return model_lib.sample(p, y[None], k, temperature, config=config)[0]

        over_samples = jax.vmap(one, in_axes=(None, None, None, 0, None))
        return jax.jit(jax.vmap(over_samples, in_axes=(None, 0, 0, None, None)))

    return compiled("sample", model_lib, config, (float(temperature),), build)


def parzen_log_likelihoods(model_lib, params, config, chunks: Iterable[Chunk], key: Array, *,
                           num_samples: int, sigmas: Sequence[float], temperature: float = 1.0,
                           sample_chunk: int = 50, progress: ProgressFn | None = None,
                           total: int | None = None) -> np.ndarray:
    """Parzen-window conditional log-likelihoods of each face for a grid of σ.

    For face i with attributes y_i, S faces are generated from y_i (`model_lib.sample` at
    `temperature`; sample s from the key `fold_in(fold_in(key, i), s)`), and

        log p̂(x_i | y_i) = log (1/S) Σ_s N(x_i; x̂_{i,s}, σ² I)

    (`metrics.parzen_log_likelihood_from_fn`, chunk by chunk: at most `chunk.size ×
    sample_chunk` generated faces exist at a time).

    Args:
      model_lib: a model library (a module of `cmma_jax.models`) with `sample(params, attributes, key, temperature, *, config)`.
      params, config: the trained model.
      chunks: `Chunk`s of the split (their size is the number of faces per call).
      key: the base key.
      num_samples: S.
      sigmas: the σ grid, `[K]`.
      temperature: the prior noise scale of the generated faces.
      sample_chunk: generated faces per face per call.
      progress, total: as `conditional_bound`.

    Returns:
      `[K, N]` float64, nats per face for each σ.
    """
    sample_chunk = max(1, min(int(sample_chunk), int(num_samples)))
    encoding = config.data.attribute_encoding
    sampler = per_face_sampler(model_lib, config, float(temperature))
    rows, done = [], 0
    for chunk in chunks:
        attributes = chunk.attributes(encoding)
        indices = chunk.indices

        def sample_fn(b_slice, s_slice, attributes=attributes, indices=indices):
            # Always the full chunk of faces and a full chunk of samples (one compiled shape);
            # the rows and samples asked for are sliced out.
            ids = np.arange(s_slice.start, s_slice.start + sample_chunk, dtype=np.int32)
            out = sampler(params, attributes, indices, ids, key)
            return out[b_slice, : s_slice.stop - s_slice.start]

        def chunk_progress(d, t, before=done, n=chunk.num_valid):
            call_progress(progress, before + n * d / t, total or before + n)

        ll = metrics.parzen_log_likelihood_from_fn(
            chunk.images[: chunk.num_valid], sample_fn, int(num_samples), list(sigmas),
            shared=False, test_chunk=chunk.size, sample_chunk=sample_chunk,
            progress=chunk_progress)
        rows.append(np.asarray(ll, np.float64))
        done += chunk.num_valid
    return np.concatenate(rows, axis=1)


def select_parzen_sigma(model_lib, params, config, chunks: Iterable[Chunk], key: Array, *,
                        num_samples: int, sigmas: Sequence[float], **kwargs
                        ) -> tuple[float, np.ndarray]:
    """Chooses σ on validation faces: the σ of the grid with the highest mean log-likelihood.

    Args: as `parzen_log_likelihoods` (the chunks of the validation split).

    Returns:
      `(best_sigma, mean_log_likelihoods)`: a float, and `[K]` the mean over the faces per σ.
    """
    ll = parzen_log_likelihoods(model_lib, params, config, chunks, key, num_samples=num_samples,
                                sigmas=sigmas, **kwargs)
    return metrics.best_sigma(sigmas, ll)


# The registry's entry (cmma_jax.evaluate.registry)


def _parzen_estimate(ctx: Context) -> Estimate:
    s, m = ctx.settings, ctx.model
    common_args = dict(num_samples=s.parzen_samples, temperature=s.parzen_temperature,
                       sample_chunk=s.parzen_sample_chunk)
    val = ctx.reader(s.validation_split, s.parzen_num_validation, s.parzen_batch)
    sigma, grid = select_parzen_sigma(
        m.model_lib, m.params, m.config, val, jax.random.fold_in(ctx.key, 0),
        sigmas=s.parzen_sigmas, progress=ctx.progress("Parzen sigma on validation",
                                                      val.num_examples),
        total=val.num_examples, **common_args)
    test = ctx.reader(s.split, s.parzen_num_test, s.parzen_batch)
    ll = parzen_log_likelihoods(
        m.model_lib, m.params, m.config, test, jax.random.fold_in(ctx.key, 1), sigmas=[sigma],
        progress=ctx.progress("Parzen test", test.num_examples), total=test.num_examples,
        **common_args)[0]
    at_edge = sigma in (min(s.parzen_sigmas), max(s.parzen_sigmas))
    notes = [f"{m.name}: the Parzen σ chosen ({sigma:g}) is at the edge of the grid; widen "
             "--parzen_sigmas."] if at_edge else []
    return Estimate({**summarize(ll, DIM), "sigma": sigma, "sigma_at_grid_edge": bool(at_edge),
                     "validation_mean_by_sigma": {f"{x:g}": float(v) for x, v in
                                                  zip(s.parzen_sigmas, grid)},
                     "num_validation": val.num_examples, "num_samples": s.parzen_samples},
                    per_face={"parzen": ll}, notes=notes)


def _sigma_cell(m: Mapping[str, Any]) -> str:
    p = m.get("parzen")
    if not p:
        return "–"
    return f"{p['sigma']:g}" + (" (grid edge)" if p.get("sigma_at_grid_edge") else "")


PARZEN = Estimator(
    name="parzen", requires="sample", estimate=_parzen_estimate,
    columns=lambda _: [("Parzen (nats)", lambda m: fmt(m.get("parzen"))),
                       ("Parzen σ", _sigma_cell)],
    numbers=lambda p: {"parzen": (p.get("nats"), p.get("stderr")),
                       "parzen_sigma": (p.get("sigma"), None)},
    label={"parzen": ("Parzen (nats)", 0), "parzen_sigma": ("Parzen σ", 3)}.get,
    describe=lambda s: (f"Parzen: {s['parzen_num_test'] or 'all'} test faces, "
                        f"{s['parzen_num_validation'] or 'all'} validation faces, "
                        f"{s['parzen_samples']} generated faces each at temperature "
                        f"{s['parzen_temperature']:g}, σ grid "
                        f"{', '.join(f'{x:g}' for x in s['parzen_sigmas'])}"))
