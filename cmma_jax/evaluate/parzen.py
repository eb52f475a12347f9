"""The Parzen-window conditional log-likelihood (the CMMA paper's Table 3), with σ chosen on
validation faces."""

from __future__ import annotations

from typing import Iterable, Sequence

import jax
import numpy as np

from cmma_jax import metrics
from cmma_jax.data.reading import Chunk
from cmma_jax.evaluate.common import Array, ProgressFn, call_progress, compiled


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
