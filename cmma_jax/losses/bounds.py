"""The conditional variational bounds on log p(x | y): the ELBO and its terms (CMMA, CVAE) and the
importance-weighted bound (IWAE)."""

from __future__ import annotations

import math
import operator
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from cmma_jax.losses._contract import (Array, ArrayLike, GaussianParams, _check_min_rank,
                                       _check_rank, _check_same_dim, _check_same_shape, _event_ndims,
                                       _shape_error)
from cmma_jax.losses.divergences import gaussian_kl, standard_normal_kl
from cmma_jax.losses.likelihoods import gaussian_log_likelihood
from cmma_jax.losses.sampling import reparameterize


class ElboTerms(NamedTuple):
    """The conditional variational bound, its two terms, and what they were computed from.

    Attributes:
      elbo: the bound, `log_likelihood - kl`, `[B]` in nats.
      log_likelihood: the Monte Carlo estimate of E_q[log p(x | z, ...)], `[B]`.
      kl: KL(q(z | x, y) ‖ prior), computed in closed form, `[B]`.
      z: the posterior samples the likelihood was estimated with, `[K, B, J]` (K =
        `num_samples`): the same z to put an MMD penalty or any other term on, without a second
        encoder call.
      posterior: q(z | x, y) as `(mean, log_var)`, each `[B, J]`.
      prior: the prior as `(mean, log_var)`, each `[B, J]` (zeros for N(0, I)).
      aux: what `encode` and `decode` returned beyond `(mean, log_var)`, as
        `{"encode": ..., "decode": ...}` (decode's stacked over the K samples); None for a network
        that returns a pair. E.g. a flax network applied with `mutable=["batch_stats"]` returns
        its updated collections there.
    """

    elbo: Array
    log_likelihood: Array
    kl: Array
    z: Array | None = None
    posterior: GaussianParams | None = None
    prior: GaussianParams | None = None
    aux: dict | None = None


# The three terms of an `ElboTerms`, each `[B]` (the other fields hold what they came from).
ELBO_TERMS = ("elbo", "log_likelihood", "kl")


def _split_aux(out, what: str, name: str):
    """A network's output: `(mean, log_var)` or `(mean, log_var, aux)` -> (mean, log_var, aux)."""
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise ValueError(f"{what}: {name} must return (mean, log_var) or (mean, log_var, aux), "
                         f"got {type(out).__name__} of length "
                         f"{len(out) if isinstance(out, (tuple, list)) else '-'}.")
    return out[0], out[1], (out[2] if len(out) == 3 else None)


EncodeFn = Callable[[Array, Array], GaussianParams]
DecodeFn = Callable[[Array, Array], GaussianParams]
PriorFn = Callable[[Array], GaussianParams]


def _posterior_and_prior(
    what: str, x: Array, y: Array, encode: EncodeFn, prior: PriorFn | None
) -> tuple[Array, Array, Array, Array, object]:
    """Runs `encode` (and `prior`), checks their shapes, returns (μ_q, v_q, μ_p, v_p, encode's
    aux or None)."""
    _check_min_rank(what, "x", x, 1)
    _check_min_rank(what, "y", y, 1)
    _check_same_dim(what, x, y, 0, "batch sizes")
    mean_q, log_var_q, encode_aux = _split_aux(encode(x, y), what, "encode")
    _check_same_shape(f"{what} (encode output)", mean=mean_q, log_var=log_var_q)
    _check_rank(f"{what} (encode output)", "mean", mean_q, 2)
    if mean_q.shape[0] != x.shape[0]:
        raise ValueError(
            f"{what}: encode returned a mean of shape {mean_q.shape} for x of shape {x.shape}; "
            "the batch sizes must be equal."
        )
    if prior is None:
        mean_p = jnp.zeros_like(mean_q)
        log_var_p = jnp.zeros_like(log_var_q)
    else:
        mean_p, log_var_p = prior(y)
        _check_same_shape(f"{what} (prior output)", mean=mean_p, log_var=log_var_p)
        if mean_p.shape != mean_q.shape:
            raise _shape_error(
                f"{what}: prior and posterior disagree", "prior mean", mean_p.shape,
                "encode mean", mean_q.shape,
            )
    return mean_q, log_var_q, mean_p, log_var_p, encode_aux


def _flatten_batch(what: str, x: Array, y: Array, event_ndims: int | None
                   ) -> tuple[Array, Array, tuple[int, ...]]:
    """x `[*batch, *event]` and y `[*batch, A]` as one batch axis (`[N, *event]`, `[N, A]`, N the
    product of the batch shape, 1 for one example), and the batch shape to give results back."""
    k = _event_ndims(what, event_ndims, x.ndim)
    batch_shape = tuple(x.shape[:x.ndim - k])
    if y.ndim < 1 or tuple(y.shape[:-1]) != batch_shape:
        raise ValueError(
            f"{what}: x has shape {x.shape} and y has shape {y.shape}; with "
            f"event_ndims={event_ndims} x's batch shape is {batch_shape} (one example: "
            f"{tuple(x.shape[x.ndim - k:])}), and y must be that batch shape plus its attribute "
            "axis. For one example (e.g. inside jax.vmap over examples) pass event_ndims=<x's "
            "axes per example>, e.g. 3 for an image.")
    n = math.prod(batch_shape)
    return x.reshape((n,) + x.shape[x.ndim - k:]), y.reshape((n, y.shape[-1])), batch_shape


def _decode_log_likelihood(what: str, x: Array, z: Array, y: Array, decode: DecodeFn
                           ) -> tuple[Array, object]:
    """log p(x | z, y) per example (and decode's aux, or None), with a check of the decoder's
    output shapes."""
    mean_x, log_var_x, aux = _split_aux(decode(z, y), what, "decode")
    if mean_x.shape != x.shape:
        raise _shape_error(f"{what} (decode output)", "decoded mean", mean_x.shape, "x", x.shape)
    if log_var_x.shape != x.shape:
        raise _shape_error(
            f"{what} (decode output)", "decoded log_var", log_var_x.shape, "x", x.shape
        )
    return gaussian_log_likelihood(x, mean_x, log_var_x), aux


def _sample_keys(key: Array, num_samples: int, what: str) -> Array:
    """K keys. `num_samples` may be any integer the caller holds (Python, numpy, a concrete jax
    scalar), not a traced value: K is a shape."""
    try:
        k = operator.index(num_samples)
    except TypeError:
        k = None
    if k is None or isinstance(num_samples, bool) or k < 1:
        raise ValueError(f"{what}: num_samples must be a positive integer (a shape, not a traced "
                         f"value), got {num_samples!r}.")
    return jax.random.split(key, k)


def conditional_elbo(
    key: Array,
    x: ArrayLike,
    y: ArrayLike,
    *,
    encode: EncodeFn,
    decode: DecodeFn,
    prior: PriorFn | None = None,
    num_samples: int = 1,
    axis_name: str | None = None,
    event_ndims: int | None = None,
) -> ElboTerms:
    """The conditional variational lower bound on log p(x | y), per example.

        L(x, y) = E_{q(z|x,y)}[ log p(x | z, y) ] - KL( q(z | x, y) ‖ p(z | y) )      (eq. 6)

    The expectation is a Monte Carlo average over `num_samples` reparameterised samples
    z = μ_q + ε ⊙ exp(v_q / 2) (eqs. 9-11, erratum 2); the KL is exact (eq. 7, erratum 3). With
    `prior=None` the prior is N(0, I) and this is the CVAE bound (eq. 13); with a prior function it
    is the CMMA bound (eq. 6), whose prior p(z | y) = N(f_μ(y), exp(f_σ(y))) depends on the
    attributes.

    Args:
      key: a `jax.random` key for the Monte Carlo samples.
      x: images (or any observations), `[B, ...]`.
      y: attributes, `[B, A]`.
      encode: `encode(x, y) -> (mean, log_var)`, each `[B, J]`: the posterior q(z | x, y).
      decode: `decode(z, y) -> (mean, log_var)`, each the shape of `x`: the Gaussian p(x | z, y).
        It is called with `z` of shape `[B, J]`, once per sample (vectorised with `vmap`). A CMMA
        decoder ignores `y`.
      prior: `prior(y) -> (mean, log_var)`, each `[B, J]`; `None` for N(0, I).
      num_samples: the number of samples of z per example (the paper uses 1).
      axis_name: inside `pmap`/`shard_map` with the batch split over this axis, the noise of each
        example is the same as on one device (`batch_normal`).
      event_ndims: the axes of one example of `x` (None: all but the first, `[B, ...]`). With it,
        `x` may have any batch shape, none included (one example, as inside `jax.vmap`), and `y`
        that batch shape plus its attribute axis; the networks always see one batch axis.

    Returns:
      `ElboTerms(elbo, log_likelihood, kl)`, each `[B]` (the batch shape), in nats.

    Raises:
      ValueError: on a shape mismatch between x and y, between the encoder's and the prior's
        outputs, or between the decoder's output and x; or if `num_samples` < 1.

    References:
      Pandey & Dukkipati (2016), eqs. (6)-(13); Sohn et al. (2015), "Learning Structured Output
      Representation using Deep Conditional Generative Models" (the CVAE).
    """
    what = "conditional_elbo"
    x, y, batch_shape = _flatten_batch(what, jnp.asarray(x), jnp.asarray(y), event_ndims)
    mean_q, log_var_q, mean_p, log_var_p, encode_aux = _posterior_and_prior(
        what, x, y, encode, prior)
    keys = _sample_keys(key, num_samples, what)

    def one_sample(k):
        z = reparameterize(k, mean_q, log_var_q, axis_name=axis_name)
        return (z, *_decode_log_likelihood(what, x, z, y, decode))

    z, log_px, decode_aux = jax.vmap(one_sample)(keys)  # [K, B, J], [K, B]
    log_likelihood = jnp.mean(log_px, axis=0)  # eq. (11), [K, B] -> [B]
    if prior is None:
        kl = standard_normal_kl(mean_q, log_var_q)
    else:
        kl = gaussian_kl(mean_q, log_var_q, mean_p, log_var_p)  # eq. (7) with the -1
    unflat = lambda a, lead=(): a.reshape(lead + batch_shape + a.shape[len(lead) + 1:])  # noqa: E731
    aux = None if encode_aux is None and decode_aux is None else {"encode": encode_aux,
                                                                 "decode": decode_aux}
    return ElboTerms(
        elbo=unflat(log_likelihood - kl), log_likelihood=unflat(log_likelihood), kl=unflat(kl),
        z=unflat(z, (z.shape[0],)), posterior=(unflat(mean_q), unflat(log_var_q)),
        prior=(unflat(mean_p), unflat(log_var_p)), aux=aux)


def cmma_elbo(
    key: Array,
    x: ArrayLike,
    y: ArrayLike,
    *,
    encode: EncodeFn,
    decode: DecodeFn,
    prior: PriorFn,
    num_samples: int = 1,
    axis_name: str | None = None,
    event_ndims: int | None = None,
) -> ElboTerms:
    """The CMMA bound (eq. 6): `conditional_elbo` with the attribute prior p(z | y).

        L = E_{q(z|x,y)}[ log p(x | z) ] - KL( q(z | x, y) ‖ p(z | y) )

    Args:
      key, x, y, encode, decode, num_samples, axis_name, event_ndims: as in `conditional_elbo`.
      prior: `prior(y) -> (mean, log_var)`, each `[B, J]`: the network f of the paper.

    Returns:
      `ElboTerms`, each `[B]`.
    """
    if prior is None:
        raise ValueError("cmma_elbo needs a prior function prior(y) -> (mean, log_var); "
                         "for the N(0, I) prior use cvae_elbo.")
    return conditional_elbo(key, x, y, encode=encode, decode=decode, prior=prior,
                            num_samples=num_samples, axis_name=axis_name,
                            event_ndims=event_ndims)


def cvae_elbo(
    key: Array,
    x: ArrayLike,
    y: ArrayLike,
    *,
    encode: EncodeFn,
    decode: DecodeFn,
    num_samples: int = 1,
    axis_name: str | None = None,
    event_ndims: int | None = None,
) -> ElboTerms:
    """The CVAE bound (eq. 13, erratum 4): `conditional_elbo` with the prior N(0, I).

        L = E_{q(z|x,y)}[ log p(x | y, z) ] - KL( q(z | x, y) ‖ N(0, I) )

    Args:
      key, x, y, encode, decode, num_samples, axis_name, event_ndims: as in `conditional_elbo`;
        the decoder uses `y`.

    Returns:
      `ElboTerms`, each `[B]`.
    """
    return conditional_elbo(key, x, y, encode=encode, decode=decode, prior=None,
                            num_samples=num_samples, axis_name=axis_name,
                            event_ndims=event_ndims)


def iwae_bound(
    key: Array,
    x: ArrayLike,
    y: ArrayLike,
    *,
    encode: EncodeFn,
    decode: DecodeFn,
    prior: PriorFn | None = None,
    num_samples: int,
    axis_name: str | None = None,
    event_ndims: int | None = None,
) -> Array:
    """The importance-weighted lower bound on log p(x | y) with K samples, per example.

        L_K(x, y) = E[ log (1/K) Σ_k p(x | z_k, y) p(z_k | y) / q(z_k | x, y) ],  z_k ~ q(z | x, y)

    This returns one draw of the quantity inside the expectation, an unbiased estimate of L_K.
    L_1 is the ELBO (with a Monte Carlo KL instead of the closed form: same expectation); L_K
    increases with K and tends to log p(x | y) as K → ∞.

    Args:
      key: a `jax.random` key.
      x: `[B, ...]`.
      y: `[B, A]`.
      encode, decode, prior: as in `conditional_elbo` (`prior=None` for N(0, I)).
      num_samples: K, the number of importance samples per example.
      axis_name, event_ndims: as in `conditional_elbo`.

    Returns:
      `[B]` (the batch shape), in nats.

    Raises:
      ValueError: as `conditional_elbo`.

    References:
      Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", eq. (8).
    """
    what = "iwae_bound"
    x, y, batch_shape = _flatten_batch(what, jnp.asarray(x), jnp.asarray(y), event_ndims)
    mean_q, log_var_q, mean_p, log_var_p, _ = _posterior_and_prior(what, x, y, encode, prior)
    keys = _sample_keys(key, num_samples, what)

    def log_weight(k):
        z = reparameterize(k, mean_q, log_var_q, axis_name=axis_name)
        log_px, _ = _decode_log_likelihood(what, x, z, y, decode)
        log_pz = gaussian_log_likelihood(z, mean_p, log_var_p)
        log_qz = gaussian_log_likelihood(z, mean_q, log_var_q)
        return log_px + log_pz - log_qz

    log_w = jax.vmap(log_weight)(keys)  # [K, B]
    # log-mean-exp through logsumexp: the weights themselves are exp(thousands of nats).
    return (jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)).reshape(batch_shape)
