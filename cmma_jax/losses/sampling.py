"""Gaussian noise and reparameterised samples, the same whatever the number of devices the batch
is split over."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from cmma_jax.losses._contract import Array, ArrayLike, _check_same_shape


def batch_normal(key: Array, shape: Sequence[int], dtype=jnp.float32,
                 axis_name: str | None = None) -> Array:
    """Standard normal noise for a batch, the same whatever the number of devices it is split over.

    Without `axis_name` this is `jax.random.normal(key, shape, dtype)`. Inside `pmap` or
    `shard_map` with the batch split over the axis `axis_name`, every device draws the noise of the
    whole global batch, `[n * B_local, ...]`, from the same key and keeps its own rows: a step on
    n devices then sees exactly the noise of the same step on one device.

    Args:
      key: a `jax.random` key, the same on every device.
      shape: the local shape `[B_local, ...]`.
      dtype: a float dtype.
      axis_name: the mapped axis the batch is split over, or None.

    Returns:
      `[B_local, ...]` standard normal values.
    """
    shape = tuple(shape)
    if axis_name is None:
        return jax.random.normal(key, shape, dtype=dtype)
    num_devices = jax.lax.psum(1, axis_name)  # a Python int: the size of the mapped axis
    index = jax.lax.axis_index(axis_name)
    full = jax.random.normal(key, (num_devices * shape[0],) + shape[1:], dtype=dtype)
    return jax.lax.dynamic_slice_in_dim(full, index * shape[0], shape[0], axis=0)


def reparameterize(key: Array, mean: ArrayLike, log_var: ArrayLike, *,
                   axis_name: str | None = None) -> Array:
    """A sample z ~ N(mean, diag(exp(log_var))), differentiable in `mean` and `log_var`.

    The CMMA paper's eqs. (9)-(10), with erratum 2: its `h_σ` is a log-variance, so the standard
    deviation is `exp(h_σ / 2)`:

        ε ~ N(0, I),   z = μ + ε ⊙ exp(v / 2)

    Args:
      key: a `jax.random` key.
      mean: `[B, ...]`.
      log_var: same shape as `mean`.
      axis_name: inside `pmap`/`shard_map` with the batch split over this axis, draw the noise
        so that it does not depend on the number of devices (`batch_normal`).

    Returns:
      A sample with the shape and dtype of `mean`.

    Raises:
      ValueError: if the shapes differ.
    """
    mean, log_var = jnp.asarray(mean), jnp.asarray(log_var)
    _check_same_shape("reparameterize", mean=mean, log_var=log_var)
    eps = batch_normal(key, mean.shape, mean.dtype, axis_name) if mean.ndim else \
        jax.random.normal(key, mean.shape, dtype=mean.dtype)
    return mean + eps * jnp.exp(0.5 * log_var)
