"""GAN losses per example, from the discriminator's logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cmma_jax.losses._contract import (Array, ArrayLike, _at_least_float32, _check_min_rank,
                                       _check_same_shape, _event_ndims, _sum_event)

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
