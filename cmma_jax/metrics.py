"""Estimators for evaluation: the Parzen-window log-likelihood of the CMMA paper's Table 3, and the
scores of attribute fidelity (per-attribute accuracy and ROC AUC of a classifier's outputs).

A Parzen window (kernel density estimate) with an isotropic Gaussian kernel fitted to S samples of a
model estimates the model's density at test points:

    log p̂(x) = log (1/S) Σ_s N(x; s, σ² I)
             = logsumexp_s( -‖x - s‖² / (2σ²) ) - log S - (D/2) log(2πσ²)

with D the number of values per test point (12,288 for a 64×64×3 face). The estimate is computed
in chunks of test points and of samples, with a running logsumexp, so memory stays bounded whatever
the number of test points and samples: at the paper's scale (about 2,000 test faces, 1,000 or more
samples each, a grid of σ) only one chunk of each lives on the device at a time. Samples can even be
generated chunk by chunk (`parzen_log_likelihood_from_fn`), which the conditional protocol needs:
2,000 × 1,000 faces of 12,288 float32 values would take 98 GB.

References:
  Parzen (1962), "On Estimation of a Probability Density Function and Mode"; Breuleux, Bengio &
  Vincent (2011), "Quickly Generating Representative Samples from an RBM-Derived Process"
  (the protocol used by GAN and CMMA papers); Theis, van den Oord & Bethge (2016), "A note on the
  evaluation of generative models" (why the estimate should be read with care).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Literal, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
ArrayT = TypeVar("ArrayT", np.ndarray, jax.Array)

__all__ = [
    "parzen_log_likelihood",
    "parzen_log_likelihood_from_fn",
    "select_parzen_sigma",
    "best_sigma",
    "average_ranks",
    "roc_auc",
    "attribute_auc",
    "attribute_accuracy",
    "laplacian_energy",
    "pad_rows",
]

# Chunks are sized so that no chunk of test points or samples holds more than this many float32
# values (64 MiB): for 64x64x3 faces, 256 samples per chunk, and 5 test points per chunk when each
# has its own samples. Both sizes can be set explicitly.
MAX_CHUNK_VALUES = 2**24
DEFAULT_SAMPLE_CHUNK = 256


def _chunk_sizes(num_test: int, num_samples: int, dim: int, shared: bool,
                 test_chunk: int | None, sample_chunk: int | None) -> tuple[int, int]:
    if sample_chunk is None:
        sample_chunk = max(1, min(DEFAULT_SAMPLE_CHUNK, MAX_CHUNK_VALUES // dim))
    sample_chunk = max(1, min(int(sample_chunk), num_samples))
    if test_chunk is None:
        per_test = dim * (1 if shared else sample_chunk)
        test_chunk = max(1, min(256, MAX_CHUNK_VALUES // per_test))
    test_chunk = max(1, min(int(test_chunk), num_test))
    return test_chunk, sample_chunk


def _as_sigmas(sigmas: ArrayLike | Sequence[float]) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim > 1 or s.size == 0:
        raise ValueError(f"sigma must be a positive scalar or a non-empty 1-D sequence, got shape "
                         f"{s.shape}.")
    s = np.atleast_1d(s)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"Every Parzen sigma must be finite and positive, got {s.tolist()}.")
    return s


@functools.partial(jax.jit, static_argnames=("shared",))
def _chunk_logsumexp(x: Array, samples: Array, valid: Array, inv_two_var: Array,
                     *, shared: bool) -> Array:
    """logsumexp over one chunk of samples of -‖x - s‖² / (2σ²), for every σ at once.

    Args:
      x: `[b, D]` test points.
      samples: `[s, D]` (shared) or `[b, s, D]` (one set per test point).
      valid: `[s]` bool, False for padding.
      inv_two_var: `[K]`, 1 / (2σ²) for each σ of the grid.

    Returns:
      `[K, b]`.
    """
    x = x.astype(jnp.float32)
    samples = samples.astype(jnp.float32)
    if shared:
        # ‖x - s‖² = ‖x‖² + ‖s‖² - 2 x·s as one matmul. Centring both sides on the chunk's mean
        # first shrinks the norms, and so the rounding error of the expansion, several-fold.
        centre = jnp.mean(samples, axis=0, keepdims=True)
        xc, sc = x - centre, samples - centre
        cross = jnp.matmul(xc, sc.T, precision=jax.lax.Precision.HIGHEST)  # [b, s]
        d2 = (jnp.sum(jnp.square(xc), -1)[:, None] + jnp.sum(jnp.square(sc), -1)[None, :]
              - 2.0 * cross)
        d2 = jnp.maximum(d2, 0.0)  # the expansion can round below zero
    else:
        # One set of samples per test point: a batched difference is exact and costs no more
        # than the expansion would (there is no shared matmul to exploit).
        d2 = jnp.sum(jnp.square(samples - x[:, None, :]), axis=-1)  # [b, s]
    log_k = -d2[None, :, :] * inv_two_var[:, None, None]  # [K, b, s]
    log_k = jnp.where(valid[None, None, :], log_k, -jnp.inf)
    # logsumexp, not log(sum(exp)): for small σ every exp underflows to 0 in float32.
    return jax.nn.logsumexp(log_k, axis=-1)


def pad_rows(a: ArrayT, size: int, axis: int = 0, *, repeat_last: bool = True) -> ArrayT:
    """`a` padded to `size` rows along `axis`, so that a jitted function sees one shape whatever
    the length of the last chunk or batch; the callers drop the results of the padding rows.

    The rows added repeat the last one (`repeat_last`, so that they are valid inputs such as real
    faces), or are zeros. A numpy array stays numpy, a jax array jax; `a` itself when it has
    `size` rows or more. The one padding of a last batch in the package: the Parzen chunks here,
    the evaluation's chunks of a split (`cmma_jax.data.reading`), the ground truth's batches.
    """
    pad = size - a.shape[axis]
    if pad <= 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, pad)
    mode: Literal["edge", "constant"] = "edge" if repeat_last else "constant"
    if isinstance(a, np.ndarray):
        return np.pad(a, widths, mode=mode)
    return jnp.pad(a, widths, mode=mode)


def parzen_log_likelihood_from_fn(
    x: ArrayLike,
    sample_fn: Callable[[slice | None, slice], ArrayLike],
    num_samples: int,
    sigmas: ArrayLike | Sequence[float],
    *,
    shared: bool,
    test_chunk: int | None = None,
    sample_chunk: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Array:
    """Parzen-window log-likelihoods for a grid of σ, with samples produced chunk by chunk.

    The core of `parzen_log_likelihood`, for samples that should not (or cannot) be held in memory
    at once, such as faces generated for each test point from its own attributes.

    Args:
      x: test points, `[B, ...]`.
      sample_fn: returns the samples for a chunk. With `shared=True`, `sample_fn(None, s_slice)`
        returns `[len(s_slice), ...]`, samples shared by every test point. With `shared=False`,
        `sample_fn(b_slice, s_slice)` returns `[len(b_slice), len(s_slice), ...]`: samples
        `s_slice` of the test points `b_slice`. Slices are Python slices with explicit start and
        stop; a caller that generates samples can derive its random keys from them.
      num_samples: S, the number of samples per test point.
      sigmas: σ > 0, a scalar or 1-D grid, `[K]`.
      shared: whether the samples are shared by all test points.
      test_chunk: test points per chunk; by default as many as fit in `MAX_CHUNK_VALUES`.
      sample_chunk: samples per chunk; by default 256 (fewer for very large points).
      progress: optional `progress(done, total)` callback, called after each chunk.

    Returns:
      `[K, B]`: log p̂(x_b) for each σ_k, in nats.

    Raises:
      ValueError: if a chunk's shape does not match the test points' shape, or on a bad σ.
    """
    x = jnp.asarray(x) if not isinstance(x, np.ndarray) else x
    if np.ndim(x) < 1:
        raise ValueError(f"parzen: x must have a batch axis, got shape {np.shape(x)}.")
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"parzen: num_samples must be a positive int, got {num_samples!r}.")
    sig = _as_sigmas(sigmas)
    num_test = x.shape[0]
    point_shape = tuple(x.shape[1:])
    dim = int(np.prod(point_shape))
    inv_two_var = jnp.asarray(1.0 / (2.0 * sig**2), dtype=jnp.float32)
    test_chunk, sample_chunk = _chunk_sizes(num_test, num_samples, dim, shared, test_chunk,
                                            sample_chunk)

    total = -(-num_test // test_chunk) * -(-num_samples // sample_chunk)
    done = 0
    rows = []
    for b0 in range(0, num_test, test_chunk):
        b1 = min(b0 + test_chunk, num_test)
        xb = pad_rows(jnp.asarray(x[b0:b1]).reshape(b1 - b0, dim), test_chunk, 0,
                      repeat_last=False)
        acc = jnp.full((len(sig), test_chunk), -jnp.inf, dtype=jnp.float32)
        for s0 in range(0, num_samples, sample_chunk):
            s1 = min(s0 + sample_chunk, num_samples)
            chunk = jnp.asarray(sample_fn(None if shared else slice(b0, b1), slice(s0, s1)))
            expected = ((s1 - s0,) if shared else (b1 - b0, s1 - s0)) + point_shape
            if chunk.shape != expected:
                raise ValueError(
                    f"parzen: a chunk of samples has shape {chunk.shape} but the test points "
                    f"have shape {tuple(x.shape)}; expected {expected} for "
                    f"{'shared' if shared else 'per-test-point'} samples."
                )
            if shared:
                chunk = pad_rows(chunk.reshape(s1 - s0, dim), sample_chunk, 0, repeat_last=False)
            else:
                chunk = pad_rows(chunk.reshape(b1 - b0, s1 - s0, dim), sample_chunk, 1,
                                 repeat_last=False)
                chunk = pad_rows(chunk, test_chunk, 0, repeat_last=False)
            valid = jnp.arange(sample_chunk) < (s1 - s0)
            acc = jnp.logaddexp(acc, _chunk_logsumexp(xb, chunk, valid, inv_two_var,
                                                      shared=shared))
            done += 1
            if progress is not None:
                progress(done, total)
        rows.append(acc[:, : b1 - b0])
    log_sum = jnp.concatenate(rows, axis=1)  # [K, B]
    log_norm = -math.log(num_samples) - 0.5 * dim * np.log(2.0 * np.pi * sig**2)  # [K]
    return log_sum + jnp.asarray(log_norm, dtype=jnp.float32)[:, None]  # [K, B] + [K, 1]


def parzen_log_likelihood(
    x: ArrayLike,
    samples: ArrayLike,
    sigma: float,
    *,
    test_chunk: int | None = None,
    sample_chunk: int | None = None,
) -> Array:
    """Parzen-window log-likelihood of each test point under a Gaussian kernel density estimate.

        log p̂(x) = log (1/S) Σ_s N(x; s, σ² I)
                 = logsumexp_s( -‖x - s‖² / (2σ²) ) - log S - (D/2) log(2πσ²)

    with the normalising constant, so the result is a log-density in nats (D = values per point).

    Args:
      x: test points, `[B, ...]` (e.g. faces `[B, 64, 64, 3]`).
      samples: either `[S, ...]`, samples shared by every test point (the unconditional protocol),
        or `[B, S, ...]`, one set per test point (the conditional protocol of the CMMA paper's
        Table 3: samples generated from each test face's own attributes). numpy arrays stay on the
        host and go to the device one chunk at a time.
      sigma: σ > 0, a Python float (not traced): the kernel's standard deviation. Choose it with
        `select_parzen_sigma` on a validation split.
      test_chunk: test points per chunk; by default as many as fit in `MAX_CHUNK_VALUES`.
      sample_chunk: samples per chunk; by default 256 (fewer for very large points).

    Returns:
      `[B]`, in nats.

    Raises:
      ValueError: if the shapes of `x` and `samples` do not match, or σ is not positive.

    References:
      Breuleux et al. (2011); Pandey & Dukkipati (2016), Table 3.
    """
    if np.ndim(sigma) != 0:
        raise ValueError(f"parzen_log_likelihood takes one sigma, got shape {np.shape(sigma)}; "
                         "use select_parzen_sigma for a grid.")
    return _parzen_grid(x, samples, [sigma], test_chunk, sample_chunk)[0]


def _parzen_grid(x, samples, sigmas, test_chunk, sample_chunk) -> Array:
    x_shape, s_shape = tuple(np.shape(x)), tuple(np.shape(samples))
    if len(x_shape) < 1:
        raise ValueError(f"parzen: x must have a batch axis, got shape {x_shape}.")
    if s_shape[1:] == x_shape[1:] and len(s_shape) == len(x_shape):
        shared = True
        num_samples = s_shape[0]
    elif len(s_shape) == len(x_shape) + 1 and s_shape[0] == x_shape[0] \
            and s_shape[2:] == x_shape[1:]:
        shared = False
        num_samples = s_shape[1]
    else:
        raise ValueError(
            f"parzen: x has shape {x_shape} but samples has shape {s_shape}; samples must be "
            f"[S, {', '.join(map(str, x_shape[1:]))}] (shared) or "
            f"[{x_shape[0]}, S, {', '.join(map(str, x_shape[1:]))}] (one set per test point)."
        )
    if num_samples < 1:
        raise ValueError(f"parzen: samples has shape {s_shape}: it needs at least one sample.")

    def sample_fn(b_slice, s_slice):
        return samples[s_slice] if shared else samples[b_slice, s_slice]

    return parzen_log_likelihood_from_fn(
        x, sample_fn, num_samples, sigmas, shared=shared,
        test_chunk=test_chunk, sample_chunk=sample_chunk,
    )


def select_parzen_sigma(
    x: ArrayLike,
    samples: ArrayLike,
    sigmas: ArrayLike | Sequence[float],
    *,
    test_chunk: int | None = None,
    sample_chunk: int | None = None,
) -> tuple[float, Array | np.ndarray]:
    """Chooses the Parzen σ that maximises the mean log-likelihood of validation points.

    Distances are computed once per chunk and shared by the whole grid.

    Args:
      x: validation points, `[B, ...]`.
      samples: `[S, ...]` or `[B, S, ...]`, as in `parzen_log_likelihood`.
      sigmas: the grid, a 1-D sequence of positive values, `[K]`.
      test_chunk: test points per chunk; by default as many as fit in `MAX_CHUNK_VALUES`.
      sample_chunk: samples per chunk; by default 256 (fewer for very large points).

    Returns:
      `(best_sigma, mean_log_likelihoods)`: the best σ as a Python float, and `[K]`, the mean
      log-likelihood over the validation points for each σ of the grid.

    Raises:
      ValueError: as `parzen_log_likelihood`, or for an empty grid.
    """
    sig = _as_sigmas(sigmas)
    per_point = _parzen_grid(x, samples, sig, test_chunk, sample_chunk)  # [K, B]
    return best_sigma(sig, per_point)


def best_sigma(sigmas: ArrayLike | Sequence[float], log_likelihoods: Array | np.ndarray
               ) -> tuple[float, Array | np.ndarray]:
    """The σ of a grid with the highest mean log-likelihood over the points.

    Args:
      sigmas: the grid, `[K]`.
      log_likelihoods: `[K, B]`, the log-likelihood of each of B points for each σ (numpy or
        jax; the means keep its type and dtype).

    Returns:
      `(best_sigma, mean_log_likelihoods)`: a Python float, and the `[K]` means.
    """
    means = log_likelihoods.mean(axis=1)
    return float(np.asarray(sigmas)[int(np.argmax(np.asarray(means)))]), means


# ---------------------------------------------------------------------------------------------
# Attribute fidelity: accuracy and ROC AUC per attribute (host-side numpy, float64)


def average_ranks(values: ArrayLike) -> np.ndarray:
    """1-based ranks of `values` (1-D), tied values sharing the average of their ranks.

    The ranks of the Mann-Whitney U statistic (and of `scipy.stats.rankdata(method="average")`):
    for `[0.3, 0.1, 0.3]` they are `[2.5, 1, 2.5]`.

    Args:
      values: `[N]` finite numbers.

    Returns:
      `[N]` float64 ranks in [1, N].

    Raises:
      ValueError: for an array that is not 1-D or holds NaN.
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 1:
        raise ValueError(f"average_ranks takes a 1-D array, got shape {v.shape}.")
    if np.isnan(v).any():
        raise ValueError("average_ranks: the values hold NaN, which has no rank.")
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    # The k-th distinct value occupies positions start+1 .. start+count (1-based), whose
    # average is start + (count + 1) / 2.
    start = np.cumsum(counts) - counts
    return (start + (counts + 1) / 2.0)[inverse.reshape(-1)]


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """The area under the ROC curve of `scores` for binary `labels`, with ties counted as halves.

        AUC = P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)
            = (R⁺ - n⁺ (n⁺ + 1) / 2) / (n⁺ n⁻)        (Mann-Whitney U over n⁺ n⁻)

    with R⁺ the sum of the average ranks (`average_ranks`) of the positive examples. O(N log N).

    Args:
      scores: `[N]` scores (probabilities, logits: any monotone transform gives the same AUC).
      labels: `[N]` labels, True/1 for positives (any value > 0.5 is a positive).

    Returns:
      The AUC in [0, 1] as a Python float, or NaN when every label is the same (no positive or
      no negative example: the AUC is undefined).

    Raises:
      ValueError: if the shapes differ or are not 1-D, or a score is NaN.

    References:
      Mann & Whitney (1947); Hanley & McNeil (1982), "The meaning and use of the area under a
      receiver operating characteristic (ROC) curve".
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"roc_auc: scores has shape {s.shape} and labels has shape {y.shape}; "
                         "both must be the same 1-D shape.")
    positive = y.astype(np.float64) > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(np.sum(average_ranks(s)[positive]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _check_scores_and_labels(what: str, scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"{what}: scores has shape {scores.shape} and labels has shape "
                         f"{labels.shape}; both must be the same [N, A] shape.")


def attribute_auc(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """`roc_auc` of each attribute (column): `[N, A]` scores and labels -> `[A]`.

    An attribute whose labels are constant over the N examples has no AUC: its entry is NaN
    (report it as undefined and leave it out of a mean over attributes, `np.nanmean`).
    """
    s, y = np.asarray(scores, np.float64), np.asarray(labels)
    _check_scores_and_labels("attribute_auc", s, y)
    return np.array([roc_auc(s[:, a], y[:, a]) for a in range(s.shape[1])], np.float64)


def attribute_accuracy(probabilities: ArrayLike, labels: ArrayLike,
                       threshold: float = 0.5) -> np.ndarray:
    """The fraction of examples whose thresholded prediction matches the label, per attribute.

    Args:
      probabilities: `[N, A]` predicted probabilities (a positive prediction is > `threshold`).
      labels: `[N, A]` binary labels (a positive is > 0.5).
      threshold: the decision threshold on the probabilities.

    Returns:
      `[A]` float64 accuracies in [0, 1].
    """
    p, y = np.asarray(probabilities, np.float64), np.asarray(labels)
    _check_scores_and_labels("attribute_accuracy", p, y)
    if p.shape[0] == 0:
        raise ValueError("attribute_accuracy: no examples.")
    return np.mean((p > threshold) == (y.astype(np.float64) > 0.5), axis=0)


def laplacian_energy(images: ArrayLike) -> np.ndarray:
    """How much fine detail each image has: the mean square of its discrete Laplacian.

        E(x) = mean over interior pixels and channels of (4 x[i, j] - x[i±1, j] - x[i, j±1])²

    A blurred image has little of it: the ratio E(x̂) / E(x) of a reconstruction or a generated
    face to a real face is a number for "blurred" (1: as much detail as the real face). Only the
    interior pixels count, so no padding choice enters.

    Args:
      images: `[N, H, W, C]` (or `[H, W, C]`, one image), H, W >= 3.

    Returns:
      `[N]` float64 (a scalar array for one image).
    """
    x = np.asarray(images, np.float64)
    if x.ndim not in (3, 4) or x.shape[-3] < 3 or x.shape[-2] < 3:
        raise ValueError(f"laplacian_energy: images have shape {x.shape}; expected [N, H, W, C] "
                         "or [H, W, C] with H, W >= 3.")
    lap = (4.0 * x[..., 1:-1, 1:-1, :] - x[..., :-2, 1:-1, :] - x[..., 2:, 1:-1, :]
           - x[..., 1:-1, :-2, :] - x[..., 1:-1, 2:, :])
    return np.mean(np.square(lap), axis=(-3, -2, -1))
