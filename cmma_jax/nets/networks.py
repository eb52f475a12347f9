"""The networks: the attribute MLP f, the image encoder h, the image decoder g, the
discriminator, and the ladder networks of the MMD-VLAE, built from `cmma_jax.nets.layers`.

All are Flax linen modules over NHWC batches: images `[B, *IMAGE_SHAPE]` (`cmma_jax.images`,
64x64x3) in [0, 1], attributes `[B, A]`. Their widths come from a config's preset
(`cmma_jax.presets`).

The spatial pipeline is the CMMA paper's (section 4.1) in every preset, so that the decoder is an
exact mirror of the encoder:

    encoder h:  64 -conv5-> 60 -pool-> 30 -conv5-> 26 -pool-> 13 -conv4-> 10 -> flatten -> heads
    decoder g:  dense -> 10 -full conv4-> 13 -up-> 26 -full conv5-> 30 -up-> 60 -full conv5-> 64
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.presets import DEFAULT_DECODER_SIGMA
from cmma_jax.nets.layers import (Array, Conv, ConvParams, Dtype, GaussianHeads, concat_attributes,
                                  conv2d, dense, flatten, soft_clip)

# The encoder's kernel sizes (conv1, conv2, conv3), section 4.1; the decoder mirrors them.
ENCODER_KERNELS = (5, 5, 4)


def _encoder_spatial(size: int) -> tuple[int, int, int]:
    """The spatial size after each encoder stage: VALID conv1 + pool, VALID conv2 + pool, VALID
    conv3."""
    k1, k2, k3 = ENCODER_KERNELS
    s1 = (size - k1 + 1) // 2
    s2 = (s1 - k2 + 1) // 2
    return s1, s2, s2 - k3 + 1


# (30, 13, 10) for 64x64 images, identical in every preset.
ENCODER_SPATIAL = _encoder_spatial(IMAGE_SHAPE[0])
IMAGE_CHANNELS = IMAGE_SHAPE[-1]

# What the decoder's pixel variance depends on (`ImageHeads.variance`): "pixel", a convolutional
# head that gives every pixel of every face its own log-variance (the paper, section 4.1);
# "channel", one learnt log-variance per colour channel, shared by every pixel and every face;
# "shared", one learnt log-variance for the whole image; "fixed", no parameter: every pixel's
# standard deviation is `ImageHeads.sigma` (`model.decoder_sigma`). Each is a proper Gaussian
# density, so the bounds stay comparable in nats.
DECODER_VARIANCES = ("pixel", "channel", "shared", "fixed")


# ---------------------------------------------------------------------------------------------
# f: the attribute MLP


class AttributeMLP(nn.Module):
    """The attribute network f of the CMMA: the prior p(z | y) = N(f_μ(y), exp(f_σ(y))).

    Section 4.1: "a neural network with 800 hidden units, a soft thresholding unit of the form
    log(1 + e^x) and two parallel output layers, each comprising of 500 units".

    Attributes:
      hidden: hidden units (800 in the paper).
      latent_dim: units of each output layer (500 in the paper).
      log_var_range: optional soft-clip range of the log-variance head (None = linear).
      dtype: computation dtype.
    """

    hidden: int
    latent_dim: int
    log_var_range: Optional[tuple[float, float]] = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, y: Array) -> tuple[Array, Array]:
        """`[B, A]` attributes -> (mean, log_var), each `[B, latent_dim]` float32."""
        h = jax.nn.softplus(dense(self.hidden, self.dtype, "hidden")(y))
        return GaussianHeads(self.latent_dim, self.log_var_range, self.dtype, name="heads")(h)


# ---------------------------------------------------------------------------------------------
# h: the convolutional encoder (and its trunk, shared with the discriminator and the VLAE)


class ConvTrunk(nn.Module):
    """The convolutional part of the encoder h (section 4.1, items 1-4).

    conv 5x5 (64 -> 60), 2x2 max-pool (30), ReLU; conv 5x5 (26), max-pool (13), ReLU; conv 4x4 (10),
    ReLU. Returns the output of each stage: `[B, 30, 30, c1]`, `[B, 13, 13, c2]`, `[B, 10, 10, c3]`.

    Attributes:
      features: (c1, c2, c3), the filters of the three convolutions ((192, 96, 48) in the paper).
      conv_impl: see `Conv.impl`.
      dtype: computation dtype.
    """

    features: Sequence[int]
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> list[Array]:
        if x.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"Expected images of shape [B, {', '.join(map(str, IMAGE_SHAPE))}], "
                             f"got {x.shape}.")
        (c1, c2, c3), (k1, k2, k3) = self.features, ENCODER_KERNELS
        def conv(f, k, name, pool=False):
            return Conv(f, k, 0, self.conv_impl, self.dtype, pool=pool, name=name)
        x = x.astype(self.dtype)
        # Convolve, then 2x2 max-pool (`Conv.pool`: one loop on the fast CPU path).
        h1 = nn.relu(conv(c1, k1, "conv1", pool=True)(x))  # 64 -> 60 -> 30
        h2 = nn.relu(conv(c2, k2, "conv2", pool=True)(h1))  # 30 -> 26 -> 13
        h3 = nn.relu(conv(c3, k3, "conv3")(h2))  # 13 -> 10
        return [h1, h2, h3]


class ImageEncoder(nn.Module):
    """The image encoder h: q(z | x[, y]) = N(h_μ, exp(h_σ)).

    `ConvTrunk`, flatten (10·10·c3 = 4800 units in the paper), then two parallel linear layers of
    `latent_dim` units (section 4.1, item 5). With `feed_attributes` the attributes are concatenated
    to the flattened features before the heads: the paper's option it did not use for the CMMA
    (erratum 7), and the CVAE's q(z | x, y) (eq. 13).

    Attributes:
      features: (c1, c2, c3).
      latent_dim: units of each head.
      feed_attributes: concatenate the attributes after the flatten.
      log_var_range: optional soft-clip range of the log-variance head (None = linear).
      conv_impl: see `Conv.impl`.
      dtype: computation dtype.
    """

    features: Sequence[int]
    latent_dim: int
    feed_attributes: bool = False
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, y: Optional[Array] = None) -> tuple[Array, Array]:
        """Images `[B, 64, 64, 3]` (and attributes `[B, A]`) -> (mean, log_var), each
        `[B, latent_dim]` float32."""
        h = flatten(ConvTrunk(self.features, self.conv_impl, self.dtype, name="trunk")(x)[-1])
        if self.feed_attributes:
            if y is None:
                raise ValueError("ImageEncoder(feed_attributes=True) needs the attributes y.")
            h = concat_attributes(h, y, self.dtype)
        return GaussianHeads(self.latent_dim, self.log_var_range, self.dtype, name="heads")(h)


# ---------------------------------------------------------------------------------------------
# g: the decoder


# Where a log-variance shared over the pixels starts: σ = e^-2 ≈ 0.135, the size of a blurred
# reconstruction's error on faces in [0, 1]. Adam moves one scalar by at most about the learning
# rate per step, so a start at 0 (σ = 1) would spend ~13,000 steps at 3e-4 getting there, with
# the likelihood weighed too lightly against the KL meanwhile (seen: KL of 6-10 nats).
SHARED_LOG_VAR_INIT = -4.0


class _SharedLogVar(nn.Module):
    """A learnt log-variance of `size` values: `SHARED_LOG_VAR_INIT` + a parameter "bias" that
    starts at zero (as every bias of `cmma_jax.models.common.init_params`)."""

    size: int

    @nn.compact
    def __call__(self) -> Array:
        bias = self.param("bias", nn.initializers.zeros_init(), (self.size,), jnp.float32)
        return SHARED_LOG_VAR_INIT + bias


class ImageHeads(nn.Module):
    """The decoder's output layer: parallel full 5x5 convolutions from `[B, 60, 60, c1]` to
    `[B, 64, 64, 3]`. The mean goes through a sigmoid; the log-variance is linear (or soft-clipped
    to `log_var_range`). Section 4.1, item 5, read with erratum 6 (each head maps c1 channels to 3).

    Attributes:
      log_var: whether to build the log-variance head (False for a GAN generator).
      log_var_range: optional (low, high) soft-clip of the log-variance; None = linear.
      conv_impl, dtype: as elsewhere.
      upsample: the input is `[B, 30, 30, c1]`, upsampled 2x nearest-neighbour first (fused into
        the convolution on the fast CPU path; `Conv.upsample`).
      variance: one of `DECODER_VARIANCES`: "pixel" (the paper: the log-variance head), or a
        learnt log-variance per "channel" or "shared" by the whole image, a parameter
        "log_var/bias" of shape [3] or [1]; the log-variance is `SHARED_LOG_VAR_INIT` + it
        (soft-clipped like the head's output); or "fixed": log(sigma²), no parameter, no clip.
      sigma: the standard deviation of every pixel with variance "fixed" (unused otherwise).
    """

    log_var: bool = True
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32
    upsample: bool = False
    variance: str = "pixel"
    sigma: float = DEFAULT_DECODER_SIGMA

    @nn.compact
    def __call__(self, h: Array) -> tuple[Array, Optional[Array]]:
        if self.variance not in DECODER_VARIANCES:
            raise ValueError(f"Unknown decoder variance {self.variance!r}; choose one of "
                             f"{DECODER_VARIANCES} (model.decoder_variance).")
        if self.variance == "fixed" and not 0 < self.sigma < float("inf"):
            raise ValueError(f"A fixed decoder variance needs a positive, finite sigma, got "
                             f"{self.sigma} (model.decoder_sigma).")
        per_pixel = self.log_var and self.variance == "pixel"
        names = ("mean", "log_var") if per_pixel else ("mean",)
        k = ENCODER_KERNELS[0]
        params = [ConvParams(IMAGE_CHANNELS, k, name=name)(h.shape[-1]) for name in names]
        # The parallel heads run as ONE convolution with their kernels concatenated along the
        # output channels: the same result, and on CPU about half the time of two convolutions
        # with 3 output channels each.
        kernel = jnp.concatenate([k for k, _ in params], axis=-1)
        bias = jnp.concatenate([b for _, b in params], axis=-1)
        h, kernel, bias = nn.dtypes.promote_dtype(h, kernel, bias, dtype=self.dtype)
        out = conv2d(h, kernel, bias, k - 1, self.conv_impl, self.upsample).astype(jnp.float32)
        # The sigmoid and the clip run in float32: only the convolution uses the compute dtype.
        mean = jax.nn.sigmoid(out[..., :IMAGE_CHANNELS])
        if not self.log_var:
            return mean, None
        if per_pixel:
            log_var = out[..., IMAGE_CHANNELS:]
        elif self.variance == "fixed":
            return mean, jnp.full(mean.shape, 2.0 * math.log(self.sigma), jnp.float32)
        else:
            size = IMAGE_CHANNELS if self.variance == "channel" else 1
            log_var = jnp.broadcast_to(_SharedLogVar(size, name="log_var")(), mean.shape)
        if self.log_var_range is not None:
            log_var = soft_clip(log_var, *self.log_var_range)
        return mean, log_var


class ImageDecoder(nn.Module):
    """The image decoder g: p(x | z) = N(g_μ(z), exp(g_σ(z))) over 64x64x3 images.

    Section 4.1 as printed does not reach 64x64 from a 10x10 map (erratum 5). This decoder is the
    exact mirror of the encoder h, keeping the paper's widths (48 -> 96 -> 192 -> 3), its linear
    layer to 4800 = 10·10·48 units and reshape, its ReLUs after the first two convolutions, its 2x2
    nearest-neighbour upsampling, and its two parallel output heads (erratum 6):

        z -> dense 10·10·c3 -> reshape [10, 10, c3]
          -> full 4x4 conv, c2 filters (10 -> 13) -> ReLU              (mirrors conv3, 13 -> 10)
          -> 2x nearest upsample (13 -> 26)                             (mirrors pool, 26 -> 13)
          -> full 5x5 conv, c1 filters (26 -> 30) -> ReLU              (mirrors conv2, 30 -> 26)
          -> 2x nearest upsample (30 -> 60)                             (mirrors pool, 60 -> 30)
          -> two parallel full 5x5 convs, c1 -> 3 (60 -> 64):          (mirror conv1, 64 -> 60)
             mean = sigmoid(.), log_var = linear (or soft-clipped)

    A "full" convolution pads k-1 zeros on each side, then convolves VALID: the shape transpose of
    the encoder's VALID convolution. The paper's 3x3 decoder kernels are replaced by the encoder's
    4x4 and 5x5 ones, which the mirror needs to land on 13, 30 and 64 exactly.

    Attributes:
      features: (c1, c2, c3), the encoder's widths ((192, 96, 48) in the paper).
      log_var: build the log-variance head (False for a GAN generator, which returns the mean only).
      log_var_range: optional (low, high) soft-clip of the pixel log-variance; None = linear.
      conv_impl, dtype: as elsewhere.
      variance: what the pixel variance depends on (`DECODER_VARIANCES`; "pixel" in the paper).
      sigma: every pixel's standard deviation with variance "fixed".
    """

    features: Sequence[int]
    log_var: bool = True
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32
    variance: str = "pixel"
    sigma: float = DEFAULT_DECODER_SIGMA

    @nn.compact
    def __call__(self, z: Array, y: Optional[Array] = None) -> tuple[Array, Optional[Array]]:
        """Latents `[B, J]` (and attributes `[B, A]`, concatenated to z when given: the CVAE's
        p(x | z, y)) -> (mean, log_var), each `[B, 64, 64, 3]` float32 (log_var None without the
        log-variance head)."""
        c3 = self.features[2]
        s = ENCODER_SPATIAL[-1]
        h = concat_attributes(z.astype(self.dtype), y, self.dtype)
        h = dense(s * s * c3, self.dtype, "dense")(h).reshape(z.shape[0], s, s, c3)
        return _mirror_convolutions(self, h, self.log_var)


def _mirror_convolutions(module: nn.Module, h: Array, log_var: bool,
                         inject=lambda stage, h: h) -> tuple[Array, Optional[Array]]:
    """The convolutional part of the decoders g and `LadderDecoder`, the mirror of `ConvTrunk`:

        [10, 10, .] -full conv4, c2-> 13 -ReLU-> up 26 -full conv5, c1-> 30 -ReLU-> up 60
            -> heads (full conv5, c1 -> 3) -> 64

    Called from the `nn.compact` method of `module` (its `features`, `log_var_range`, `conv_impl`,
    `dtype`, `variance` and `sigma`), whose scope holds the layers "conv3", "conv2" and "heads".
    `inject(stage, h)` may add features to the input of the layer mirroring encoder stage `stage`
    (2, 1, 0).
    """
    c1, c2, _ = module.features
    k1, k2, k3 = ENCODER_KERNELS
    impl, dtype = module.conv_impl, module.dtype
    h = nn.relu(Conv(c2, k3, k3 - 1, impl, dtype, name="conv3")(inject(2, h)))  # 10 -> 13
    # 2x upsample (13 -> 26), then conv (26 -> 30)
    h = nn.relu(Conv(c1, k2, k2 - 1, impl, upsample=True, dtype=dtype, name="conv2")(inject(1, h)))
    # 2x upsample (30 -> 60), then the heads (60 -> 64)
    return ImageHeads(log_var, module.log_var_range, impl, dtype, upsample=True,
                      variance=module.variance, sigma=module.sigma, name="heads")(inject(0, h))


# ---------------------------------------------------------------------------------------------
# The CGAN discriminator


class Discriminator(nn.Module):
    """The CGAN discriminator D(x, y), mirroring the encoder h (section 4.2).

    `ConvTrunk` (as h), flatten, concatenate the attributes, a hidden layer of `hidden` units with a
    leaky ReLU (slope 0.2), and one linear output: the logit of "x is a real face with
    attributes y".

    Attributes:
      features: (c1, c2, c3).
      hidden: units of the hidden layer (500 in the "paper" preset, h's head width).
      conv_impl, dtype: as elsewhere.
    """

    features: Sequence[int]
    hidden: int
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, y: Optional[Array]) -> Array:
        """Images `[B, 64, 64, 3]`, attributes `[B, A]` (or None) -> logits `[B]` float32."""
        h = flatten(ConvTrunk(self.features, self.conv_impl, self.dtype, name="trunk")(x)[-1])
        h = concat_attributes(h, y, self.dtype)
        h = nn.leaky_relu(dense(self.hidden, self.dtype, "hidden")(h), 0.2)
        return dense(1, self.dtype, "logit")(h)[:, 0].astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# The variational ladder autoencoder (Zhao et al. 2017; Xu 2018)

NUM_LADDER_LAYERS = 4


class LadderEncoder(nn.Module):
    """The inference network of the VLAE: four latent layers of increasing depth.

    A bottom-up path of the encoder h's stages; the latent layer l reads the features after stage l,
    so low layers are connected to the image through shallow networks and high layers through deep
    ones (Xu 2018, section 2.2; Zhao et al. 2017):

        z_1 <- head(stage 1: conv5 + pool + ReLU,        [30, 30, c1])
        z_2 <- head(stage 2: conv5 + pool + ReLU,        [13, 13, c2])
        z_3 <- head(stage 3: conv4 + ReLU,               [10, 10, c3])
        z_4 <- heads(stage 4: flatten + dense + ReLU,    [hidden])

    The heads of the convolutional stages are a 1x1 convolution to `head_features` channels with a
    ReLU, a flatten, and two parallel linear layers (mean and log-variance); the top one is two
    parallel linear layers. Each q(z_l | x) is a diagonal Gaussian.

    Attributes:
      features: (c1, c2, c3).
      latent_dims: the sizes of z_1..z_4 (4 entries).
      hidden: units of the dense stage 4.
      head_features: channels of the 1x1 head convolutions.
      log_var_range: optional soft-clip range of the log-variance heads (None = linear).
      conv_impl, dtype: as elsewhere.
    """

    features: Sequence[int]
    latent_dims: Sequence[int]
    hidden: int
    head_features: int
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> tuple[list[Array], list[Array]]:
        """Images `[B, 64, 64, 3]` -> (means, log_vars): lists of 4 arrays `[B, latent_dims[l]]`."""
        if len(self.latent_dims) != NUM_LADDER_LAYERS:
            raise ValueError(f"The ladder has {NUM_LADDER_LAYERS} layers; got latent_dims "
                             f"{tuple(self.latent_dims)}.")
        stages = ConvTrunk(self.features, self.conv_impl, self.dtype, name="trunk")(x)
        top = nn.relu(dense(self.hidden, self.dtype, "hidden")(flatten(stages[-1])))
        means, log_vars = [], []
        for l, h in enumerate(stages):
            h = nn.relu(Conv(self.head_features, 1, 0, self.conv_impl, self.dtype,
                             name=f"head{l}_conv")(h))
            mean, log_var = GaussianHeads(self.latent_dims[l], self.log_var_range, self.dtype,
                                          name=f"head{l}")(flatten(h))
            means.append(mean)
            log_vars.append(log_var)
        mean, log_var = GaussianHeads(self.latent_dims[-1], self.log_var_range, self.dtype,
                                      name=f"head{NUM_LADDER_LAYERS - 1}")(top)
        return means + [mean], log_vars + [log_var]


class LadderDecoder(nn.Module):
    """The generative network of the VLAE: top-down, each latent layer entering at its depth.

    The mirror of `LadderEncoder` and of the decoder g. The top latent (with the attributes, when
    given) goes through the deepest path; each lower latent is mapped by a linear layer to
    `inject_features` channels at the resolution of its encoder stage and concatenated to the
    top-down features there (z̃_l = u_l([z̃_{l+1}; z_l]), Zhao et al. 2017):

        [z_4; y] -> dense hidden -> ReLU -> dense 10·10·c3 -> reshape -> ReLU
        concat(., inject(z_3) [10, 10]) -> full conv4 c2 (13) -> ReLU
        concat(., inject(z_2) [13, 13]) -> upsample (26) -> full conv5 c1 (30) -> ReLU
        concat(., inject(z_1) [30, 30]) -> upsample (60) -> image heads (64): sigmoid mean, log-var

    Attributes:
      features: (c1, c2, c3).
      hidden: units of the top dense layer.
      inject_features: channels of each injected latent map.
      log_var_range: optional soft-clip range of the pixel log-variance (None = linear).
      conv_impl, dtype: as elsewhere.
      variance: what the pixel variance depends on (`DECODER_VARIANCES`).
      sigma: every pixel's standard deviation with variance "fixed".
    """

    features: Sequence[int]
    hidden: int
    inject_features: int
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32
    variance: str = "pixel"
    sigma: float = DEFAULT_DECODER_SIGMA

    @nn.compact
    def __call__(self, latents: Sequence[Array], y: Optional[Array] = None) -> tuple[Array, Array]:
        """Latents z_1..z_4 (each `[B, d_l]`) and attributes `[B, A]` or None -> (mean, log_var),
        each `[B, 64, 64, 3]` float32."""
        if len(latents) != NUM_LADDER_LAYERS:
            raise ValueError(f"The ladder has {NUM_LADDER_LAYERS} layers; got {len(latents)} "
                             "latent arrays.")
        c3 = self.features[2]
        b = latents[0].shape[0]
        s3 = ENCODER_SPATIAL[-1]
        k = self.inject_features

        def inject(stage, h):  # [h; a linear map of z_{stage+1} to [size, size, k]]
            size = ENCODER_SPATIAL[stage]
            z = dense(size * size * k, self.dtype, f"inject{stage}")(
                latents[stage].astype(self.dtype)).reshape(b, size, size, k)
            return jnp.concatenate([h, z], axis=-1)

        h = concat_attributes(latents[3].astype(self.dtype), y, self.dtype)
        h = nn.relu(dense(self.hidden, self.dtype, "hidden")(h))
        h = nn.relu(dense(s3 * s3 * c3, self.dtype, "dense")(h).reshape(b, s3, s3, c3))
        return _mirror_convolutions(self, h, True, inject)


__all__ = [
    "ENCODER_KERNELS", "ENCODER_SPATIAL", "IMAGE_CHANNELS", "DECODER_VARIANCES", "AttributeMLP", "ConvTrunk",
    "ImageEncoder", "ImageHeads", "ImageDecoder", "Discriminator", "NUM_LADDER_LAYERS",
    "LadderEncoder", "LadderDecoder",
]
