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

Public functions (the model contract of DESIGN.md; `params` is `state.params`):

  get_model(config, num_attributes) -> CVAE
  init_state(key, config, example_batch) -> TrainState
  train_step(state, batch, key, *, config, axis_name=None) -> (state, metrics)
  bound(params, batch, key, *, config, num_samples=1, axis_name=None) -> losses.ElboTerms  ([B])
  iwae(params, batch, key, *, config, num_samples) -> [B]
  sample(params, attributes, key, temperature=1.0, *, config) -> [B, 64, 64, 3]
  encode(params, image, attributes, *, config) -> (mean, log_var)
  reconstruct(params, image, attributes, *, config) -> [B, 64, 64, 3]
  edit(params, image, attrs_from, attrs_to, *, config) -> [B, 64, 64, 3]
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmma_jax import losses, nets
from cmma_jax.models import common

Array = jax.Array


class CVAE(nn.Module):
    """The CVAE networks: encoder q(z | x, y) and decoder p(x | z, y).

    Attributes:
      features: (c1, c2, c3), the widths of the encoder and decoder.
      latent_dim: size of z.
      feed_attributes: feed y to the encoder (q(z | x, y) of eq. 13; True by default).
      decoder_log_var_range: optional soft-clip range of the pixel log-variance (None = linear).
      latent_log_var_range: optional soft-clip range of the posterior log-variance.
      conv_impl: convolution implementation (`nets.Conv`).
      dtype: computation dtype; parameters are float32.
    """

    features: Sequence[int]
    latent_dim: int
    feed_attributes: bool = True
    decoder_log_var_range: Optional[tuple[float, float]] = None
    latent_log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    def setup(self):
        self.encoder = nets.ImageEncoder(
            self.features, self.latent_dim, self.feed_attributes, self.latent_log_var_range,
            self.conv_impl, self.dtype)
        self.decoder = nets.ImageDecoder(
            self.features, True, self.decoder_log_var_range, self.conv_impl, self.dtype)

    def encode(self, x: Array, y: Array) -> tuple[Array, Array]:
        """q(z | x, y): (mean, log_var), each `[B, J]` float32."""
        return self.encoder(x, y if self.feed_attributes else None)

    def decode(self, z: Array, y: Array) -> tuple[Array, Array]:
        """p(x | z, y): (mean, log_var), each `[B, 64, 64, 3]` float32; y is concatenated to z."""
        return self.decoder(z, y)

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

    def reconstruct(self, x: Array, y: Array) -> Array:
        """g_μ([h_μ(x, y); y])."""
        return self.decode(self.encode(x, y)[0], y)[0]

    def edit(self, x: Array, y_from: Array, y_to: Array) -> Array:
        """Changing attributes: encode with the old attributes (mean), decode with the new:
        g_μ([h_μ(x, y_from); y_to])."""
        return self.decode(self.encode(x, y_from)[0], y_to)[0]

    def __call__(self, x: Array, y: Array) -> common.GaussianVAEOutput:
        """Every network once (used by `init`)."""
        mean_q, log_var_q = self.encode(x, y)
        mean_p, log_var_p = self.prior(y)
        image_mean, image_log_var = self.decode(mean_q, y)
        return common.GaussianVAEOutput(mean_q, log_var_q, mean_p, log_var_p, image_mean,
                                        image_log_var)


def get_model(config, num_attributes: Optional[int] = None) -> CVAE:
    """The CVAE module of a config (`num_attributes` is accepted for the common interface)."""
    del num_attributes
    m = config.model
    sizes = nets.resolve_sizes(m)
    return CVAE(
        features=sizes["encoder_features"],
        latent_dim=sizes["latent_dim"],
        feed_attributes=bool(m.get("feed_attributes_to_encoder", True)),
        decoder_log_var_range=common.optional_range(m.get("decoder_log_var_range", None)),
        latent_log_var_range=common.optional_range(m.get("latent_log_var_range", None)),
        conv_impl=m.get("conv_impl", "auto"),
        dtype=common.model_dtype(config),
    )


def init_state(key: Array, config, example_batch: Mapping[str, Any]) -> common.TrainState:
    """Initial `TrainState` (float32 parameters, Adam state, int32 step 0)."""
    image, attributes = common.example_inputs(example_batch)
    model = get_model(config, attributes.shape[-1])
    params = jax.jit(lambda k: common.init_params(model, k, image, attributes))(key)
    return common.create_train_state(model.apply, params, common.make_optimizer(config.optimizer))


def _callables(params, config, num_attributes: int):
    model = get_model(config, num_attributes)
    variables = {"params": params}
    encode_fn = lambda x, y: model.apply(variables, x, y, method=CVAE.encode)  # noqa: E731
    decode_fn = lambda z, y: model.apply(variables, z, y, method=CVAE.decode)  # noqa: E731
    return encode_fn, decode_fn


def bound(params, batch: Mapping[str, Array], key: Array, *, config,
          num_samples: int = 1, axis_name: Optional[str] = None) -> losses.ElboTerms:
    """The CVAE bound (eq. 13) per example: `losses.cvae_elbo`, each term `[B]` in nats.

    `train_step` minimises `-bound(...).elbo.mean()` with the same key, so the two agree exactly.
    Under `pmap` (`axis_name`) it returns the terms of the global batch on every device, with the
    noise a single device would draw (`common.globalize`).
    """
    x, y = common.batch_inputs(batch)
    fns = _callables(params, config, y.shape[-1])
    encode_fn, decode_fn = (common.globalize(f, x.shape[0], axis_name) for f in fns)
    x, y = common.gather_rows((x, y), axis_name)
    return losses.cvae_elbo(key, x, y, encode=encode_fn, decode=decode_fn,
                            num_samples=num_samples)


def iwae(params, batch: Mapping[str, Array], key: Array, *, config, num_samples: int) -> Array:
    """The importance-weighted bound on log p(x | y) (prior N(0, I)), `[B]` nats."""
    x, y = common.batch_inputs(batch)
    encode_fn, decode_fn = _callables(params, config, y.shape[-1])
    return losses.iwae_bound(key, x, y, encode=encode_fn, decode=decode_fn, prior=None,
                             num_samples=num_samples)


def train_step(state: common.TrainState, batch: Mapping[str, Array], key: Array, *,
               config, axis_name: Optional[str] = None
               ) -> tuple[common.TrainState, dict[str, Array]]:
    """One Adam step on the negative CVAE bound; metrics: loss, elbo, log_likelihood, kl,
    grad_norm, param_norm. `axis_name`: the pmap axis, if any (`common.elbo_train_step`)."""
    return common.elbo_train_step(
        state, batch, key,
        bound_fn=functools.partial(bound, config=config, num_samples=1), axis_name=axis_name)


def sample(params, attributes: Array, key: Array, temperature: float | Array = 1.0, *,
           config) -> Array:
    """Faces from attributes, `[B, 64, 64, 3]`: g_μ([temperature · ε; y]); temperature 0 = z = 0."""
    attributes = jnp.asarray(attributes, jnp.float32)
    model = get_model(config, attributes.shape[-1])
    return model.apply({"params": params}, attributes, temperature, method=CVAE.generate,
                       rngs={"sample": key})


def encode(params, image: Array, attributes: Array, *, config) -> tuple[Array, Array]:
    """q(z | x, y): (mean, log_var), each `[B, latent_dim]`."""
    return common.apply_to_images(get_model, params, image, attributes, CVAE.encode, config)


def reconstruct(params, image: Array, attributes: Array, *, config) -> Array:
    """g_μ([h_μ(x, y); y]), `[B, 64, 64, 3]`."""
    return common.apply_to_images(get_model, params, image, attributes, CVAE.reconstruct, config)


def edit(params, image: Array, attrs_from: Array, attrs_to: Array, *, config) -> Array:
    """Changes the attributes of faces: g_μ([h_μ(x, y_from); y_to])."""
    x, y_from, y_to = common.edit_inputs(image, attrs_from, attrs_to)
    model = get_model(config, y_from.shape[-1])
    return model.apply({"params": params}, x, y_from, y_to, method=CVAE.edit)
