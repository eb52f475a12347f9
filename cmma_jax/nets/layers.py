"""The layers the networks are built of: convolutions, pooling, upsampling, dense Gaussian heads.

All are Flax linen modules or functions over NHWC batches. Each module takes a computation `dtype`
(float32 by default, bfloat16 on accelerators) and keeps its parameters in float32
(`param_dtype`); the distribution parameters a module returns (means and log-variances) are always
float32, so that the objectives in `cmma_jax.losses` run in float32.

CPU performance: XLA's gradients of padded or transposed convolutions and of `nn.max_pool` are slow
on CPU. Every convolution here is therefore an explicit `jnp.pad` followed by a VALID convolution
(`Conv`), pooling is a max over each window with its own gradient (`max_pool_2x2`), and upsampling
is a broadcast and a reshape (`upsample_nearest_2x`). `Conv.impl` selects the convolution
implementation so that a faster one can be swapped in through the config field `model.conv_impl`
without touching the networks.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmma_jax import fast_conv
from cmma_jax.pooling import max_pool_2x2

Array = jax.Array
Dtype = Any


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
COMPUTE_DTYPES = tuple(_DTYPES)  # the values of a config's `model.dtype`


def compute_dtype(name: str) -> Dtype:
    """The jnp dtype for a config's `model.dtype` (one of `COMPUTE_DTYPES`)."""
    if name not in _DTYPES:
        raise ValueError(f"Unknown compute dtype {name!r}; choose one of {COMPUTE_DTYPES}.")
    return _DTYPES[name]


def upsample_nearest_2x(x: Array) -> Array:
    """2x nearest-neighbour upsampling, `[B, H, W, C] -> [B, 2H, 2W, C]` (section 4.1's "2x2
    nearest neighbour upsampling layer"), as a broadcast and a reshape."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def soft_clip(x: Array, low: float, high: float) -> Array:
    """A smooth, monotone map of the real line into (high - softplus(high - low), high), ≈ the
    identity well inside. The lower end is just under `low`: by softplus(low - high) (1e-6 below
    it for the default (-10, 4); 0.0025 for (-2, 4)).

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
           upsample: bool = False, pool: bool = False) -> Array:
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
      pool: 2x2 max-pool the output (`max_pool_2x2`). "fast_cpu" pools inside its batch loop
        where it can, never writing the whole convolution's output (`fast_conv._conv_pool`).

    Returns:
      `[B, H' + 2 padding - k + 1, W' + 2 padding - k + 1, C_out]`, with H', W' = H, W, or
      2H, 2W with `upsample`; both halved with `pool`.
    """
    impl = resolve_conv_impl(impl)
    if impl == "fast_cpu":
        return fast_conv.conv2d(x, kernel, bias, padding, upsample, pool)
    if pool:
        return max_pool_2x2(conv2d(x, kernel, bias, padding, impl, upsample))
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
        return _conv_params(self, in_features)


def _conv_params(module: nn.Module, in_features: int) -> tuple[Array, Array]:
    """`kernel` and `bias` of a module with `features`, `kernel_size` and `param_dtype`, declared
    in the module's own scope (`ConvParams` and `Conv`)."""
    k = module.kernel_size
    kernel = module.param("kernel", nn.initializers.lecun_normal(),
                          (k, k, in_features, module.features), module.param_dtype)
    bias = module.param("bias", nn.initializers.zeros, (module.features,), module.param_dtype)
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
      pool: 2x2 max-pool the output (the encoder's "convolve, then pool", fused on the fast CPU
        path).
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
    pool: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel, bias = _conv_params(self, x.shape[-1])
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv2d(x, kernel, bias, self.padding, self.impl, self.upsample, self.pool)


def dense(features: int, dtype: Dtype, name: Optional[str] = None) -> nn.Dense:
    """A dense layer computing in `dtype` with float32 parameters."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)


def flatten(x: Array) -> Array:
    """`[B, ...]` -> `[B, prod(...)]`."""
    return x.reshape(x.shape[0], -1)


def concat_attributes(h: Array, y: Optional[Array], dtype: Dtype) -> Array:
    """`[h; y]` along the last axis (h itself when y is None), y checked to be `[B, A]`."""
    if y is None:
        return h
    if y.ndim != 2 or y.shape[0] != h.shape[0]:
        raise ValueError(f"Attributes must be [B, A] with B = {h.shape[0]}, got {y.shape}.")
    return jnp.concatenate([h, y.astype(dtype)], axis=-1)


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
        mean = dense(self.features, self.dtype, "mean")(h).astype(jnp.float32)
        log_var = dense(self.features, self.dtype, "log_var")(h).astype(jnp.float32)
        if self.log_var_range is not None:
            log_var = soft_clip(log_var, *self.log_var_range)
        return mean, log_var


__all__ = [
    "Array", "Dtype", "COMPUTE_DTYPES", "compute_dtype", "max_pool_2x2", "upsample_nearest_2x", "soft_clip",
    "CONV_IMPLS", "resolve_conv_impl", "conv2d", "ConvParams", "Conv", "dense", "flatten",
    "concat_attributes", "GaussianHeads",
]
