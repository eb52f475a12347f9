"""KL divergences per example between diagonal Gaussians, in closed form (the CMMA paper's eq. 7
with the -1 it drops)."""

from __future__ import annotations

import jax.numpy as jnp

from cmma_jax.losses._contract import (Array, ArrayLike, _at_least_float32, _check_same_shape,
                                       _event_ndims, _sum_event)


def gaussian_kl(
    mean_q: ArrayLike, log_var_q: ArrayLike, mean_p: ArrayLike, log_var_p: ArrayLike, *,
    event_ndims: int | None = None,
) -> Array:
    """KL(q ‖ p) between diagonal Gaussians, summed over every non-batch axis.

    The full formula, with the `-1` per dimension that the CMMA paper's eq. (7) drops (erratum 3):

        KL = ½ Σ_j [ v_pj - v_qj + exp(v_qj - v_pj) + (μ_qj - μ_pj)² / exp(v_pj) - 1 ]

    Args:
      mean_q: means of q, `[B, J]` (or `[B, ...]`).
      log_var_q: log-variances of q, same shape.
      mean_p: means of p, same shape.
      log_var_p: log-variances of p, same shape.
      event_ndims: the trailing axes of one example (None: all but the first; 1 for one latent
        vector `[J]` under `jax.vmap`).

    Returns:
      `[B]` (the batch shape), KL(q ‖ p) in nats, non-negative.

    Raises:
      ValueError: if the four shapes differ, or there is no batch axis and no `event_ndims`.

    References:
      Pandey & Dukkipati (2016), eq. (7), with the -1 it drops (docs/papers.md, section 3).
    """
    mean_q, log_var_q, mean_p, log_var_p = _at_least_float32(mean_q, log_var_q, mean_p,
                                                             log_var_p)
    _check_same_shape(
        "gaussian_kl", mean_q=mean_q, log_var_q=log_var_q, mean_p=mean_p, log_var_p=log_var_p
    )
    k = _event_ndims("gaussian_kl", event_ndims, mean_q.ndim, "mean_q")
    d = log_var_q - log_var_p
    # exp(d) - 1 - d as expm1(d) - d: when q is close to p the three terms cancel, and expm1 keeps
    # the small difference that exp(d) - 1 would round away.
    scaled = (mean_q - mean_p) * jnp.exp(-0.5 * log_var_p)
    return 0.5 * _sum_event(jnp.expm1(d) - d + jnp.square(scaled), k)


def standard_normal_kl(mean: ArrayLike, log_var: ArrayLike, *,
                       event_ndims: int | None = None) -> Array:
    """KL(q ‖ N(0, I)) for a diagonal Gaussian q, summed over every non-batch axis.

        KL = ½ Σ_j [ exp(v_j) - 1 - v_j + μ_j² ]

    Args:
      mean: means of q, `[B, J]` (or `[B, ...]`).
      log_var: log-variances of q, same shape.
      event_ndims: the trailing axes of one example (None: all but the first).

    Returns:
      `[B]` (the batch shape), in nats.

    Raises:
      ValueError: if the shapes differ, or there is no batch axis and no `event_ndims`.

    References:
      Kingma & Welling (2014), "Auto-Encoding Variational Bayes", appendix B.
    """
    mean, log_var = _at_least_float32(mean, log_var)
    _check_same_shape("standard_normal_kl", mean=mean, log_var=log_var)
    k = _event_ndims("standard_normal_kl", event_ndims, mean.ndim, "mean")
    # expm1(v) - v rather than exp(v) - 1 - v: exact near v = 0, where the terms cancel.
    return 0.5 * _sum_event(jnp.expm1(log_var) - log_var + jnp.square(mean), k)
