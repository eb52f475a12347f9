"""2x2 max-pooling with its own gradient: to each window's first maximum, kept as an int8.

`max_pool_2x2(x)`: `[B, H, W, C] -> [B, H/2, W/2, C]` (H, W even), stride 2. Not `nn.max_pool`:
the gradient of XLA's reduce-window is slow on CPU. Nor JAX's own gradient of a max over the
window's axes, which writes a float mask of the maxima and their count, as large as the input, in
the forward pass (the paper CMMA's first layer: 177 MB at batch 64). Here the gradient goes to
the first maximum of each window in row-major order (as PyTorch's `max_pool2d`), whose position
(0-3) the forward pass keeps as an int8: a fourth of the input's elements at a fourth of their
size. The paper CMMA's first pooling with the ReLU after it, forward and backward at batch 64:
256 -> 81 ms (quiet 2-core AMD EPYC, 2026-12-07). Where a window holds ties the gradient is a
subgradient (all of it to the first maximum), not JAX's even split.

`max_and_position` and `unpool` are the two halves, for layers that pool inside their own loop
(`fast_conv.conv2d(..., pool=True)`).

A bottom layer: it imports jax only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _check(x: Array) -> None:
    if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"max_pool_2x2 needs [B, H, W, C] with even spatial sizes, got "
                         f"{x.shape}.")


def max_and_position(x: Array) -> tuple[Array, Array]:
    """Each 2x2 window's maximum `[B, H/2, W/2, C]` and the position of its first maximum (0-3,
    row-major; int8, the same shape)."""
    _check(x)
    b, h, w, c = x.shape
    r = x.reshape(b, h // 2, 2, w // 2, 2, c)
    top_left, top_right = r[:, :, 0, :, 0], r[:, :, 0, :, 1]
    bottom_left, bottom_right = r[:, :, 1, :, 0], r[:, :, 1, :, 1]
    top = jnp.maximum(top_left, top_right)
    top_at = jnp.where(top_right > top_left, 1, 0).astype(jnp.int8)
    bottom = jnp.maximum(bottom_left, bottom_right)
    bottom_at = jnp.where(bottom_right > bottom_left, 3, 2).astype(jnp.int8)
    lower = bottom > top
    return jnp.where(lower, bottom, top), jnp.where(lower, bottom_at, top_at)


def unpool(position: Array, dy: Array) -> Array:
    """The gradient of the input, `[B, H, W, C]`: each of dy's `[B, H/2, W/2, C]` values at its
    window's `position`, zeros elsewhere."""
    b, h2, w2, c = dy.shape
    where = jnp.arange(4, dtype=jnp.int8).reshape(1, 1, 2, 1, 2, 1)
    dx = jnp.where(position[:, :, None, :, None, :] == where, dy[:, :, None, :, None, :],
                   jnp.zeros((), dy.dtype))
    return dx.reshape(b, 2 * h2, 2 * w2, c)


@jax.custom_vjp
def max_pool_2x2(x: Array) -> Array:
    """2x2 max-pooling with stride 2, `[B, H, W, C] -> [B, H/2, W/2, C]` (H, W even); its
    gradient to each window's first maximum (module docstring)."""
    return max_and_position(x)[0]


max_pool_2x2.defvjp(max_and_position, lambda position, dy: (unpool(position, dy),))


__all__ = ["max_and_position", "max_pool_2x2", "unpool"]
