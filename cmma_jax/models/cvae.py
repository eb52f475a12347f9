"""CVAE: the conditional variational autoencoder baseline of the CMMA paper (section 4.2, eq. 13).

The latent z is independent of the attributes y a priori; the decoder sees both (erratum 4):

    p(z) = N(0, I)
    p(x | z, y) = N(g_μ([z; y]), exp(g_σ([z; y])))     (g: `nets.ImageDecoder`, y concatenated to z)
    q(z | x, y) = N(h_μ(x, y), exp(h_σ(x, y)))         (h: `nets.ImageEncoder`, y concatenated to
                                                        the flattened features; on by default,
                                                        `config.model.feed_attributes_to_encoder`)

The networks mirror the CMMA's h and g exactly (section 4.2: "the encoder and decoder of CVAE
closely mimic the MLPs g and h of CMMA"); only the attribute inputs differ. Training maximises

    log p(x | y) >= E_q[log p(x | y, z)] - KL(q(z | x, y) ‖ N(0, I))     (eq. 13, losses.cvae_elbo)

with one sample of z per example.

Public functions (the model contract of docs/design.md; `params` is `state.params`; what the
CVAE shares with the CMMA is in `cmma_jax.models.gaussian`):

  get_model(config, num_attributes) -> CVAE
  init_state(key, config, example_batch) -> TrainState
  train_step(state, batch, key, *, config, axis_name=None) -> (state, metrics)
  bound(params, batch, key, *, config, num_samples=1, axis_name=None) -> losses.ElboTerms  ([B])
  iwae(params, batch, key, *, config, num_samples) -> [B]
  sample(params, attributes, key, temperature=1.0, *, config) -> [B, 64, 64, 3]
  encode(params, image, attributes, *, config) -> (mean, log_var)
  reconstruct(params, image, attributes, *, config) -> [B, 64, 64, 3]
  edit(params, image, attrs_from, attrs_to, *, config) -> [B, 64, 64, 3]
  capabilities(config) -> frozenset of `cmma_jax.models.CAPABILITIES`
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from cmma_jax import losses, nets
from cmma_jax.models import common, gaussian

Array = jax.Array

PROGRESS_METRICS = gaussian.PROGRESS_METRICS


class CVAE(gaussian.GaussianLatentModel):
    """The CVAE networks: encoder q(z | x, y) and decoder p(x | z, y).

    Attributes: those of `gaussian.GaussianLatentModel` (features, latent_dim, feed_attributes,
    decoder_log_var_range, latent_log_var_range, conv_impl, dtype), with feed_attributes True by
    default (q(z | x, y) of eq. 13), and
      condition_decoder: concatenate y to z in the decoder (True, eq. 13). False is an ablation:
        p(x | z) with the prior N(0, I), so that nothing but the encoder sees y; with it, the
        CVAE's decoder is the CMMA's and the two differ only in the prior and the encoder.
    """

    LEARNED_PRIOR = False

    feed_attributes: bool = True
    condition_decoder: bool = True

    def decode(self, z: Array, y: Array) -> tuple[Array, Array]:
        """p(x | z, y): (mean, log_var), each `[B, 64, 64, 3]` float32; y is concatenated to z
        (not with `condition_decoder=False`)."""
        return self.decoder(z, y if self.condition_decoder else None)

    def prior(self, y: Array) -> tuple[Array, Array]:
        """p(z) = N(0, I) (independent of y), as (mean, log_var) `[B, J]`."""
        zeros = jnp.zeros((y.shape[0], self.latent_dim), jnp.float32)
        return zeros, zeros

    def generate(self, y: Array, temperature: float | Array = 1.0) -> Array:
        """Faces from attributes: g_μ([temperature · ε; y]), ε ~ N(0, I) from the "sample" stream.
        Temperature 0 decodes z = 0, the prior mean."""
        eps = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dim),
                                jnp.float32)
        return self.decode(temperature * eps, y)[0]

    def edit(self, x: Array, y_from: Array, y_to: Array) -> Array:
        """Changing attributes: encode with the old attributes (mean), decode with the new:
        g_μ([h_μ(x, y_from); y_to])."""
        return self.decode(self.encode(x, y_from)[0], y_to)[0]


def get_model(config, num_attributes: Optional[int] = None) -> CVAE:
    """The CVAE module of a config (`num_attributes` is accepted for the common interface)."""
    del num_attributes
    sizes = nets.resolve_sizes(config.model)
    return CVAE(**gaussian.model_fields(config, sizes, feed_attributes=True),
                condition_decoder=bool(config.model.get("condition_decoder", True)))


def capabilities(config) -> frozenset[str]:
    """What a CVAE can do (`cmma_jax.models.CAPABILITIES`): sample, encode, reconstruct, edit,
    bound, iwae."""
    del config
    return gaussian.CAPABILITIES


def init_state(key: Array, config, example_batch: Mapping[str, Any]) -> common.TrainState:
    """Initial `TrainState` (float32 parameters, Adam state, int32 step 0)."""
    return common.init_train_state(get_model, key, config, example_batch)


def bound(params, batch: Mapping[str, Array], key: Array, *, config,
          num_samples: int = 1, axis_name: Optional[str] = None) -> losses.ElboTerms:
    """The CVAE bound (eq. 13) per example: `losses.cvae_elbo`, each term `[B]` in nats.

    `train_step` minimises `-bound(...).elbo.mean()` with the same key, so the two agree exactly.
    Under `pmap` (`axis_name`) it returns the terms of the global batch on every device, with the
    noise a single device would draw (`common.globalize`).
    """
    return gaussian.bound(losses.cvae_elbo, get_model, params, batch, key, config=config,
                          num_samples=num_samples, axis_name=axis_name)


def iwae(params, batch: Mapping[str, Array], key: Array, *, config, num_samples: int) -> Array:
    """The importance-weighted bound on log p(x | y) (prior N(0, I)), `[B]` nats."""
    return gaussian.iwae(get_model, params, batch, key, config=config, num_samples=num_samples)


def train_step(state: common.TrainState, batch: Mapping[str, Array], key: Array, *,
               config, axis_name: Optional[str] = None
               ) -> tuple[common.TrainState, dict[str, Array]]:
    """One Adam step on the negative CVAE bound; metrics: loss, elbo, log_likelihood, kl,
    grad_norm, param_norm. `axis_name`: the pmap axis, if any (`gaussian.elbo_train_step`)."""
    return gaussian.elbo_train_step(
        state, batch, key,
        bound_fn=functools.partial(bound, config=config, num_samples=1), axis_name=axis_name,
        kl_warmup_steps=int(config.training.get("kl_warmup_steps") or 0))


def sample(params, attributes: Array, key: Array, temperature: float | Array = 1.0, *,
           config) -> Array:
    """Faces from attributes, `[B, 64, 64, 3]`: g_μ([temperature · ε; y]); temperature 0 = z = 0."""
    return common.sample_images(get_model, params, attributes, key, temperature, config)


def encode(params, image: Array, attributes: Array, *, config) -> tuple[Array, Array]:
    """q(z | x, y): (mean, log_var), each `[B, latent_dim]`."""
    return common.apply_to_images(get_model, params, image, attributes, CVAE.encode, config)


def reconstruct(params, image: Array, attributes: Array, *, config) -> Array:
    """g_μ([h_μ(x, y); y]), `[B, 64, 64, 3]`."""
    return common.apply_to_images(get_model, params, image, attributes, CVAE.reconstruct, config)


def edit(params, image: Array, attrs_from: Array, attrs_to: Array, *, config) -> Array:
    """Changes the attributes of faces: g_μ([h_μ(x, y_from); y_to])."""
    return common.edit_images(get_model, params, image, attrs_from, attrs_to, config)
