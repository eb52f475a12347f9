"""CGAN: the conditional generative adversarial network baseline of the CMMA paper (section 4.2).

    generator      G(z, y): the decoder g with its mean head only (sigmoid), input [z; y],
                            z ~ N(0, I)                                 (`nets.ImageDecoder`)
    discriminator  D(x, y): the encoder h's convolutions, flatten, [.; y], a hidden layer, one
                            logit                                       (`nets.Discriminator`)

("the generator and discriminator of CGAN ... closely mimic the MLPs g and h of CMMA", section 4.2;
Mirza & Osindero 2014; Gauthier 2015.) The losses are those of `cmma_jax.losses`
(`config.model.gan_loss`: "non_saturating" by default, or "minimax", "hinge", "least_squares").
Each step updates the discriminator once, then the generator once against the updated
discriminator (alternating updates), each with its own Adam (`config.optimizer.discriminator_lr`,
`config.optimizer.generator_lr`). Fake images are generated with the batch's own attributes.

The state is ONE pytree (`GANTrainState`) with one `step`: `params` and `opt_state` are dicts with
the keys "generator" and "discriminator" (the two sub-modules of `CGAN`, so `params` is also the
full parameter dict of the `CGAN` module).

Public functions (`params` is `state.params`):

  get_model(config, num_attributes) -> CGAN
  init_state(key, config, example_batch) -> GANTrainState
  train_step(state, batch, key, *, config, axis_name=None) -> (state, metrics)
  sample(params, attributes, key, temperature=1.0, *, config) -> [B, 64, 64, 3]
  discriminate(params, image, attributes, *, config) -> [B] logits
  capabilities(config) -> frozenset({"sample"})

The CGAN has no encoder and no bound (its log-likelihood is estimated with Parzen windows).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cmma_jax import losses, nets
from cmma_jax.models import common

Array = jax.Array
PyTree = Any

NETWORKS = ("generator", "discriminator")

PROGRESS_METRICS = ("loss", "d_loss", "g_loss")


@flax.struct.dataclass
class CGANOutput:
    """What the CGAN's forward pass (`CGAN.__call__`) returns.

    Attributes:
      generated: G(0, y), `[B, 64, 64, 3]` in (0, 1).
      logits: D(x, y), `[B]`.
    """

    generated: Array
    logits: Array


class CGAN(nn.Module):
    """Generator G(z, y) and discriminator D(x, y).

    Attributes:
      features: (c1, c2, c3), the widths of both networks.
      latent_dim: size of z.
      discriminator_hidden: units of D's hidden layer.
      conv_impl: convolution implementation (`nets.Conv`).
      dtype: computation dtype; parameters are float32.
    """

    features: Sequence[int]
    latent_dim: int
    discriminator_hidden: int
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    def setup(self):
        self.generator = nets.ImageDecoder(self.features, False, None, self.conv_impl, self.dtype)
        self.discriminator = nets.Discriminator(self.features, self.discriminator_hidden,
                                                self.conv_impl, self.dtype)

    def generate_from_latent(self, z: Array, y: Array) -> Array:
        """G(z, y): `[B, J]`, `[B, A]` -> images `[B, 64, 64, 3]` in (0, 1), float32."""
        return self.generator(z, y)[0]

    def discriminate(self, x: Array, y: Array) -> Array:
        """D(x, y): images `[B, 64, 64, 3]`, attributes `[B, A]` -> logits `[B]`, float32."""
        return self.discriminator(x, y)

    def generate(self, y: Array, temperature: float | Array = 1.0) -> Array:
        """G(temperature · ε, y), ε ~ N(0, I) from the "sample" stream (temperature 0: z = 0)."""
        eps = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dim),
                                jnp.float32)
        return self.generate_from_latent(temperature * eps, y)

    def __call__(self, x: Array, y: Array) -> CGANOutput:
        """Both networks once (used by `init`): G(0, y) and D(x, y)."""
        z = jnp.zeros((y.shape[0], self.latent_dim), jnp.float32)
        return CGANOutput(generated=self.generate_from_latent(z, y),
                          logits=self.discriminate(x, y))


@flax.struct.dataclass
class GANTrainState:
    """The CGAN's training state: both networks, both optimizers, one step.

    Attributes:
      step: int32 scalar, the number of (discriminator + generator) updates done.
      params: {"generator": ..., "discriminator": ...}, float32.
      opt_state: {"generator": ..., "discriminator": ...}: the two Adam states.
      apply_fn: `CGAN.apply` (static).
      tx: {"generator": ..., "discriminator": ...}: the two optax transformations (static).
    """

    step: Array
    params: PyTree
    opt_state: PyTree
    apply_fn: Callable[..., Any] = flax.struct.field(pytree_node=False)
    tx: Mapping[str, optax.GradientTransformation] = flax.struct.field(pytree_node=False)


def get_model(config, num_attributes: Optional[int] = None) -> CGAN:
    """The CGAN module of a config (`num_attributes` is accepted for the common interface)."""
    del num_attributes
    sizes = nets.resolve_sizes(config.model)
    return CGAN(
        features=sizes["encoder_features"],
        latent_dim=sizes["latent_dim"],
        discriminator_hidden=sizes["discriminator_hidden"],
        **common.network_options(config),
    )


def capabilities(config) -> frozenset[str]:
    """What a CGAN can do (`cmma_jax.models.CAPABILITIES`): sample only (no encoder, no bound)."""
    del config
    return frozenset({"sample"})


def make_optimizers(config) -> dict[str, optax.GradientTransformation]:
    """Adam for each network, with `optimizer.generator_lr` and `optimizer.discriminator_lr`
    (falling back to `optimizer.learning_rate`); the other Adam settings are shared."""
    o = config.optimizer
    lr = {"generator": o.get("generator_lr", None),
          "discriminator": o.get("discriminator_lr", None)}
    return {name: common.make_optimizer(o, learning_rate=lr[name] or o["learning_rate"])
            for name in NETWORKS}


def init_state(key: Array, config, example_batch: Mapping[str, Any]) -> GANTrainState:
    """Initial `GANTrainState` (float32 parameters, two Adam states, int32 step 0)."""
    image, attributes = common.batch_inputs(example_batch)
    model = get_model(config, attributes.shape[-1])
    params = jax.jit(lambda k: common.init_params(model, k, image, attributes))(key)
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
    tx = make_optimizers(config)
    opt_state = {name: tx[name].init(params[name]) for name in NETWORKS}
    return GANTrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                         apply_fn=model.apply, tx=tx)


def train_step(state: GANTrainState, batch: Mapping[str, Array], key: Array, *,
               config, axis_name: Optional[str] = None) -> tuple[GANTrainState, dict[str, Array]]:
    """One discriminator update, then one generator update against the updated discriminator.

    Discriminator: minimises mean_b gan_discriminator_loss(D(x_b, y_b), D(G(z_b, y_b), y_b)).
    Generator: minimises mean_b gan_generator_loss(D(G(z'_b, y_b), y_b)) with fresh z'.

    Metrics: "loss" (= d_loss + g_loss, for finiteness checks; it need not fall), "d_loss",
    "g_loss", "d_real" and "d_fake" (mean discriminator logits on real and on generated images
    in the discriminator update), "g_grad_norm", "d_grad_norm", "g_param_norm", "d_param_norm",
    and "grad_norm", "param_norm" (over both networks).

    `axis_name`: the pmap axis, if any: each device takes its rows of the noise drawn for the
    global batch (`losses.batch_normal`), and both networks' gradients and the metrics are averaged
    over the devices: the same step as on one device.
    """
    x, y = common.batch_inputs(batch)
    kind = config.model.get("gan_loss", "non_saturating")
    model = get_model(config, y.shape[-1])
    latent_dim = model.latent_dim
    key_d, key_g = jax.random.split(key)
    z_d = losses.batch_normal(key_d, (x.shape[0], latent_dim), jnp.float32, axis_name)
    z_g = losses.batch_normal(key_g, (x.shape[0], latent_dim), jnp.float32, axis_name)

    def apply(g_params, d_params, *args, method):
        return model.apply({"params": {"generator": g_params, "discriminator": d_params}},
                           *args, method=method)

    g_params, d_params = state.params["generator"], state.params["discriminator"]
    fake = jax.lax.stop_gradient(
        apply(g_params, d_params, z_d, y, method=CGAN.generate_from_latent))

    def d_loss_fn(d_params):
        # Real and generated images in one pass: one convolution per layer, not two.
        logits = apply(g_params, d_params, jnp.concatenate([x, fake]), jnp.concatenate([y, y]),
                       method=CGAN.discriminate)
        real_logits, fake_logits = jnp.split(logits, 2)
        loss = jnp.mean(losses.gan_discriminator_loss(real_logits, fake_logits, kind))
        return loss, (jnp.mean(real_logits), jnp.mean(fake_logits))

    (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    d_grads = common.cross_device_mean(d_grads, axis_name)
    d_updates, d_opt_state = state.tx["discriminator"].update(
        d_grads, state.opt_state["discriminator"], d_params)
    new_d_params = optax.apply_updates(d_params, d_updates)

    def g_loss_fn(g_params):
        fake = apply(g_params, new_d_params, z_g, y, method=CGAN.generate_from_latent)
        logits = apply(g_params, new_d_params, fake, y, method=CGAN.discriminate)
        return jnp.mean(losses.gan_generator_loss(logits, kind))

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(g_params)
    g_grads = common.cross_device_mean(g_grads, axis_name)
    g_updates, g_opt_state = state.tx["generator"].update(
        g_grads, state.opt_state["generator"], g_params)
    new_g_params = optax.apply_updates(g_params, g_updates)

    g_grad_norm, d_grad_norm = common.global_norm(g_grads), common.global_norm(d_grads)
    g_param_norm, d_param_norm = common.global_norm(g_params), common.global_norm(d_params)
    metrics = {
        "loss": d_loss + g_loss,
        "d_loss": d_loss,
        "g_loss": g_loss,
        "d_real": d_real,
        "d_fake": d_fake,
        "g_grad_norm": g_grad_norm,
        "d_grad_norm": d_grad_norm,
        "g_param_norm": g_param_norm,
        "d_param_norm": d_param_norm,
        "grad_norm": jnp.sqrt(jnp.square(g_grad_norm) + jnp.square(d_grad_norm)),
        "param_norm": jnp.sqrt(jnp.square(g_param_norm) + jnp.square(d_param_norm)),
    }
    metrics = common.cross_device_mean(metrics, axis_name)
    new_state = state.replace(
        step=state.step + 1,
        params={"generator": new_g_params, "discriminator": new_d_params},
        opt_state={"generator": g_opt_state, "discriminator": d_opt_state},
    )
    return new_state, common.f32_metrics(metrics)


def sample(params, attributes: Array, key: Array, temperature: float | Array = 1.0, *,
           config) -> Array:
    """Faces from attributes, `[B, 64, 64, 3]`: G(temperature · ε, y); temperature 0: G(0, y)."""
    return common.sample_images(get_model, params, attributes, key, temperature, config)


def discriminate(params, image: Array, attributes: Array, *, config) -> Array:
    """D(x, y): the discriminator's logits `[B]`."""
    return common.apply_to_images(get_model, params, image, attributes, CGAN.discriminate, config)
