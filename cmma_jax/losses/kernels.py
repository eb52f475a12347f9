"""Kernels and the maximum mean discrepancy between two samples."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from cmma_jax.losses._contract import Array, ArrayLike, _check_rank, _check_same_dim


def _pairwise_squared_distances(x: Array, y: Array) -> Array:
    """‖x_i - y_j‖² for x `[N, D]`, y `[M, D]` -> `[N, M]`, never negative."""
    x2 = jnp.sum(jnp.square(x), axis=-1)
    y2 = jnp.sum(jnp.square(y), axis=-1)
    xy = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    # The expansion ‖x‖² + ‖y‖² - 2 x·y can round below zero for x ≈ y.
    return jnp.maximum(x2[:, None] + y2[None, :] - 2.0 * xy, 0.0)


def _check_kernel_inputs(what: str, x: Array, y: Array) -> None:
    _check_rank(what, "x", x, 2)
    _check_rank(what, "y", y, 2)
    _check_same_dim(what, x, y, 1, "feature sizes")


def _as_scales(value: ArrayLike | Sequence[float], what: str, name: str) -> Array:
    scales = jnp.asarray(value, dtype=jnp.float32)
    if scales.ndim > 1:
        raise ValueError(f"{what}: {name} must be a scalar or a 1-D sequence, got shape "
                         f"{scales.shape}.")
    return jnp.atleast_1d(scales)


def gaussian_kernel(x: ArrayLike, y: ArrayLike, bandwidth: ArrayLike | Sequence[float]) -> Array:
    """Gaussian (RBF) kernel matrix, summed over one or several bandwidths.

        k(x, y) = Σ_s exp( -‖x - y‖² / (2 σ_s²) )

    Convention: `bandwidth` is σ, the standard deviation of the Gaussian. The other convention seen
    in public MMD-VAE code, `exp(-‖x - y‖² / d)` with d the latent size, is this kernel with
    `bandwidth = sqrt(d / 2)`.

    Args:
      x: `[N, D]`.
      y: `[M, D]`.
      bandwidth: σ > 0, a scalar or a 1-D sequence of bandwidths whose kernels are summed.

    Returns:
      `[N, M]`.

    Raises:
      ValueError: if x or y is not 2-D, or their feature sizes differ.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_kernel_inputs("gaussian_kernel", x, y)
    sigmas = _as_scales(bandwidth, "gaussian_kernel", "bandwidth")
    d2 = _pairwise_squared_distances(x, y)
    return jnp.sum(jnp.exp(-d2[None] / (2.0 * jnp.square(sigmas)[:, None, None])), axis=0)


def imq_kernel(x: ArrayLike, y: ArrayLike, scale: ArrayLike | Sequence[float]) -> Array:
    """Inverse multiquadric kernel matrix, summed over one or several scales.

        k(x, y) = Σ_s c_s / (c_s + ‖x - y‖²)

    The kernel of Tolstikhin et al. (2018) for Wasserstein autoencoders, where c = 2 d σ_p² for a
    prior N(0, σ_p² I) in d dimensions is a common choice; its heavy tails keep gradients alive
    for samples far from the prior.

    Args:
      x: `[N, D]`.
      y: `[M, D]`.
      scale: c > 0, a scalar or a 1-D sequence of scales whose kernels are summed.

    Returns:
      `[N, M]`.

    Raises:
      ValueError: if x or y is not 2-D, or their feature sizes differ.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_kernel_inputs("imq_kernel", x, y)
    scales = _as_scales(scale, "imq_kernel", "scale")[:, None, None]
    d2 = _pairwise_squared_distances(x, y)
    return jnp.sum(scales / (scales + d2[None]), axis=0)


def mmd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    kernel: Callable[[Array, Array], Array] | None = None,
    unbiased: bool = False,
) -> Array:
    """Squared maximum mean discrepancy between the samples x ~ q and y ~ p.

        MMD²(q, p) = E_{q,q'}[k(x, x')] + E_{p,p'}[k(y, y')] - 2 E_{q,p}[k(x, y)]

    Biased estimate (V-statistic, `unbiased=False`): every mean over all pairs, the diagonals
    k(x_i, x_i) included; never negative.

    Unbiased estimate (U-statistic, `unbiased=True`): the x-x and y-y means leave out their
    diagonal, i.e. average over i ≠ j only; the cross term averages over every pair (x_i and y_j
    are independent even when i = j). It can be negative.

    This is a batch statistic, and so, unlike every other objective here, returns a scalar.

    Args:
      x: samples of q, `[N, D]` (e.g. posterior samples of one ladder layer).
      y: samples of p, `[M, D]` (e.g. N(0, I) samples).
      kernel: `kernel(a, b) -> [len(a), len(b)]`; default the Gaussian kernel with bandwidth 1,
        `functools.partial(gaussian_kernel, bandwidth=1.0)`. Sum several bandwidths with
        `functools.partial(gaussian_kernel, bandwidth=[0.5, 1.0, 2.0])`.
      unbiased: the U-statistic instead of the V-statistic; needs N, M ≥ 2.

    Returns:
      A scalar.

    Raises:
      ValueError: if x or y is not 2-D, their feature sizes differ, or `unbiased` with fewer than
        two samples on a side.

    References:
      Gretton et al. (2012), "A Kernel Two-Sample Test", eqs. (3)-(5); Zhao, Song & Ermon (2019),
      "InfoVAE"; Xu, "Generate Faces Using Ladder Variational Autoencoder with MMD".
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_kernel_inputs("mmd", x, y)
    if kernel is None:
        kernel = functools.partial(gaussian_kernel, bandwidth=1.0)
    n, m = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError(f"mmd: the unbiased estimate needs at least 2 samples on each side, "
                             f"got x of shape {x.shape} and y of shape {y.shape}.")
        term_xx = (jnp.sum(k_xx) - jnp.trace(k_xx)) / (n * (n - 1))
        term_yy = (jnp.sum(k_yy) - jnp.trace(k_yy)) / (m * (m - 1))
    else:
        term_xx = jnp.mean(k_xx)
        term_yy = jnp.mean(k_yy)
    return term_xx + term_yy - 2.0 * jnp.mean(k_xy)
