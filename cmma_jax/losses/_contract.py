"""The helpers every objective shares: the array types, the shape checks (nothing is broadcast),
the per-example contract (`event_ndims`, described in `cmma_jax.losses`) and the float32 policy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
GaussianParams = tuple[Array, Array]


def _shape_error(what: str, name_a: str, a_shape, name_b: str, b_shape) -> ValueError:
    return ValueError(
        f"{what}: {name_a} has shape {tuple(a_shape)} but {name_b} has shape {tuple(b_shape)}; "
        "they must be equal (nothing is broadcast)."
    )


def _check_same_shape(what: str, **arrays: Array) -> None:
    """Raises a ValueError naming both shapes unless every array has the same shape."""
    items = list(arrays.items())
    name0, a0 = items[0]
    for name, a in items[1:]:
        if jnp.shape(a) != jnp.shape(a0):
            raise _shape_error(what, name0, jnp.shape(a0), name, jnp.shape(a))


def _check_min_rank(what: str, name: str, a: Array, rank: int) -> None:
    if jnp.ndim(a) < rank:
        raise ValueError(
            f"{what}: {name} has shape {tuple(jnp.shape(a))}; expected at least {rank} "
            "dimension(s) with the batch first."
        )


def _check_same_dim(what: str, x: Array, y: Array, axis: int, noun: str) -> None:
    """Raises a ValueError naming both shapes unless x and y agree along `axis` (`noun` names it:
    "batch sizes", "feature sizes")."""
    if x.shape[axis] != y.shape[axis]:
        raise ValueError(
            f"{what}: x has shape {x.shape} and y has shape {y.shape}; their {noun} "
            f"({x.shape[axis]} and {y.shape[axis]}) must be equal."
        )


def _check_rank(what: str, name: str, a: Array, rank: int) -> None:
    if jnp.ndim(a) != rank:
        raise ValueError(
            f"{what}: {name} has shape {tuple(jnp.shape(a))}; expected exactly {rank} dimension(s)."
        )


def _sum_non_batch(a: Array) -> Array:
    """Sums over every axis but the first: [B, ...] -> [B]."""
    return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def _event_ndims(what: str, event_ndims, ndim: int, name: str = "x") -> int:
    """The number of trailing event axes of an input of `ndim` axes (the module's contract)."""
    if event_ndims is None:
        if ndim < 2:
            raise ValueError(
                f"{what}: {name} has {ndim} axis/axes; without event_ndims the first axis is the "
                "batch and the others are one example, so at least 2 are needed. For one example "
                "(e.g. inside jax.vmap over examples) pass event_ndims=<its number of axes>, "
                "e.g. 1 for a latent vector, 3 for an image.")
        return ndim - 1
    if isinstance(event_ndims, bool) or not isinstance(event_ndims, (int, np.integer)) \
            or not 0 <= int(event_ndims) <= ndim:
        raise ValueError(f"{what}: event_ndims must be an integer from 0 to {name}'s {ndim} "
                         f"axes, got {event_ndims!r}.")
    return int(event_ndims)


def _sum_event(a: Array, event_ndims: int) -> Array:
    """Sums the last `event_ndims` axes: [*batch, *event] -> [*batch]."""
    return jnp.sum(a, axis=tuple(range(a.ndim - event_ndims, a.ndim)))


def _at_least_float32(*arrays: ArrayLike) -> list[Array]:
    """The arrays in float32 (float64 stays float64). The numerics policy: the objectives compute
    and sum in float32 at least, whatever the networks' compute dtype, since in bfloat16 a sum over
    12,288 pixels (and each term's rounding) would be off by tens to hundreds of nats."""
    as_arrays = [jnp.asarray(a) for a in arrays]
    dtype = jnp.result_type(jnp.float32, *[a.dtype for a in as_arrays])
    return [a.astype(dtype) for a in as_arrays]
