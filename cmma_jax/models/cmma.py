"""CMMA: the conditional multimodal autoencoder of Pandey & Dukkipati (2016), section 2 and 4.1.

The generative model is y -> z -> x: the attributes y set the prior over the latent z,

    p(z | y) = N(f_μ(y), exp(f_σ(y)))          (f: the attribute MLP, `nets.AttributeMLP`)
    p(x | z) = N(g_μ(z), exp(g_σ(z)))          (g: the image decoder, `nets.ImageDecoder`)
    q(z | x, y) = N(h_μ(x), exp(h_σ(x)))       (h: the image encoder, `nets.ImageEncoder`;
                                                y is fed to h only with the option
                                                `model.feed_attributes_to_encoder`, erratum 7)

and training maximises the conditional bound (eq. 6; `losses.cmma_elbo`)

    log p(x | y) >= E_q[log p(x | z)] - KL(q(z | x, y) ‖ p(z | y)),

with one sample of z per example (section 2.3). σ's are log-variances everywhere (erratum 2).

Public functions (the model contract of DESIGN.md; `config` is the full ConfigDict, bound with
`functools.partial` before `jax.jit`):

  get_model(config, num_attributes) -> CMMA
  init_state(key, config, example_batch) -> TrainState
  train_step(state, batch, key, *, config, axis_name=None) -> (state, metrics)
  bound(params, batch, key, *, config, num_samples=1, axis_name=None) -> losses.ElboTerms  ([B])
  iwae(params, batch, key, *, config, num_samples) -> [B]
  sample(params, attributes, key, temperature=1.0, *, config) -> [B, 64, 64, 3]
  encode(params, image, attributes, *, config) -> (mean, log_var)
  reconstruct(params, image, attributes, *, config) -> [B, 64, 64, 3]
  edit(params, image, attrs_from, attrs_to, *, config) -> [B, 64, 64, 3]

`params` is `state.params` (the inner parameter dict, without the "params" collection key).
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


class CMMA(nn.Module):
    """The CMMA networks f, h, g (section 4.1), with one method per entry point.

    Attributes:
      features: (c1, c2, c3), the widths of h and g.
      latent_dim: size of z (500 in the paper).
      attribute_hidden: hidden units of f (800 in the paper).
      feed_attributes: feed y to the encoder h (erratum 7; off in the paper).
      decoder_log_var_range: optional soft-clip range of the pixel log-variance g_σ (None = linear).
      latent_log_var_range: optional soft-clip range of h_σ and f_σ (None = linear).
      conv_impl: convolution implementation (`nets.Conv`).
      dtype: computation dtype; parameters are float32.
    """

    features: Sequence[int]
    latent_dim: int
    attribute_hidden: int
    feed_attributes: bool = False
    decoder_log_var_range: Optional[tuple[float, float]] = None
    latent_log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    def setup(self):
        self.attribute_net = nets.AttributeMLP(  # f
            self.attribute_hidden, self.latent_dim, self.latent_log_var_range, self.dtype)
        self.encoder = nets.ImageEncoder(  # h
            self.features, self.latent_dim, self.feed_attributes, self.latent_log_var_range,
            self.conv_impl, self.dtype)
        self.decoder = nets.ImageDecoder(  # g
            self.features, True, self.decoder_log_var_range, self.conv_impl, self.dtype)

    def prior(self, y: Array) -> tuple[Array, Array]:
        """p(z | y): (f_μ(y), f_σ(y)), each `[B, J]` float32."""
        return self.attribute_net(y)

    def encode(self, x: Array, y: Array) -> tuple[Array, Array]:
        """q(z | x, y): (h_μ, h_σ), each `[B, J]` float32 (y is used only with feed_attributes)."""
        return self.encoder(x, y if self.feed_attributes else None)

    def decode(self, z: Array, y: Optional[Array] = None) -> tuple[Array, Array]:
        """p(x | z): (g_μ(z), g_σ(z)), each `[B, 64, 64, 3]` float32. The CMMA decoder ignores y."""
        del y
        return self.decoder(z)

    def generate(self, y: Array, temperature: float | Array = 1.0) -> Array:
        """Faces from attributes: g_μ(z), z = f_μ(y) + temperature · exp(f_σ(y) / 2) ⊙ ε.

        Temperature 0 is the paper's "variance set to 0" (erratum 8): z = f_μ(y). Draws ε from
        the "sample" rng stream.
        """
        mean, log_var = self.prior(y)
        eps = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
        z = mean + temperature * jnp.exp(0.5 * log_var) * eps
        return self.decode(z)[0]

    def reconstruct(self, x: Array, y: Array) -> Array:
        """g_μ(h_μ(x)): the reconstruction through the posterior mean."""
        return self.decode(self.encode(x, y)[0])[0]

    def edit(self, x: Array, y_from: Array, y_to: Array) -> Array:
        """Changing a face's attributes (section 4.5.2, erratum 8), with means throughout:

            z = h_μ(x) + f_μ(y_to) - f_μ(y_from),   image = g_μ(z)
        """
        z = self.encode(x, y_from)[0] + self.prior(y_to)[0] - self.prior(y_from)[0]
        return self.decode(z)[0]

    def __call__(self, x: Array, y: Array) -> common.GaussianVAEOutput:
        """Every network once (used by `init`): posterior, prior, and p(x | z = posterior mean)."""
        mean_q, log_var_q = self.encode(x, y)
        mean_p, log_var_p = self.prior(y)
        image_mean, image_log_var = self.decode(mean_q)
        return common.GaussianVAEOutput(mean_q, log_var_q, mean_p, log_var_p, image_mean,
                                        image_log_var)


def get_model(config, num_attributes: Optional[int] = None) -> CMMA:
    """The CMMA module of a config (`config.model`: preset, sizes, dtype, options).

    `num_attributes` is accepted for the common interface; the networks infer the input size.
    """
    del num_attributes
    m = config.model
    sizes = nets.resolve_sizes(m)
    return CMMA(
        features=sizes["encoder_features"],
        latent_dim=sizes["latent_dim"],
        attribute_hidden=sizes["attribute_hidden"],
        feed_attributes=bool(m.get("feed_attributes_to_encoder", False)),
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
    encode_fn = lambda x, y: model.apply(variables, x, y, method=CMMA.encode)  # noqa: E731
    decode_fn = lambda z, y: model.apply(variables, z, y, method=CMMA.decode)  # noqa: E731
    prior_fn = lambda y: model.apply(variables, y, method=CMMA.prior)  # noqa: E731
    return encode_fn, decode_fn, prior_fn


def bound(params, batch: Mapping[str, Array], key: Array, *, config,
          num_samples: int = 1, axis_name: Optional[str] = None) -> losses.ElboTerms:
    """The CMMA bound (eq. 6) per example: `losses.cmma_elbo`, each term `[B]` in nats.

    `train_step` minimises `-bound(...).elbo.mean()` with the same key, so the two agree exactly.
    Under `pmap` (`axis_name`) it returns the terms of the global batch on every device, with the
    noise a single device would draw (`common.globalize`).
    """
    x, y = common.batch_inputs(batch)
    fns = _callables(params, config, y.shape[-1])
    encode_fn, decode_fn, prior_fn = (common.globalize(f, x.shape[0], axis_name) for f in fns)
    x, y = common.gather_rows((x, y), axis_name)
    return losses.cmma_elbo(key, x, y, encode=encode_fn, decode=decode_fn, prior=prior_fn,
                            num_samples=num_samples)


def iwae(params, batch: Mapping[str, Array], key: Array, *, config, num_samples: int) -> Array:
    """The importance-weighted bound on log p(x | y) with `num_samples` samples, `[B]` nats."""
    x, y = common.batch_inputs(batch)
    encode_fn, decode_fn, prior_fn = _callables(params, config, y.shape[-1])
    return losses.iwae_bound(key, x, y, encode=encode_fn, decode=decode_fn, prior=prior_fn,
                             num_samples=num_samples)


def train_step(state: common.TrainState, batch: Mapping[str, Array], key: Array, *,
               config, axis_name: Optional[str] = None
               ) -> tuple[common.TrainState, dict[str, Array]]:
    """One Adam step on the negative CMMA bound; metrics: loss, elbo, log_likelihood, kl,
    grad_norm, param_norm (float32 scalars on the device). `axis_name`: the pmap axis, if any
    (`common.elbo_train_step`)."""
    return common.elbo_train_step(
        state, batch, key,
        bound_fn=functools.partial(bound, config=config, num_samples=1), axis_name=axis_name)


def sample(params, attributes: Array, key: Array, temperature: float | Array = 1.0, *,
           config) -> Array:
    """Faces from attributes, `[B, 64, 64, 3]`: g_μ(f_μ(y) + temperature · exp(f_σ/2) ⊙ ε).

    Temperature 0 gives the means only (the paper's "variance 0"), whatever the key.
    """
    attributes = jnp.asarray(attributes, jnp.float32)
    model = get_model(config, attributes.shape[-1])
    return model.apply({"params": params}, attributes, temperature, method=CMMA.generate,
                       rngs={"sample": key})


def encode(params, image: Array, attributes: Array, *, config) -> tuple[Array, Array]:
    """q(z | x, y): (h_μ, h_σ), each `[B, latent_dim]`."""
    return common.apply_to_images(get_model, params, image, attributes, CMMA.encode, config)


def reconstruct(params, image: Array, attributes: Array, *, config) -> Array:
    """g_μ(h_μ(x)), `[B, 64, 64, 3]`."""
    return common.apply_to_images(get_model, params, image, attributes, CMMA.reconstruct, config)


def edit(params, image: Array, attrs_from: Array, attrs_to: Array, *, config) -> Array:
    """Changes the attributes of faces (erratum 8): g_μ(h_μ(x) + f_μ(y_to) - f_μ(y_from))."""
    x, y_from, y_to = common.edit_inputs(image, attrs_from, attrs_to)
    model = get_model(config, y_from.shape[-1])
    return model.apply({"params": params}, x, y_from, y_to, method=CMMA.edit)
