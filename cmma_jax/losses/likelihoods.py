"""Log-likelihoods per example: the diagonal Gaussian (the CMMA paper's eq. 8) and independent
Bernoullis."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from cmma_jax.losses._contract import (Array, ArrayLike, _at_least_float32, _check_same_shape,
                                       _event_ndims, _sum_event)

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_likelihood(x: ArrayLike, mean: ArrayLike, log_var: ArrayLike, *,
                            event_ndims: int | None = None) -> Array:
    """Log-density of a diagonal Gaussian, summed over every non-batch axis.

    Implements the CMMA paper's eq. (8) as corrected in the errata (the printed `Σ exp(g_σ)` term is
    wrong, and the log 2π constant is kept so that the result is a true log-density in nats):

        log N(x; μ, diag(exp(v))) = -Σ_l [ (x_l - μ_l)² / (2 exp(v_l)) + v_l / 2 + log(2π) / 2 ]

    Args:
      x: observations, `[B, ...]` (e.g. images `[B, 64, 64, 3]` or latents `[B, J]`).
      mean: Gaussian means, same shape as `x`.
      log_var: Gaussian log-variances, same shape as `x`.
      event_ndims: the trailing axes of one example (None: all but the first; module docstring).

    Returns:
      `[B]` (the batch shape), the log-density of each example in nats, float32 or wider.

    Raises:
      ValueError: if the three shapes differ, or `x` has no batch axis and no `event_ndims`.

    References:
      Pandey & Dukkipati (2016), eq. (8), corrected as in docs/papers.md, section 3 (the log-likelihood).
    """
    x, mean, log_var = _at_least_float32(x, mean, log_var)
    _check_same_shape("gaussian_log_likelihood", x=x, mean=mean, log_var=log_var)
    k = _event_ndims("gaussian_log_likelihood", event_ndims, x.ndim)
    # Scale the difference by exp(-v/2) before squaring, rather than dividing by exp(v): exp(v)
    # overflows float32 for v > 88, and the scaled form stays finite for |v| up to ~177.
    scaled = (x - mean) * jnp.exp(-0.5 * log_var)
    log_density = -0.5 * (jnp.square(scaled) + log_var + _LOG_2PI)
    return _sum_event(log_density, k)


def bernoulli_log_likelihood(x: ArrayLike, logits: ArrayLike, *,
                             event_ndims: int | None = None) -> Array:
    """Log-probability of `x` under independent Bernoullis with the given logits, summed per example.

        log p(x) = Σ_l [ x_l log σ(a_l) + (1 - x_l) log(1 - σ(a_l)) ]

    For `x` in [0, 1] rather than {0, 1} this is the negative binary cross-entropy (not a normalised
    density over continuous `x`).

    Args:
      x: targets in [0, 1], `[B, ...]`.
      logits: Bernoulli logits a, same shape as `x`.
      event_ndims: the trailing axes of one example (None: all but the first).

    Returns:
      `[B]` (the batch shape), in nats.

    Raises:
      ValueError: if the shapes differ, or `x` has no batch axis and no `event_ndims`.
    """
    x, logits = _at_least_float32(x, logits)
    _check_same_shape("bernoulli_log_likelihood", x=x, logits=logits)
    k = _event_ndims("bernoulli_log_likelihood", event_ndims, x.ndim)
    # log σ(-a) instead of log(1 - σ(a)): the latter is log(0) = -inf once σ(a) rounds to 1.
    log_p = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)
    return _sum_event(log_p, k)
