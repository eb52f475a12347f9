"""Objectives for conditional generative models of faces: pure functions of arrays.

Everything here is a pure JAX function that works under `jit`, `vmap` and `grad`.

The per-example contract, as distrax's event shapes. A per-example function (the likelihoods, the
KLs, the bounds) sums over the axes of ONE example (its "event": pixels and channels, or latent
units) and keeps the batch axes:

- `event_ndims=None` (the default): axis 0 is the batch and every other axis belongs to one
  example, so inputs need at least two axes and the result is `[B]`. An input without a batch
  axis is refused, never read as a batch of scalars.
- `event_ndims=k`: the last k axes are one example; any leading batch shape, including none,
  is kept (`[]` for one example). This is the form to use under `jax.vmap` over examples, where
  each call sees one example: `jax.vmap(functools.partial(standard_normal_kl, event_ndims=1))`.

Nothing reduces over the batch except the MMD, a statistic of two samples, which returns a
scalar. Write the batch mean yourself:

    loss = -cmma_elbo(key, x, y, encode=..., decode=..., prior=...).elbo.mean()

Gaussians are parameterised by mean and log-variance (`log_var`) everywhere, never by a standard
deviation. Shapes are checked, never broadcast: a mismatch raises a `ValueError` naming both shapes.

The CMMA paper is Pandey & Dukkipati, "Variational methods for Conditional Multimodal Learning:
Generating Human Faces from Attributes" (2016); its equation numbers are cited next to the lines that
implement them, with the corrections listed in `docs/papers.md` (section 3, "How the code reads
the misprints").
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
GaussianParams = tuple[Array, Array]

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = [
    "ElboTerms",
    "ELBO_TERMS",
    "gaussian_log_likelihood",
    "bernoulli_log_likelihood",
    "gaussian_kl",
    "standard_normal_kl",
    "reparameterize",
    "batch_normal",
    "conditional_elbo",
    "cmma_elbo",
    "cvae_elbo",
    "iwae_bound",
    "gaussian_kernel",
    "imq_kernel",
    "mmd",
    "GAN_LOSS_KINDS",
    "gan_discriminator_loss",
    "gan_generator_loss",
]


# ---------------------------------------------------------------------------------------------
# Shape checks


def _shape_error(what: str, name_a: str, a_shape, name_b: str, b_shape) -> ValueError:
    return ValueError(
        f"{what}: {name_a} has shape {tuple(a_shape)} but {name_b} has shape {tuple(b_shape)}; "
        "they must be equal (nothing is broadcast)."
    )


def _check_same_shape(what: str, **arrays: Array) -> None:
    """Raises a ValueError naming both shapes unless every array has the same shape."""
    items = list(arrays.items())
    name0, a0 = items[0]
    for name, a in items[1:]:
        if jnp.shape(a) != jnp.shape(a0):
            raise _shape_error(what, name0, jnp.shape(a0), name, jnp.shape(a))


def _check_min_rank(what: str, name: str, a: Array, rank: int) -> None:
    if jnp.ndim(a) < rank:
        raise ValueError(
            f"{what}: {name} has shape {tuple(jnp.shape(a))}; expected at least {rank} "
            "dimension(s) with the batch first."
        )


def _check_rank(what: str, name: str, a: Array, rank: int) -> None:
    if jnp.ndim(a) != rank:
        raise ValueError(
            f"{what}: {name} has shape {tuple(jnp.shape(a))}; expected exactly {rank} dimension(s)."
        )


def _sum_non_batch(a: Array) -> Array:
    """Sums over every axis but the first: [B, ...] -> [B]."""
    return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def _event_ndims(what: str, event_ndims, ndim: int, name: str = "x") -> int:
    """The number of trailing event axes of an input of `ndim` axes (the module's contract)."""
    if event_ndims is None:
        if ndim < 2:
            raise ValueError(
                f"{what}: {name} has {ndim} axis/axes; without event_ndims the first axis is the "
                "batch and the others are one example, so at least 2 are needed. For one example "
                "(e.g. inside jax.vmap over examples) pass event_ndims=<its number of axes>, "
                "e.g. 1 for a latent vector, 3 for an image.")
        return ndim - 1
    if isinstance(event_ndims, bool) or not isinstance(event_ndims, (int, np.integer)) \
            or not 0 <= int(event_ndims) <= ndim:
        raise ValueError(f"{what}: event_ndims must be an integer from 0 to {name}'s {ndim} "
                         f"axes, got {event_ndims!r}.")
    return int(event_ndims)


def _sum_event(a: Array, event_ndims: int) -> Array:
    """Sums the last `event_ndims` axes: [*batch, *event] -> [*batch]."""
    return jnp.sum(a, axis=tuple(range(a.ndim - event_ndims, a.ndim)))


def _at_least_float32(*arrays: ArrayLike) -> list[Array]:
    """The arrays in float32 (float64 stays float64). The numerics policy: the objectives compute
    and sum in float32 at least, whatever the networks' compute dtype, since in bfloat16 a sum over
    12,288 pixels (and each term's rounding) would be off by tens to hundreds of nats."""
    as_arrays = [jnp.asarray(a) for a in arrays]
    dtype = jnp.result_type(jnp.float32, *[a.dtype for a in as_arrays])
    return [a.astype(dtype) for a in as_arrays]


# ---------------------------------------------------------------------------------------------
# Likelihoods and divergences


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


def batch_normal(key: Array, shape: Sequence[int], dtype=jnp.float32,
                 axis_name: str | None = None) -> Array:
    """Standard normal noise for a batch, the same whatever the number of devices it is split over.

    Without `axis_name` this is `jax.random.normal(key, shape, dtype)`. Inside `pmap` or
    `shard_map` with the batch split over the axis `axis_name`, every device draws the noise of the
    whole global batch, `[n * B_local, ...]`, from the same key and keeps its own rows: a step on
    n devices then sees exactly the noise of the same step on one device.

    Args:
      key: a `jax.random` key, the same on every device.
      shape: the local shape `[B_local, ...]`.
      dtype: a float dtype.
      axis_name: the mapped axis the batch is split over, or None.

    Returns:
      `[B_local, ...]` standard normal values.
    """
    shape = tuple(shape)
    if axis_name is None:
        return jax.random.normal(key, shape, dtype=dtype)
    num_devices = jax.lax.psum(1, axis_name)  # a Python int: the size of the mapped axis
    index = jax.lax.axis_index(axis_name)
    full = jax.random.normal(key, (num_devices * shape[0],) + shape[1:], dtype=dtype)
    return jax.lax.dynamic_slice_in_dim(full, index * shape[0], shape[0], axis=0)


def reparameterize(key: Array, mean: ArrayLike, log_var: ArrayLike, *,
                   axis_name: str | None = None) -> Array:
    """A sample z ~ N(mean, diag(exp(log_var))), differentiable in `mean` and `log_var`.

    The CMMA paper's eqs. (9)-(10), with erratum 2: its `h_σ` is a log-variance, so the standard
    deviation is `exp(h_σ / 2)`:

        ε ~ N(0, I),   z = μ + ε ⊙ exp(v / 2)

    Args:
      key: a `jax.random` key.
      mean: `[B, ...]`.
      log_var: same shape as `mean`.
      axis_name: inside `pmap`/`shard_map` with the batch split over this axis, draw the noise
        so that it does not depend on the number of devices (`batch_normal`).

    Returns:
      A sample with the shape and dtype of `mean`.

    Raises:
      ValueError: if the shapes differ.
    """
    mean, log_var = jnp.asarray(mean), jnp.asarray(log_var)
    _check_same_shape("reparameterize", mean=mean, log_var=log_var)
    eps = batch_normal(key, mean.shape, mean.dtype, axis_name) if mean.ndim else \
        jax.random.normal(key, mean.shape, dtype=mean.dtype)
    return mean + eps * jnp.exp(0.5 * log_var)


# ---------------------------------------------------------------------------------------------
# Conditional variational bounds


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
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{what}: x has shape {x.shape} and y has shape {y.shape}; their batch sizes "
            f"({x.shape[0]} and {y.shape[0]}) must be equal."
        )
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


# ---------------------------------------------------------------------------------------------
# Maximum mean discrepancy


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
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{what}: x has shape {x.shape} and y has shape {y.shape}; the feature sizes "
            f"({x.shape[1]} and {y.shape[1]}) must be equal."
        )


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


# ---------------------------------------------------------------------------------------------
# GAN losses

GAN_LOSS_KINDS = ("minimax", "non_saturating", "hinge", "least_squares")


def _check_gan_kind(kind: str) -> None:
    if kind not in GAN_LOSS_KINDS:
        raise ValueError(f"Unknown GAN loss kind {kind!r}; choose one of {GAN_LOSS_KINDS}.")


def _gan_event_ndims(what: str, logits: Array, event_ndims: int | None) -> int:
    """A logit is a scalar per example: by default `[B]` (or `[B, ...]`, summed over the rest)
    with the batch first; `event_ndims` as elsewhere (0 for one example's logit under vmap)."""
    if event_ndims is None:
        _check_min_rank(what, "logits", logits, 1)
        return logits.ndim - 1
    return _event_ndims(what, event_ndims, logits.ndim, "logits")


def gan_discriminator_loss(real_logits: ArrayLike, fake_logits: ArrayLike, kind: str, *,
                           event_ndims: int | None = None) -> Array:
    """Discriminator loss per example pair, from the discriminator's logits (D = σ(logit)).

    With r a logit on a real image and f a logit on a generated one:

    - "minimax" and "non_saturating" (they share D's loss; Goodfellow et al. 2014):
      -log σ(r) - log(1 - σ(f)) = softplus(-r) + softplus(f)
    - "hinge" (Lim & Ye 2017; Miyato et al. 2018): max(0, 1 - r) + max(0, 1 + f)
    - "least_squares" (Mao et al. 2017, targets a=0, b=1 on the raw outputs):
      ½ (r - 1)² + ½ f²

    Args:
      real_logits: `[B]` (or `[B, ...]`, summed over the non-batch axes).
      fake_logits: same shape as `real_logits`.
      kind: one of `GAN_LOSS_KINDS`.
      event_ndims: the trailing axes of one example (None: all but the first; 0 for one
        example's scalar logit, as inside `jax.vmap` over examples).

    Returns:
      `[B]` (the batch shape); the caller takes the mean.

    Raises:
      ValueError: on an unknown kind or a shape mismatch.
    """
    _check_gan_kind(kind)
    real_logits, fake_logits = _at_least_float32(real_logits, fake_logits)
    _check_same_shape("gan_discriminator_loss", real_logits=real_logits, fake_logits=fake_logits)
    k = _gan_event_ndims("gan_discriminator_loss", real_logits, event_ndims)
    if kind in ("minimax", "non_saturating"):
        # softplus(-r) = -log σ(r) and softplus(f) = -log(1 - σ(f)), without log(0) when σ saturates.
        per_elem = jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)
    elif kind == "hinge":
        per_elem = jax.nn.relu(1.0 - real_logits) + jax.nn.relu(1.0 + fake_logits)
    else:  # least_squares
        per_elem = 0.5 * jnp.square(real_logits - 1.0) + 0.5 * jnp.square(fake_logits)
    return _sum_event(per_elem, k)


def gan_generator_loss(fake_logits: ArrayLike, kind: str, *,
                       event_ndims: int | None = None) -> Array:
    """Generator loss per example, from the discriminator's logits f on generated images.

    - "minimax": log(1 - σ(f)) = -softplus(f) (the original min-max game; its gradient vanishes
      when the discriminator is confident)
    - "non_saturating": -log σ(f) = softplus(-f) (Goodfellow et al. 2014, section 3)
    - "hinge": -f
    - "least_squares": ½ (f - 1)²

    Args:
      fake_logits: `[B]` (or `[B, ...]`, summed over the non-batch axes).
      kind: one of `GAN_LOSS_KINDS`.
      event_ndims: as in `gan_discriminator_loss`.

    Returns:
      `[B]` (the batch shape); the caller takes the mean.

    Raises:
      ValueError: on an unknown kind or a missing batch axis.
    """
    _check_gan_kind(kind)
    (fake_logits,) = _at_least_float32(fake_logits)
    k = _gan_event_ndims("gan_generator_loss", fake_logits, event_ndims)
    if kind == "minimax":
        per_elem = -jax.nn.softplus(fake_logits)
    elif kind == "non_saturating":
        per_elem = jax.nn.softplus(-fake_logits)
    elif kind == "hinge":
        per_elem = -fake_logits
    else:  # least_squares
        per_elem = 0.5 * jnp.square(fake_logits - 1.0)
    return _sum_event(per_elem, k)
