"""Building blocks: the attribute MLP f, the image encoder h, the image decoder g, the
discriminator, the ladder networks of the MMD-VLAE, and the architecture presets.

All modules are Flax linen modules over NHWC batches: images `[B, 64, 64, 3]` in [0, 1], attributes
`[B, A]`. Each takes a computation `dtype` (float32 by default, bfloat16 on accelerators) and keeps
its parameters in float32 (`param_dtype`); the distribution parameters a module returns (means and
log-variances) are always float32, so that the objectives in `cmma_jax.losses` run in float32.

The spatial pipeline is the CMMA paper's (section 4.1) in every preset, so that the decoder is an
exact mirror of the encoder:

    encoder h:  64 -conv5-> 60 -pool-> 30 -conv5-> 26 -pool-> 13 -conv4-> 10 -> flatten -> heads
    decoder g:  dense -> 10 -full conv4-> 13 -up-> 26 -full conv5-> 30 -up-> 60 -full conv5-> 64

Presets (`PRESETS`) fix the widths: "paper" is section 4.1 exactly (192-96-48 filters, 500 latent
units, 800 hidden units in f), "small" trains on a 2-core CPU in minutes, "tiny" is for tests.

CPU performance: XLA's gradients of padded or transposed convolutions and of `nn.max_pool` are slow
on CPU. Every convolution here is therefore an explicit `jnp.pad` followed by a VALID convolution
(`Conv`), pooling is a reshape and a max (`max_pool_2x2`), and upsampling is a broadcast and a
reshape (`upsample_nearest_2x`). `Conv.impl` selects the convolution implementation so that a faster
one can be swapped in through the config field `model.conv_impl` without touching the networks.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmma_jax import fast_conv

Array = jax.Array
Dtype = Any

# The spatial sizes of the encoder after each stage, identical in every preset (section 4.1).
IMAGE_SIZE = 64
IMAGE_CHANNELS = 3
ENCODER_SPATIAL = (30, 13, 10)  # after conv1+pool, conv2+pool, conv3

# ---------------------------------------------------------------------------------------------
# Presets

PRESETS: dict[str, dict[str, Any]] = {
    # Section 4.1 of the CMMA paper. The VLAE and discriminator sizes are not in any paper; they
    # reuse the CMMA widths (the CGAN "closely mimics" h and g, section 4.2).
    "paper": dict(
        encoder_features=(192, 96, 48),
        latent_dim=500,
        attribute_hidden=800,
        discriminator_hidden=500,
        ladder_latent_dims=(32, 32, 32, 32),
        ladder_hidden=500,
        ladder_head_features=8,
        ladder_inject_features=8,
    ),
    # Trains to recognisable faces on a 2-core CPU in minutes: 0.2-0.3 s per CMMA step at batch 16
    # there (the decoder's output convolutions, at 64x64, dominate; their cost grows with the
    # first width, hence 16).
    "small": dict(
        encoder_features=(16, 32, 32),
        latent_dim=64,
        attribute_hidden=256,
        discriminator_hidden=128,
        ladder_latent_dims=(8, 8, 8, 8),
        ladder_hidden=128,
        ladder_head_features=4,
        ladder_inject_features=4,
    ),
    # For tests only: one jitted step compiles in seconds.
    "tiny": dict(
        encoder_features=(4, 4, 4),
        latent_dim=8,
        attribute_hidden=16,
        discriminator_hidden=16,
        ladder_latent_dims=(2, 2, 2, 2),
        ladder_hidden=16,
        ladder_head_features=2,
        ladder_inject_features=2,
    ),
}

SIZE_FIELDS = tuple(PRESETS["paper"].keys())


def resolve_sizes(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The network sizes of a model config: its preset, with any size field that is set overriding.

    Args:
      model_config: the `model` section of a config (a `ConfigDict` or a mapping) with a `preset`
        name ("auto": "small" on a CPU, "paper" on an accelerator) and, optionally, any of
        `SIZE_FIELDS` (a value of `None` means "from the preset").

    Returns:
      A dict with every key of `SIZE_FIELDS`; tuples for the sequences.

    Raises:
      ValueError: on an unknown preset.
    """
    preset = model_config["preset"]
    if preset == "auto":  # as `cmma_jax.train.resolve_config`: "paper" on an accelerator
        preset = "small" if jax.default_backend() == "cpu" else "paper"
    if preset not in PRESETS:
        raise ValueError(f"Unknown architecture preset {preset!r}; choose one of {tuple(PRESETS)}.")
    sizes = dict(PRESETS[preset])
    for name in SIZE_FIELDS:
        value = model_config.get(name, None)
        if value is not None:
            sizes[name] = tuple(value) if isinstance(value, (list, tuple)) else value
    if len(sizes["encoder_features"]) != 3:
        raise ValueError(f"encoder_features must have 3 widths, got {sizes['encoder_features']}.")
    return sizes


def compute_dtype(name: str) -> Dtype:
    """The jnp dtype for a config's `model.dtype` ("float32" or "bfloat16")."""
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
    if name not in dtypes:
        raise ValueError(f"Unknown compute dtype {name!r}; choose one of {tuple(dtypes)}.")
    return dtypes[name]


# ---------------------------------------------------------------------------------------------
# Layers


def max_pool_2x2(x: Array) -> Array:
    """2x2 max-pooling with stride 2, `[B, H, W, C] -> [B, H/2, W/2, C]` (H, W even).

    A reshape and a max rather than `nn.max_pool`: the gradient of XLA's reduce-window is slow on
    CPU, the gradient of a max over two small axes is not.
    """
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2 needs even spatial sizes, got {x.shape}.")
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def upsample_nearest_2x(x: Array) -> Array:
    """2x nearest-neighbour upsampling, `[B, H, W, C] -> [B, 2H, 2W, C]` (section 4.1's "2x2
    nearest neighbour upsampling layer"), as a broadcast and a reshape."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def soft_clip(x: Array, low: float, high: float) -> Array:
    """A smooth, monotone map of the real line into (low, high), ≈ the identity well inside.

        soft_clip(x) = high - softplus(high - (low + softplus(x - low)))

    Used (optionally, and documented in the config) on log-variance heads. The result is still an
    ordinary log-variance, so the likelihood stays a true Gaussian density; only the range of
    variances the network can express is bounded.
    """
    x = low + jax.nn.softplus(x - low)
    return high - jax.nn.softplus(high - x)


CONV_IMPLS = ("xla", "fast_cpu", "auto")


def resolve_conv_impl(impl: str) -> str:
    """The implementation `impl` stands for: "auto" is "fast_cpu" on the CPU backend and "xla"
    elsewhere (cuDNN's convolutions and their gradients are fast on GPU)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"Unknown convolution implementation {impl!r}; "
                         f"choose one of {CONV_IMPLS}.")
    if impl == "auto":
        return "fast_cpu" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv2d(x: Array, kernel: Array, bias: Array, padding: int = 0, impl: str = "xla",
           upsample: bool = False) -> Array:
    """Stride-1 2-D convolution with `padding` zeros on each side, then VALID, plus bias.

    Args:
      x: `[B, H, W, C_in]`.
      kernel: `[k, k, C_in, C_out]` (HWIO).
      bias: `[C_out]`.
      padding: zeros added on each side of both spatial axes (0: VALID; k-1: "full").
      impl: "xla": `jnp.pad` + `lax.conv_general_dilated` with VALID padding (XLA's gradient of
        a padded convolution is slow on CPU; of a VALID one after an explicit pad it is not).
        "fast_cpu": `cmma_jax.fast_conv.conv2d`, the same function with a custom VJP built from
        forward convolutions and matmuls (several times faster on CPU). "auto": "fast_cpu" on
        the CPU backend, "xla" elsewhere.
      upsample: convolve the 2x nearest-neighbour upsampling of x (`upsample_nearest_2x`).
        "fast_cpu" never builds the upsampled map (`fast_conv.upsample_conv2d`).

    Returns:
      `[B, H' + 2 padding - k + 1, W' + 2 padding - k + 1, C_out]`, with H', W' = H, W, or
      2H, 2W with `upsample`.
    """
    impl = resolve_conv_impl(impl)
    if impl == "fast_cpu":
        return fast_conv.conv2d(x, kernel, bias, padding, upsample)
    if upsample:
        x = upsample_nearest_2x(x)
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + bias[None, None, None, :]


class ConvParams(nn.Module):
    """The parameters of a convolution: `kernel` `[k, k, C_in, C_out]` (HWIO, lecun normal) and
    `bias` `[C_out]` (zeros), float32. Returns them (for layers that fuse several convolutions)."""

    features: int
    kernel_size: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array]:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k, k, in_features, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        return kernel, bias


class Conv(nn.Module):
    """A 2-D convolution with stride 1, explicit symmetric zero padding, and bias.

    `padding=0` is a VALID convolution (the encoder's layers); `padding=kernel_size-1` is a "full"
    convolution, the transpose of a VALID one in shape (it grows the map by kernel_size-1 — the
    decoder's layers).

    Attributes:
      features: output channels.
      kernel_size: the (square) kernel size.
      padding: zeros added on each side of both spatial axes before a VALID convolution.
      upsample: convolve the 2x nearest-neighbour upsampling of the input (the decoder's
        "upsample, then convolve", fused on the fast CPU path).
      impl: the implementation (`conv2d`). The parameters (`kernel` [k, k, C_in, C_out] HWIO,
        `bias` [C_out]) are the same for every implementation, so one can be swapped for another
        (config field `model.conv_impl`).
      dtype: computation dtype.
      param_dtype: parameter dtype (float32).
    """

    features: int
    kernel_size: int
    padding: int = 0
    impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    upsample: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k, k, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv2d(x, kernel, bias, self.padding, self.impl, self.upsample)


def _dense(features: int, dtype: Dtype, name: Optional[str] = None) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)


class GaussianHeads(nn.Module):
    """Two parallel dense heads: the mean and the log-variance of a diagonal Gaussian (float32).

    Attributes:
      features: the size of the Gaussian (e.g. 500 latent units, section 4.1).
      log_var_range: optional (low, high) for a `soft_clip` of the log-variance; None = linear.
      dtype: computation dtype.
    """

    features: int
    log_var_range: Optional[tuple[float, float]] = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array) -> tuple[Array, Array]:
        mean = _dense(self.features, self.dtype, "mean")(h).astype(jnp.float32)
        log_var = _dense(self.features, self.dtype, "log_var")(h).astype(jnp.float32)
        if self.log_var_range is not None:
            log_var = soft_clip(log_var, *self.log_var_range)
        return mean, log_var


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
        h = jax.nn.softplus(_dense(self.hidden, self.dtype, "hidden")(y))
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
        if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS):
            raise ValueError(f"Expected images of shape [B, 64, 64, 3], got {x.shape}.")
        c1, c2, c3 = self.features
        conv = lambda f, k, name: Conv(f, k, 0, self.conv_impl, self.dtype, name=name)  # noqa: E731
        x = x.astype(self.dtype)
        h1 = nn.relu(max_pool_2x2(conv(c1, 5, "conv1")(x)))  # 64 -> 60 -> 30
        h2 = nn.relu(max_pool_2x2(conv(c2, 5, "conv2")(h1)))  # 30 -> 26 -> 13
        h3 = nn.relu(conv(c3, 4, "conv3")(h2))  # 13 -> 10
        return [h1, h2, h3]


def _flatten(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


def _concat_attributes(h: Array, y: Optional[Array], dtype: Dtype) -> Array:
    if y is None:
        return h
    if y.ndim != 2 or y.shape[0] != h.shape[0]:
        raise ValueError(f"Attributes must be [B, A] with B = {h.shape[0]}, got {y.shape}.")
    return jnp.concatenate([h, y.astype(dtype)], axis=-1)


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
        h = _flatten(ConvTrunk(self.features, self.conv_impl, self.dtype, name="trunk")(x)[-1])
        if self.feed_attributes:
            if y is None:
                raise ValueError("ImageEncoder(feed_attributes=True) needs the attributes y.")
            h = _concat_attributes(h, y, self.dtype)
        return GaussianHeads(self.latent_dim, self.log_var_range, self.dtype, name="heads")(h)


# ---------------------------------------------------------------------------------------------
# g: the decoder


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
    """

    log_var: bool = True
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32
    upsample: bool = False

    @nn.compact
    def __call__(self, h: Array) -> tuple[Array, Optional[Array]]:
        names = ("mean", "log_var") if self.log_var else ("mean",)
        params = [ConvParams(IMAGE_CHANNELS, 5, name=name)(h.shape[-1]) for name in names]
        # The parallel heads run as ONE convolution with their kernels concatenated along the
        # output channels: the same result, and on CPU about half the time of two convolutions
        # with 3 output channels each.
        kernel = jnp.concatenate([k for k, _ in params], axis=-1)
        bias = jnp.concatenate([b for _, b in params], axis=-1)
        h, kernel, bias = nn.dtypes.promote_dtype(h, kernel, bias, dtype=self.dtype)
        out = conv2d(h, kernel, bias, 4, self.conv_impl, self.upsample).astype(jnp.float32)
        # The sigmoid and the clip run in float32: only the convolution uses the compute dtype.
        mean = jax.nn.sigmoid(out[..., :IMAGE_CHANNELS])
        if not self.log_var:
            return mean, None
        log_var = out[..., IMAGE_CHANNELS:]
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
    """

    features: Sequence[int]
    log_var: bool = True
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: Array, y: Optional[Array] = None) -> tuple[Array, Optional[Array]]:
        """Latents `[B, J]` (and attributes `[B, A]`, concatenated to z when given: the CVAE's
        p(x | z, y)) -> (mean, log_var), each `[B, 64, 64, 3]` float32 (log_var None without the
        log-variance head)."""
        c1, c2, c3 = self.features
        s = ENCODER_SPATIAL[-1]
        h = _concat_attributes(z.astype(self.dtype), y, self.dtype)
        h = _dense(s * s * c3, self.dtype, "dense")(h).reshape(z.shape[0], s, s, c3)
        h = nn.relu(Conv(c2, 4, 3, self.conv_impl, self.dtype, name="conv3")(h))  # 10 -> 13
        # 2x upsample (13 -> 26), then conv (26 -> 30)
        h = nn.relu(Conv(c1, 5, 4, self.conv_impl, upsample=True, dtype=self.dtype,
                         name="conv2")(h))
        # 2x upsample (30 -> 60), then the heads (60 -> 64)
        return ImageHeads(self.log_var, self.log_var_range, self.conv_impl, self.dtype,
                          upsample=True, name="heads")(h)


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
        h = _flatten(ConvTrunk(self.features, self.conv_impl, self.dtype, name="trunk")(x)[-1])
        h = _concat_attributes(h, y, self.dtype)
        h = nn.leaky_relu(_dense(self.hidden, self.dtype, "hidden")(h), 0.2)
        return _dense(1, self.dtype, "logit")(h)[:, 0].astype(jnp.float32)


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
        top = nn.relu(_dense(self.hidden, self.dtype, "hidden")(_flatten(stages[-1])))
        means, log_vars = [], []
        for l, h in enumerate(stages):
            h = nn.relu(Conv(self.head_features, 1, 0, self.conv_impl, self.dtype,
                             name=f"head{l}_conv")(h))
            mean, log_var = GaussianHeads(self.latent_dims[l], self.log_var_range, self.dtype,
                                          name=f"head{l}")(_flatten(h))
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
    """

    features: Sequence[int]
    hidden: int
    inject_features: int
    log_var_range: Optional[tuple[float, float]] = None
    conv_impl: str = "xla"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, latents: Sequence[Array], y: Optional[Array] = None) -> tuple[Array, Array]:
        """Latents z_1..z_4 (each `[B, d_l]`) and attributes `[B, A]` or None -> (mean, log_var),
        each `[B, 64, 64, 3]` float32."""
        if len(latents) != NUM_LADDER_LAYERS:
            raise ValueError(f"The ladder has {NUM_LADDER_LAYERS} layers; got {len(latents)} "
                             "latent arrays.")
        c1, c2, c3 = self.features
        b = latents[0].shape[0]
        s1, s2, s3 = ENCODER_SPATIAL
        k = self.inject_features

        def inject(z, size, name):
            return _dense(size * size * k, self.dtype, name)(z.astype(self.dtype)).reshape(
                b, size, size, k)

        h = _concat_attributes(latents[3].astype(self.dtype), y, self.dtype)
        h = nn.relu(_dense(self.hidden, self.dtype, "hidden")(h))
        h = nn.relu(_dense(s3 * s3 * c3, self.dtype, "dense")(h).reshape(b, s3, s3, c3))
        h = jnp.concatenate([h, inject(latents[2], s3, "inject2")], axis=-1)
        h = nn.relu(Conv(c2, 4, 3, self.conv_impl, self.dtype, name="conv3")(h))  # 10 -> 13
        h = jnp.concatenate([h, inject(latents[1], s2, "inject1")], axis=-1)
        # 2x upsample (13 -> 26), then conv (26 -> 30)
        h = nn.relu(Conv(c1, 5, 4, self.conv_impl, upsample=True, dtype=self.dtype,
                         name="conv2")(h))
        h = jnp.concatenate([h, inject(latents[0], s1, "inject0")], axis=-1)
        # 2x upsample (30 -> 60), then the heads (60 -> 64)
        return ImageHeads(True, self.log_var_range, self.conv_impl, self.dtype, upsample=True,
                          name="heads")(h)


__all__ = [
    "PRESETS", "SIZE_FIELDS", "resolve_sizes", "compute_dtype", "max_pool_2x2",
    "upsample_nearest_2x", "soft_clip", "conv2d", "ConvParams",
    "Conv", "GaussianHeads", "AttributeMLP", "ConvTrunk",
    "ImageEncoder", "ImageHeads", "ImageDecoder", "Discriminator",
    "LadderEncoder", "LadderDecoder", "NUM_LADDER_LAYERS",
]
