"""MMD-VLAE: a variational ladder autoencoder whose per-layer KL terms are MMD penalties (Xu 2018).

Networks (`nets.LadderEncoder`, `nets.LadderDecoder`): four latent layers z_1..z_4; z_l is read
from the encoder after stage l, so low layers see the image through shallow networks and high
layers through deep ones (Zhao, Song & Ermon 2017, "Learning Hierarchical Features from Generative
Models"); the generative path is top-down, z_4 entering deepest and z_1 just before the output.

    q(z_l | x) = N(μ_l(x), exp(v_l(x)))                  one Gaussian per layer (reparameterised)
    p(z_l) = N(0, I)
    p(x | z_1..z_4[, y]) = N(g_μ, exp(g_σ))              the Gaussian likelihood of the CMMA's g

Loss (Xu 2018, section 2.4, with the signs restored: docs/papers.md, section 3):

    loss = mean_b[ -log p(x_b | z_b[, y_b]) ]
           + Σ_l λ_l MMD²( {z_l,b ~ q(z_l | x_b)}_b , {ε_l,b ~ N(0, I)}_b )

The likelihood is per example (a sum over the 64·64·3 pixels, in nats) averaged over the batch;
each MMD is a statistic of the whole batch (B posterior samples against B fresh prior samples).

Kernel (`config.model.mmd_kernel`, `config.model.mmd_scales`), for a layer of size d:
  "gaussian" (the paper's choice): k(a, b) = Σ_s exp(-‖a - b‖² / (s · d)), i.e.
    `losses.gaussian_kernel` with bandwidth σ_s = sqrt(s · d / 2). With s = 1 this is the kernel
    exp(-‖a - b‖² / d) of public MMD-VAE code (InfoVAE).
  "imq": k(a, b) = Σ_s C_s / (C_s + ‖a - b‖²), C_s = s · 2 d (the WAE convention C = 2 d σ_p²
    for the prior N(0, I)); `losses.imq_kernel`.
λ_l: `config.model.mmd_weight` for every layer, or `config.model.mmd_layer_weights` (one per
layer). `config.model.mmd_unbiased` picks the U-statistic.

Conditioning (a choice of this project, not of the paper, whose VLAE is unconditional): with
`config.model.conditional` (default True) the attributes are concatenated to the top latent z_4 at
the input of the generative path, so the model generates faces from attributes like the CMMA and
`edit` changes attributes; the encoder never sees the attributes, and MMD matches the aggregate
posterior of each layer to N(0, I). With `conditional=False` it is the paper's unconditional
model: the attributes are ignored everywhere (they still give the batch size of `sample`), and
`edit` raises; use `face_arithmetic` instead.

Public functions (`params` is `state.params`):

  get_model(config, num_attributes) -> VLAE
  init_state(key, config, example_batch) -> TrainState
  train_step(state, batch, key, *, config, axis_name=None) -> (state, metrics)
  loss_terms(params, batch, key, *, config, axis_name=None) -> dict of per-example and batch terms
  sample(params, attributes, key, temperature=1.0, *, config) -> [B, 64, 64, 3]
  encode(params, image, attributes, *, config) -> (means, log_vars), lists of 4 [B, d_l]
  reconstruct(params, image, attributes, *, config) -> [B, 64, 64, 3]
  edit(params, image, attrs_from, attrs_to, *, config) -> [B, 64, 64, 3]
  decode_latents(params, latents, attributes, *, config) -> [B, 64, 64, 3]
  sample_latents(key, batch_size, temperature=1.0, *, config) -> list of 4 [B, d_l]
  traverse(params, attributes, layer, direction, values, key, temperature=1.0, *, config)
      -> [V, B, 64, 64, 3]
  face_arithmetic(params, images_a, images_b, images_c, attrs_a, attrs_b, attrs_c, *, config)
      -> [B, 64, 64, 3]   (A - B + C in every layer's latent space, Xu 2018 figure 4)
  capabilities(config) -> sample, encode, reconstruct, traverse, arithmetic (+ edit if conditional)

The flax module's methods return named structures: `LadderPosterior` (encode), `ImageGaussian`
(decode), `VLAEOutput` (the forward pass); the public functions above return plain arrays and
lists, as documented.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Mapping, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from cmma_jax import losses, nets
from cmma_jax.models import common

Array = jax.Array

NUM_LAYERS = nets.NUM_LADDER_LAYERS
MMD_KERNELS = ("gaussian", "imq")

PROGRESS_METRICS = ("loss",)


@flax.struct.dataclass
class LadderPosterior:
    """q(z_l | x) for every layer: `means` and `log_vars`, lists of 4 arrays `[B, d_l]` float32."""

    means: list[Array]
    log_vars: list[Array]


@flax.struct.dataclass
class ImageGaussian:
    """p(x | z_1..z_4[, y]): `mean` and `log_var`, each `[B, 64, 64, 3]` float32."""

    mean: Array
    log_var: Array


@flax.struct.dataclass
class VLAEOutput:
    """What the VLAE's forward pass returns: the posterior of every layer (`LadderPosterior`'s
    lists) and p(x | z = the posterior means[, y]) (`ImageGaussian`'s arrays)."""

    posterior_means: list[Array]
    posterior_log_vars: list[Array]
    image_mean: Array
    image_log_var: Array


class VLAE(nn.Module):
    """The ladder encoder and the top-down decoder.

    Attributes:
      features: (c1, c2, c3), the convolution widths.
      latent_dims: sizes of z_1..z_4.
      hidden: units of the dense (deepest) stage, in both directions.
      head_features: channels of the encoder's 1x1 head convolutions.
      inject_features: channels of each latent map injected into the decoder.
      conditional: feed the attributes to the decoder (with the top latent).
      decoder_log_var_range: optional soft-clip range of the pixel log-variance (None = linear).
      latent_log_var_range: optional soft-clip range of the posterior log-variances.
      decoder_variance: what the pixel variance depends on (`nets.DECODER_VARIANCES`).
      decoder_sigma: every pixel's standard deviation with decoder_variance "fixed".
      conv_impl: convolution implementation (`nets.Conv`).
      dtype: computation dtype; parameters are float32.
    """

    features: Sequence[int]
    latent_dims: Sequence[int]
    hidden: int
    head_features: int
    inject_features: int
    conditional: bool = True
    decoder_log_var_range: Optional[tuple[float, float]] = None
    latent_log_var_range: Optional[tuple[float, float]] = None
    decoder_variance: str = "pixel"
    decoder_sigma: float = nets.DEFAULT_DECODER_SIGMA
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    def setup(self):
        self.encoder = nets.LadderEncoder(
            self.features, self.latent_dims, self.hidden, self.head_features,
            self.latent_log_var_range, self.conv_impl, self.dtype)
        self.decoder = nets.LadderDecoder(
            self.features, self.hidden, self.inject_features, self.decoder_log_var_range,
            self.conv_impl, self.dtype, variance=self.decoder_variance,
            sigma=self.decoder_sigma)

    def encode(self, x: Array, y: Optional[Array] = None) -> LadderPosterior:
        """q(z_l | x) for every layer (y unused)."""
        del y
        means, log_vars = self.encoder(x)
        return LadderPosterior(means=means, log_vars=log_vars)

    def decode(self, latents: Sequence[Array], y: Optional[Array] = None) -> ImageGaussian:
        """p(x | z_1..z_4[, y])."""
        mean, log_var = self.decoder(latents, y if self.conditional else None)
        return ImageGaussian(mean=mean, log_var=log_var)

    def generate(self, y: Array, temperature: float | Array = 1.0) -> Array:
        """g_μ(z), every z_l = temperature · ε_l, ε_l ~ N(0, I) from the "sample" stream."""
        eps = _standard_normal_latents(self.make_rng("sample"), y.shape[0], self.latent_dims)
        return self.decode([temperature * e for e in eps], y).mean

    def reconstruct(self, x: Array, y: Optional[Array] = None) -> Array:
        """g_μ(posterior means[, y])."""
        return self.decode(self.encode(x, y).means, y).mean

    def edit(self, x: Array, y_from: Array, y_to: Array) -> Array:
        """Encode (means), decode with the new attributes: g_μ(μ(x), y_to)."""
        return self.decode(self.encode(x, y_from).means, y_to).mean

    def __call__(self, x: Array, y: Array) -> VLAEOutput:
        """Both networks once (used by `init`): the posteriors, and p(x | the posterior means)."""
        posterior = self.encode(x, y)
        image = self.decode(posterior.means, y)
        return VLAEOutput(posterior_means=posterior.means, posterior_log_vars=posterior.log_vars,
                          image_mean=image.mean, image_log_var=image.log_var)


def _standard_normal_latents(key: Array, batch_size: int,
                             latent_dims: Sequence[int]) -> list[Array]:
    """N(0, I) samples for every layer, `[B, d_l]` each, from ONE draw (one RNG op compiles
    much faster on CPU than one per layer)."""
    flat = jax.random.normal(key, (batch_size, sum(latent_dims)), jnp.float32)
    splits = list(itertools.accumulate(latent_dims))[:-1]
    return jnp.split(flat, splits, axis=-1)


def get_model(config, num_attributes: Optional[int] = None) -> VLAE:
    """The VLAE module of a config (`num_attributes` is accepted for the common interface)."""
    del num_attributes
    sizes = nets.resolve_sizes(config.model)
    return VLAE(
        features=sizes["encoder_features"],
        latent_dims=tuple(sizes["ladder_latent_dims"]),
        hidden=sizes["ladder_hidden"],
        head_features=sizes["ladder_head_features"],
        inject_features=sizes["ladder_inject_features"],
        conditional=_conditional(config),
        **common.log_var_ranges(config),
        **common.network_options(config),
    )


def _conditional(config) -> bool:
    return bool(config.model.get("conditional", True))


def capabilities(config) -> frozenset[str]:
    """What a VLAE can do (`cmma_jax.models.CAPABILITIES`): sample, encode, reconstruct, traverse,
    arithmetic, and edit when it is conditional (`model.conditional`). No bound: the MMD-VLAE's
    objective is not one."""
    caps = {"sample", "encode", "reconstruct", "traverse", "arithmetic"}
    return frozenset(caps | {"edit"} if _conditional(config) else caps)


def latent_dims(config) -> tuple[int, ...]:
    """The sizes of z_1..z_4 of a config."""
    return tuple(nets.resolve_sizes(config.model)["ladder_latent_dims"])


def mmd_weights(config) -> tuple[float, ...]:
    """λ_1..λ_4: `model.mmd_layer_weights` if set, else `model.mmd_weight` for every layer."""
    m = config.model
    per_layer = m.get("mmd_layer_weights", None)
    if per_layer is not None:
        if len(per_layer) != NUM_LAYERS:
            raise ValueError(f"mmd_layer_weights needs {NUM_LAYERS} entries, got {per_layer}.")
        return tuple(float(w) for w in per_layer)
    return (float(m.get("mmd_weight", 1.0)),) * NUM_LAYERS


def mmd_kernel(config, dim: int):
    """The MMD kernel of a config for a latent layer of size `dim` (see the module docstring):
    "gaussian": Σ_s exp(-‖a - b‖² / (s · dim)); "imq": Σ_s (2 s dim) / (2 s dim + ‖a - b‖²)."""
    m = config.model
    kind = m.get("mmd_kernel", "gaussian")
    scales = tuple(float(s) for s in m.get("mmd_scales", (1.0,)))
    if kind == "gaussian":
        # exp(-‖a-b‖² / (2 σ²)) with 2 σ² = s · dim.
        bandwidths = tuple((s * dim / 2.0) ** 0.5 for s in scales)
        return functools.partial(losses.gaussian_kernel, bandwidth=bandwidths)
    if kind == "imq":
        return functools.partial(losses.imq_kernel, scale=tuple(2.0 * s * dim for s in scales))
    raise ValueError(f"Unknown MMD kernel {kind!r}; choose one of {MMD_KERNELS}.")


def init_state(key: Array, config, example_batch: Mapping[str, Any]) -> common.TrainState:
    """Initial `TrainState` (float32 parameters, Adam state, int32 step 0)."""
    return common.init_train_state(get_model, key, config, example_batch)


def loss_terms(params, batch: Mapping[str, Array], key: Array, *, config,
               axis_name: Optional[str] = None) -> dict[str, Any]:
    """The terms of the MMD-VLAE objective.

    Under `pmap` (`axis_name`) every device computes the terms of the global batch (the networks
    run on its own rows, `common.globalize`), with the noise a single device would draw, so that
    the MMDs are over the global batch.

    Returns:
      A dict: "log_likelihood" `[B]` (log p(x | z[, y]) at one posterior sample per example, in
      nats), "mmd" a list of the 4 per-layer MMD² estimates (scalars), "weights" the λ_l, and
      "loss" = -mean(log_likelihood) + Σ_l λ_l mmd_l (scalar).
    """
    x, y = common.batch_inputs(batch)
    model = get_model(config, y.shape[-1])
    variables = {"params": params}
    encode_fn = common.globalize(
        lambda x: model.apply(variables, x, method=VLAE.encode), x.shape[0], axis_name)
    decode_fn = common.globalize(
        lambda zs, y: model.apply(variables, zs, y, method=VLAE.decode), x.shape[0], axis_name)
    x, y = common.gather_rows((x, y), axis_name)
    b, dims = x.shape[0], model.latent_dims
    posterior = encode_fn(x)
    # One draw of 2B standard normals per layer (one RNG op): the first B reparameterise the
    # posterior samples z_l = μ_l + ε_l ⊙ exp(v_l / 2), the other B are the prior samples.
    normals = _standard_normal_latents(key, 2 * b, dims)
    eps = [n[:b] for n in normals]
    prior_samples = [n[b:] for n in normals]
    zs = [m + e * jnp.exp(0.5 * v) for m, v, e in zip(posterior.means, posterior.log_vars, eps)]
    image = decode_fn(zs, y)
    log_likelihood = losses.gaussian_log_likelihood(x, image.mean, image.log_var)
    unbiased = bool(config.model.get("mmd_unbiased", False))
    mmds = [losses.mmd(z, p, kernel=mmd_kernel(config, d), unbiased=unbiased)
            for z, p, d in zip(zs, prior_samples, dims)]
    weights = mmd_weights(config)
    loss = -jnp.mean(log_likelihood) + sum(w * v for w, v in zip(weights, mmds))
    return {"loss": loss, "log_likelihood": log_likelihood, "mmd": mmds, "weights": weights}


def train_step(state: common.TrainState, batch: Mapping[str, Array], key: Array, *,
               config, axis_name: Optional[str] = None
               ) -> tuple[common.TrainState, dict[str, Array]]:
    """One Adam step on the MMD-VLAE loss.

    Metrics: "loss", "log_likelihood" (batch mean, nats), "mmd" (Σ_l λ_l mmd_l), "mmd_0".."mmd_3"
    (the unweighted per-layer MMD² estimates), "grad_norm", "param_norm".

    `axis_name`: the pmap axis, if any: the loss is that of the global batch on every device
    (`loss_terms`), and averaging the devices' gradients gives its gradient.
    """

    def loss_fn(params):
        terms = loss_terms(params, batch, key, config=config, axis_name=axis_name)
        return terms["loss"], terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = common.cross_device_mean(grads, axis_name)
    metrics = {
        "loss": loss,
        "log_likelihood": jnp.mean(terms["log_likelihood"]),
        "mmd": sum(w * v for w, v in zip(terms["weights"], terms["mmd"])),
        **{f"mmd_{l}": v for l, v in enumerate(terms["mmd"])},
        "grad_norm": common.global_norm(grads),
        "param_norm": common.global_norm(state.params),
    }
    metrics = common.cross_device_mean(metrics, axis_name)
    return state.apply_gradients(grads=grads), common.f32_metrics(metrics)


def sample(params, attributes: Array, key: Array, temperature: float | Array = 1.0, *,
           config) -> Array:
    """Faces, `[B, 64, 64, 3]`: g_μ(temperature · ε_1..4[, y]); temperature 0 = all latents 0."""
    return common.sample_images(get_model, params, attributes, key, temperature, config)


def encode(params, image: Array, attributes: Array, *, config) -> tuple[list[Array], list[Array]]:
    """q(z_l | x): (means, log_vars), lists of 4 arrays `[B, d_l]`."""
    posterior = common.apply_to_images(get_model, params, image, attributes, VLAE.encode, config)
    return posterior.means, posterior.log_vars


def reconstruct(params, image: Array, attributes: Array, *, config) -> Array:
    """g_μ(posterior means[, y]), `[B, 64, 64, 3]`."""
    return common.apply_to_images(get_model, params, image, attributes, VLAE.reconstruct, config)


def edit(params, image: Array, attrs_from: Array, attrs_to: Array, *, config) -> Array:
    """Changes the attributes of faces: encode (means; the encoder does not see attributes), then
    decode with `attrs_to`. Needs `config.model.conditional`."""
    if not _conditional(config):
        raise ValueError("vlae.edit needs a conditional VLAE (config.model.conditional=True); "
                         "for an unconditional one use vlae.face_arithmetic.")
    return common.edit_images(get_model, params, image, attrs_from, attrs_to, config)


def decode_latents(params, latents: Sequence[Array], attributes: Array, *, config) -> Array:
    """g_μ(z_1..z_4[, y]): images `[B, 64, 64, 3]` from given latents (4 arrays `[B, d_l]`)."""
    attributes = jnp.asarray(attributes, jnp.float32)
    model = get_model(config, attributes.shape[-1])
    latents = [jnp.asarray(z, jnp.float32) for z in latents]
    return model.apply({"params": params}, latents, attributes, method=VLAE.decode).mean


def sample_latents(key: Array, batch_size: int, temperature: float | Array = 1.0, *,
                   config) -> list[Array]:
    """Prior samples temperature · ε_l, ε_l ~ N(0, I): a list of 4 arrays `[batch_size, d_l]`."""
    eps = _standard_normal_latents(key, batch_size, latent_dims(config))
    return [temperature * e for e in eps]


def traverse(params, attributes: Array, layer: int, direction: int | Array, values: Array,
             key: Array, temperature: float | Array = 1.0, *, config) -> Array:
    """A per-layer latent traversal (Xu 2018, figures 2-3): one layer varies, the others are fixed.

    For each example b (its attributes y_b) the other layers are drawn once from the prior (scaled
    by `temperature`) and shared by every value; layer `layer` is set to `values[v] · direction`.

    Args:
      params: `state.params`.
      attributes: `[B, A]` (ignored by an unconditional model except for B).
      layer: which latent layer, 0 (z_1, shallow: low-level features) to 3 (z_4, deep).
      direction: an int (the coordinate axis: a one-hot direction) or a vector `[d_layer]`.
      values: `[V]`, e.g. `jnp.linspace(-3, 3, 7)`.
      key: a `jax.random` key for the fixed layers.
      temperature: scale of the fixed layers' prior samples (0: they are 0).

    Returns:
      `[V, B, 64, 64, 3]`.
    """
    attributes = jnp.asarray(attributes, jnp.float32)
    dims = latent_dims(config)
    if not 0 <= layer < NUM_LAYERS:
        raise ValueError(f"layer must be in [0, {NUM_LAYERS}), got {layer}.")
    if isinstance(direction, int):
        direction = jax.nn.one_hot(direction, dims[layer], dtype=jnp.float32)
    direction = jnp.asarray(direction, jnp.float32)
    if direction.shape != (dims[layer],):
        raise ValueError(f"direction must have shape ({dims[layer]},), got {direction.shape}.")
    values = jnp.asarray(values, jnp.float32)
    b, v = attributes.shape[0], values.shape[0]
    base = sample_latents(key, b, temperature, config=config)
    latents = [jnp.broadcast_to(z[None], (v,) + z.shape).reshape(v * b, -1) for z in base]
    moved = values[:, None, None] * direction[None, None, :]  # [V, 1, d]
    latents[layer] = jnp.broadcast_to(moved, (v, b, dims[layer])).reshape(v * b, -1)
    tiled_attributes = jnp.broadcast_to(attributes[None], (v,) + attributes.shape)
    images = decode_latents(params, latents, tiled_attributes.reshape(v * b, -1), config=config)
    return images.reshape((v, b) + images.shape[1:])


def face_arithmetic(params, images_a: Array, images_b: Array, images_c: Array, attrs_a: Array,
                    attrs_b: Array, attrs_c: Array, *, config) -> Array:
    """Face arithmetic A - B + C (Xu 2018, figure 4), in every layer's latent space (means).

    z_l = μ_l(a) - μ_l(b) + μ_l(c) for every layer; with a conditional model the attributes are
    combined the same way, y = y_a - y_b + y_c. Returns g_μ(z[, y]), `[B, 64, 64, 3]`.
    """
    means = [encode(params, im, at, config=config)[0]
             for im, at in ((images_a, attrs_a), (images_b, attrs_b), (images_c, attrs_c))]
    latents = [za - zb + zc for za, zb, zc in zip(*means)]
    y = (jnp.asarray(attrs_a, jnp.float32) - jnp.asarray(attrs_b, jnp.float32)
         + jnp.asarray(attrs_c, jnp.float32))
    return decode_latents(params, latents, y, config=config)
