"""Helpers shared by the model modules: optimizers, train states, norms, config look-ups, the
entry points every model implements the same way (`init_train_state`, `sample_images`,
`apply_to_images`, `edit_images`), and the pmap helpers.

Nothing here knows about a particular model. The model modules (`cmma`, `cvae`, `cgan`, `vlae`)
implement the model contract of docs/design.md on top of these; `cmma_jax.models.gaussian` holds
what the two Gaussian latent-variable models (`cmma`, `cvae`) share beyond that.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import flax
import optax
from flax.training import train_state

from cmma_jax import nets, presets
from cmma_jax.images import IMAGE_SHAPE

Array = jax.Array
PyTree = Any

# What a trained model can do, by name: each model module declares `capabilities(config) ->
# frozenset` of these names (`cmma_jax.models.capabilities`) and defines the functions they name.
#   sample: faces from attributes (`sample`)       encode: q(z | x[, y]) (`encode`)
#   reconstruct: through the posterior mean       edit: change a face's attributes (`edit`)
#   bound, iwae: lower bounds on log p(x | y)     traverse: per-layer latent traversals
#   arithmetic: face arithmetic A - B + C (`face_arithmetic`)
CAPABILITIES = ("sample", "encode", "reconstruct", "edit", "bound", "iwae", "traverse",
                "arithmetic")

# Flax's TrainState (step, apply_fn, params, tx, opt_state) is the state of the single-network
# models; `create_train_state` makes its step an int32 array so the pytree's types never change.
TrainState = train_state.TrainState


def learning_rate_schedule(
    learning_rate: float, warmup_steps: Optional[int] = None
) -> optax.Schedule | float:
    """A constant learning rate, after an optional linear warm-up from 0 over `warmup_steps`."""
    if not warmup_steps:
        return learning_rate
    return optax.linear_schedule(0.0, learning_rate, int(warmup_steps))


def make_optimizer(
    optimizer_config: Mapping[str, Any], learning_rate: Optional[float] = None
) -> optax.GradientTransformation:
    """Adam from a config's `optimizer` section.

    Args:
      optimizer_config: with `learning_rate`, `b1`, `b2`, optional `eps` (default 1e-8), optional
        `grad_clip_norm` (None or 0: no clipping; otherwise gradients are clipped to this global
        norm before Adam), optional `warmup_steps` (linear warm-up of the learning rate) and
        optional `prior_lr_scale` (the CMMA's f learns at this multiple of the rate).
      learning_rate: overrides `optimizer_config.learning_rate` (the CGAN's two rates).

    Returns:
      An optax transformation. Its state has the dtype of the parameters (float32 here).
    """
    name = optimizer_config.get("name", "adam")
    if name != "adam":
        raise ValueError(f"Only the adam optimizer is supported, got {name!r}.")
    lr = optimizer_config["learning_rate"] if learning_rate is None else learning_rate
    adam = optax.adam(
        learning_rate_schedule(lr, optimizer_config.get("warmup_steps", None)),
        b1=optimizer_config["b1"],
        b2=optimizer_config["b2"],
        eps=optimizer_config.get("eps", 1e-8) or 1e-8,
    )
    clip = optimizer_config.get("grad_clip_norm", None)
    if clip:
        adam = optax.chain(optax.clip_by_global_norm(clip), adam)
    scale = optimizer_config.get("prior_lr_scale", None)
    if scale is not None and float(scale) != 1.0:
        # An ablation: the CMMA's attribute network f (its parameters under "attribute_net")
        # learns at `scale` times the rate of the others (Adam's step is proportional to its
        # learning rate, so scaling f's updates is scaling its rate).
        adam = optax.chain(adam, optax.masked(optax.scale(float(scale)), _is_prior_param))
    return adam


def _is_prior_param(params: PyTree) -> PyTree:
    """True for the parameters of the CMMA's attribute network f ("attribute_net")."""
    return {k: jax.tree_util.tree_map(lambda _: k == "attribute_net", v)
            for k, v in params.items()}


# flax's lecun_normal: a normal truncated to ±2 standard deviations, rescaled to unit variance.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def init_params(model, key: Array, *args, method=None, **kwargs) -> PyTree:
    """The parameters of `model`, distributed as `model.init` would draw them, in ONE random draw.

    Every network in `cmma_jax.nets` initialises its parameters named "kernel" with flax's
    `lecun_normal` (truncated normal, variance 1/fan_in, fan_in = the product of all but the last
    axis) and those named "bias" with zeros. `model.init` draws each kernel with its own key, and
    on CPU XLA spends ~0.5 s compiling each of those draws (threefry), i.e. 10+ s for a model. This
    function takes the shapes from `jax.eval_shape(model.init, ...)` (no compilation) and fills all
    the kernels from one truncated-normal draw: the same distributions, other numbers.

    Args:
      model: a flax linen module built from `cmma_jax.nets`.
      key: a `jax.random` key.
      *args, method, **kwargs: as for `model.init`.

    Returns:
      The "params" collection (float32).

    Raises:
      ValueError: for a parameter that is neither a "kernel" nor a "bias", or another collection.
    """
    abstract = jax.eval_shape(
        lambda k: model.init({"params": k}, *args, method=method, **kwargs), key)
    if set(abstract) != {"params"}:
        raise ValueError(f"init_params handles the 'params' collection only, got {set(abstract)}.")
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract["params"])
    names = [str(getattr(path[-1], "key", path[-1])) for path, _ in paths_and_leaves]
    for name, (path, _) in zip(names, paths_and_leaves):
        if name not in ("kernel", "bias"):
            raise ValueError(f"init_params: no initialiser known for parameter {path}.")
    sizes = [math.prod(leaf.shape) if name == "kernel" else 0
             for name, (_, leaf) in zip(names, paths_and_leaves)]
    flat = jax.random.truncated_normal(key, -2.0, 2.0, (max(sum(sizes), 1),), jnp.float32)
    leaves, offset = [], 0
    for name, size, (_, leaf) in zip(names, sizes, paths_and_leaves):
        if name == "bias":
            leaves.append(jnp.zeros(leaf.shape, jnp.float32))
            continue
        fan_in = math.prod(leaf.shape[:-1])
        std = 1.0 / math.sqrt(fan_in) / _TRUNCATED_NORMAL_STD
        leaves.append(flat[offset:offset + size].reshape(leaf.shape) * std)
        offset += size
    return jax.tree_util.tree_unflatten(treedef, leaves)


def create_train_state(
    apply_fn: Callable[..., Any], params: PyTree, tx: optax.GradientTransformation
) -> TrainState:
    """A flax `TrainState` with an int32 scalar `step` and float32 parameters."""
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
    state = TrainState.create(apply_fn=apply_fn, params=params, tx=tx)
    return state.replace(step=jnp.zeros((), jnp.int32))


def global_norm(tree: PyTree) -> Array:
    """The L2 norm of all the leaves of a pytree, float32."""
    return optax.tree.norm(jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), tree))


def f32_metrics(metrics: Mapping[str, Array]) -> dict[str, Array]:
    """A flat dict of float32 scalars (left on the device)."""
    return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def model_dtype(config) -> Any:
    """The computation dtype of `config.model.dtype`."""
    return nets.compute_dtype(config.model.get("dtype", "float32"))


def optional_range(value) -> Optional[tuple[float, float]]:
    """A config's (low, high) range as a tuple of floats, or None."""
    if value is None:
        return None
    low, high = (float(v) for v in value)
    if not low < high:
        raise ValueError(f"A log-variance range needs low < high, got {tuple(value)}.")
    return (low, high)


def batch_inputs(batch: Mapping[str, Any]) -> tuple[Array, Array]:
    """(image, attributes) of a batch (or of an example batch, for `init`) as float32 arrays."""
    image = jnp.asarray(batch["image"], jnp.float32)
    attributes = jnp.asarray(batch["attributes"], jnp.float32)
    if image.ndim != 4 or attributes.ndim != 2 or image.shape[0] != attributes.shape[0]:
        raise ValueError(f"Expected image [B, {', '.join(map(str, IMAGE_SHAPE))}] and attributes "
                         f"[B, A], got {image.shape} and {attributes.shape}.")
    return image, attributes


def edit_inputs(image: Array, attrs_from: Array, attrs_to: Array) -> tuple[Array, Array, Array]:
    """(image, attrs_from, attrs_to) of an attribute edit as float32 arrays, shapes checked."""
    x, y_from = batch_inputs({"image": image, "attributes": attrs_from})
    y_to = jnp.asarray(attrs_to, jnp.float32)
    if y_to.shape != y_from.shape:
        raise ValueError(f"attrs_from has shape {y_from.shape} but attrs_to has shape "
                         f"{y_to.shape}.")
    return x, y_from, y_to


def network_options(config) -> dict[str, Any]:
    """The options every model passes to its networks: `conv_impl` and the compute `dtype`."""
    return {"conv_impl": config.model.get("conv_impl", "auto"), "dtype": model_dtype(config)}


def log_var_ranges(config) -> dict[str, Any]:
    """The variance options of a config, as the keyword arguments of the models with a Gaussian
    decoder: the soft-clip ranges (`model.decoder_log_var_range`, `model.latent_log_var_range`)
    and the decoder's likelihood (`model.decoder_variance`, `model.decoder_sigma`; unset: the
    preset's, `presets.resolve_likelihood`)."""
    m = config.model
    likelihood = presets.resolve_likelihood(m)
    return {"decoder_log_var_range": optional_range(m.get("decoder_log_var_range", None)),
            "latent_log_var_range": optional_range(m.get("latent_log_var_range", None)),
            "decoder_variance": likelihood["decoder_variance"],
            "decoder_sigma": likelihood["decoder_sigma"]}


# ---------------------------------------------------------------------------------------------
# Entry points that every model implements the same way. `get_model(config, num_attributes)`
# is the model module's; its flax module has the methods named here.


def init_train_state(get_model: Callable[..., Any], key: Array, config,
                     example_batch: Mapping[str, Any]) -> TrainState:
    """The initial `TrainState` of a single-network model (float32 parameters, Adam state, int32
    step 0): `init_params` of `get_model(config, A)` on the example batch, jitted."""
    image, attributes = batch_inputs(example_batch)
    model = get_model(config, attributes.shape[-1])
    params = jax.jit(lambda k: init_params(model, k, image, attributes))(key)
    return create_train_state(model.apply, params, make_optimizer(config.optimizer))


def sample_images(get_model: Callable[..., Any], params: PyTree, attributes: Array, key: Array,
                  temperature: float | Array, config) -> Array:
    """The model's `generate(attributes, temperature)`, with `key` as the "sample" stream: the
    body of every model's `sample`.

    Raises:
      ValueError: for attribute vectors whose width is not the one the parameters were trained
        with (flax's own error names a parameter shape, not the attributes).
    """
    attributes = jnp.asarray(attributes, jnp.float32)
    model = get_model(config, attributes.shape[-1])
    try:
        return model.apply({"params": params}, attributes, temperature,
                           method=type(model).generate, rngs={"sample": key})
    except flax.errors.ScopeParamShapeError as e:
        raise ValueError(
            f"sample: the attribute vectors have {attributes.shape[-1]} columns (shape "
            f"{tuple(attributes.shape)}), which the model's parameters do not take ({e}). Give one "
            "column per attribute the model was trained on, in its order: "
            "cmma_jax.workdirs.load_model(workdir).attribute_names.") from None


def apply_to_images(get_model: Callable[..., Any], params: PyTree, image: Array,
                    attributes: Array, method, config) -> Any:
    """`method` of the model `get_model(config, A)` applied to (image, attributes), checked and
    float32: the body of every model's `encode` and `reconstruct`."""
    x, y = batch_inputs({"image": image, "attributes": attributes})
    return get_model(config, y.shape[-1]).apply({"params": params}, x, y, method=method)


def edit_images(get_model: Callable[..., Any], params: PyTree, image: Array, attrs_from: Array,
                attrs_to: Array, config) -> Array:
    """The model's `edit(x, y_from, y_to)` on checked float32 inputs: the body of every `edit`."""
    x, y_from, y_to = edit_inputs(image, attrs_from, attrs_to)
    model = get_model(config, y_from.shape[-1])
    return model.apply({"params": params}, x, y_from, y_to, method=type(model).edit)


# ---------------------------------------------------------------------------------------------
# pmap: the same step as on one device
#
# Under `jax.pmap` (the trainer's optional parallelism, `axis_name` set) each device holds B/n
# examples and the same step key. So that a pmapped step computes exactly what one device computes
# on the global batch (same noise for every example, batch statistics such as the VLAE's MMD over
# the global batch), the models draw noise for the global batch and keep their own rows
# (`losses.batch_normal`), and compute batch-level objectives on all-gathered arrays.
# Without `axis_name` (jit, on one device or over a mesh, where JAX partitions a global
# computation) these helpers do nothing.


def gather_rows(tree: PyTree, axis_name: Optional[str]) -> PyTree:
    """The global batch: `[B/n, ...]` on each device -> `[B, ...]` (device order) under pmap."""
    if axis_name is None:
        return tree
    return jax.tree_util.tree_map(
        lambda a: jax.lax.all_gather(a, axis_name, axis=0, tiled=True), tree)


def own_rows(tree: PyTree, local_size: int, axis_name: Optional[str]) -> PyTree:
    """This device's `local_size` rows of global-batch arrays (the inverse of `gather_rows`)."""
    if axis_name is None:
        return tree
    start = jax.lax.axis_index(axis_name) * local_size
    return jax.tree_util.tree_map(
        lambda a: jax.lax.dynamic_slice_in_dim(a, start, local_size, axis=0), tree)


def globalize(fn: Callable[..., Any], local_size: int, axis_name: Optional[str]):
    """`fn` (a network on a local batch) as a function of global-batch arrays under pmap: it runs
    on this device's rows and all-gathers the outputs. Every device then sees the global outputs,
    and the gradient flows back to each device's own rows (all_gather's transpose is a
    reduce-scatter)."""
    if axis_name is None:
        return fn

    def wrapped(*args):
        return gather_rows(fn(*own_rows(args, local_size, axis_name)), axis_name)

    return wrapped


def cross_device_mean(tree: PyTree, axis_name: Optional[str]) -> PyTree:
    """`lax.pmean` over `axis_name` under `pmap`; the identity when `axis_name` is None."""
    if axis_name is None:
        return tree
    return jax.lax.pmean(tree, axis_name)
