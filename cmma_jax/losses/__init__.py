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

Modules (each name below is importable from `cmma_jax.losses` itself, the one import path):
  likelihoods: `gaussian_log_likelihood`, `bernoulli_log_likelihood`.
  divergences: `gaussian_kl`, `standard_normal_kl`.
  sampling: `batch_normal`, `reparameterize`.
  bounds: `ElboTerms`, `ELBO_TERMS`, `conditional_elbo`, `cmma_elbo`, `cvae_elbo`, `iwae_bound`.
  kernels: `gaussian_kernel`, `imq_kernel`, `mmd`.
  gan: `GAN_LOSS_KINDS`, `gan_discriminator_loss`, `gan_generator_loss`.
  _contract: the shared shape checks, `event_ndims` and float32 helpers.
"""

from __future__ import annotations

# The type names of the signatures (`losses.Array`, `losses.EncodeFn`, ...) are here as well.
from cmma_jax.losses._contract import Array, ArrayLike, GaussianParams  # noqa: F401
from cmma_jax.losses.bounds import (ELBO_TERMS, DecodeFn, ElboTerms, EncodeFn,  # noqa: F401
                                    PriorFn, cmma_elbo, conditional_elbo, cvae_elbo, iwae_bound)
from cmma_jax.losses.divergences import gaussian_kl, standard_normal_kl
from cmma_jax.losses.gan import GAN_LOSS_KINDS, gan_discriminator_loss, gan_generator_loss
from cmma_jax.losses.kernels import gaussian_kernel, imq_kernel, mmd
from cmma_jax.losses.likelihoods import bernoulli_log_likelihood, gaussian_log_likelihood
from cmma_jax.losses.sampling import batch_normal, reparameterize

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
