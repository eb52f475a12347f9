"""What the Gaussian latent-variable models (`cmma`, `cvae`) share.

Both have one latent z with a diagonal Gaussian posterior from the image encoder h and a Gaussian
image likelihood from the decoder g, and train on a conditional variational bound:

    q(z | x, y) = N(h_μ(x[, y]), exp(h_σ(x[, y])))     (`nets.ImageEncoder`)
    p(x | z[, y]) = N(g_μ, exp(g_σ))                   (`nets.ImageDecoder`)
    log p(x | y) >= E_q[log p(x | z[, y])] - KL(q(z | x, y) ‖ p(z | y))

They differ in the prior (CMMA: p(z | y) from the attribute network f; CVAE: N(0, I)), in what the
decoder sees (CMMA: z; CVAE: [z; y]), and so in how they generate and edit faces. Each model's
flax module subclasses `GaussianLatentModel` and defines `prior`, `decode`, `generate` and `edit`;
each model module defines `get_model` and binds the other functions of the model contract
(init_state, bound, iwae, train_step, sample, encode, reconstruct, edit, capabilities) from
`entry_points`, which writes them once, on the helpers here (`networks`, `elbo_train_step`) and in
`common`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from cmma_jax import losses, nets
from cmma_jax.models import common

Array = jax.Array
PyTree = Any

# The capabilities (`common.CAPABILITIES`) of both models, and the metrics a progress line shows.
CAPABILITIES = frozenset({"sample", "encode", "reconstruct", "edit", "bound", "iwae"})
PROGRESS_METRICS = ("loss", "elbo", "kl")


@flax.struct.dataclass
class GaussianVAEOutput:
    """What the forward pass of a Gaussian latent-variable model returns.

    Attributes:
      posterior_mean, posterior_log_var: q(z | x, y), each `[B, J]`.
      prior_mean, prior_log_var: p(z | y) (CMMA) or N(0, I) (CVAE), each `[B, J]`.
      image_mean, image_log_var: p(x | z, ...) at z = the posterior mean, each `[B, 64, 64, 3]`.
    """

    posterior_mean: Array
    posterior_log_var: Array
    prior_mean: Array
    prior_log_var: Array
    image_mean: Array
    image_log_var: Array


class GaussianLatentModel(nn.Module):
    """The encoder h and the decoder g of a Gaussian latent-variable model, and the methods that
    do not depend on its prior. Subclasses define `prior`, `decode`, `generate` and `edit`.

    Attributes:
      features: (c1, c2, c3), the widths of h and g.
      latent_dim: size of z.
      feed_attributes: feed y to the encoder h (q(z | x, y) rather than q(z | x)).
      decoder_log_var_range: optional soft-clip range of the pixel log-variance (None = linear).
      latent_log_var_range: optional soft-clip range of the latent log-variances (None = linear).
      decoder_variance: what the pixel variance depends on (`nets.DECODER_VARIANCES`; "pixel",
        the paper's per-pixel head).
      decoder_sigma: every pixel's standard deviation with decoder_variance "fixed".
      conv_impl: convolution implementation (`nets.Conv`).
      dtype: computation dtype; parameters are float32.
    """

    # True: `prior` is a network p(z | y), passed to the objectives (`losses.cmma_elbo`); False:
    # the prior is N(0, I), which the objectives take as prior=None (`losses.cvae_elbo`).
    LEARNED_PRIOR: ClassVar[bool] = False

    features: Sequence[int]
    latent_dim: int
    feed_attributes: bool = False
    decoder_log_var_range: Optional[tuple[float, float]] = None
    latent_log_var_range: Optional[tuple[float, float]] = None
    decoder_variance: str = "pixel"
    decoder_sigma: float = nets.DEFAULT_DECODER_SIGMA
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    def setup(self):
        self.encoder = nets.ImageEncoder(  # h
            self.features, self.latent_dim, self.feed_attributes, self.latent_log_var_range,
            self.conv_impl, self.dtype)
        self.decoder = nets.ImageDecoder(  # g
            self.features, True, self.decoder_log_var_range, self.conv_impl, self.dtype,
            variance=self.decoder_variance,
            sigma=self.decoder_sigma)

    def encode(self, x: Array, y: Array) -> tuple[Array, Array]:
        """q(z | x, y): (h_μ, h_σ), each `[B, J]` float32 (y is used only with feed_attributes)."""
        return self.encoder(x, y if self.feed_attributes else None)

    def decode(self, z: Array, y: Optional[Array] = None) -> tuple[Array, Array]:
        """p(x | z[, y]): (mean, log_var), each `[B, 64, 64, 3]` float32."""
        raise NotImplementedError

    def prior(self, y: Array) -> tuple[Array, Array]:
        """p(z | y) as (mean, log_var), each `[B, J]` float32."""
        raise NotImplementedError

    def reconstruct(self, x: Array, y: Array) -> Array:
        """g_μ(h_μ): the reconstruction through the posterior mean."""
        return self.decode(self.encode(x, y)[0], y)[0]

    def __call__(self, x: Array, y: Array) -> GaussianVAEOutput:
        """Every network once (used by `init`): posterior, prior, and p(x | z = posterior mean)."""
        mean_q, log_var_q = self.encode(x, y)
        mean_p, log_var_p = self.prior(y)
        image_mean, image_log_var = self.decode(mean_q, y)
        return GaussianVAEOutput(mean_q, log_var_q, mean_p, log_var_p, image_mean, image_log_var)


def model_fields(config, sizes: Mapping[str, Any], feed_attributes: bool) -> dict[str, Any]:
    """The `GaussianLatentModel` fields of a config: sizes (`presets.resolve_sizes`), soft-clip
    ranges, convolution implementation and dtype; `feed_attributes` is the model's default of
    `model.feed_attributes_to_encoder`."""
    return dict(
        features=sizes["encoder_features"],
        latent_dim=sizes["latent_dim"],
        feed_attributes=bool(config.model.get("feed_attributes_to_encoder", feed_attributes)),
        **common.log_var_ranges(config),
        **common.network_options(config),
    )


def networks(model: GaussianLatentModel, params: PyTree) -> dict[str, Callable[..., Any]]:
    """The model's networks as functions of arrays, named as the objectives of `cmma_jax.losses`
    take them: "encode" (x, y), "decode" (z, y) and, with a learned prior, "prior" (y)."""
    variables = {"params": params}
    cls = type(model)
    fns = {"encode": lambda x, y: model.apply(variables, x, y, method=cls.encode),
           "decode": lambda z, y: model.apply(variables, z, y, method=cls.decode)}
    if cls.LEARNED_PRIOR:
        fns["prior"] = lambda y: model.apply(variables, y, method=cls.prior)
    return fns


class EntryPoints(NamedTuple):
    """The functions of the model contract (docs/design.md) that `entry_points` writes for a
    Gaussian latent-variable model, in the order its module unpacks them."""

    init_state: Callable[..., common.TrainState]
    bound: Callable[..., losses.ElboTerms]
    iwae: Callable[..., Array]
    train_step: Callable[..., tuple[common.TrainState, dict[str, Array]]]
    sample: Callable[..., Array]
    encode: Callable[..., tuple[Array, Array]]
    reconstruct: Callable[..., Array]
    edit: Callable[..., Array]
    capabilities: Callable[[Any], frozenset[str]]


def entry_points(module_cls: type[GaussianLatentModel],
                 get_model: Callable[..., GaussianLatentModel],
                 objective: Callable[..., losses.ElboTerms]) -> EntryPoints:
    """The model contract's functions of a Gaussian latent-variable model, written once for both.

    A model module binds them at module level, in the order of `EntryPoints`:

        (init_state, bound, iwae, train_step, sample, encode, reconstruct, edit,
         capabilities) = gaussian.entry_points(CMMA, get_model, losses.cmma_elbo)

    They are then the module's own functions, with the contract's signatures (`config` keyword-only,
    bound with `functools.partial` before `jax.jit`), and named, documented and attributed to the
    module (`__module__`, `__qualname__`) as if defined there:

      init_state(key, config, example_batch) -> TrainState
      bound(params, batch, key, *, config, num_samples=1, axis_name=None) -> losses.ElboTerms
      iwae(params, batch, key, *, config, num_samples) -> [B]
      train_step(state, batch, key, *, config, axis_name=None) -> (state, metrics)
      sample(params, attributes, key, temperature=1.0, *, config) -> [B, 64, 64, 3]
      encode(params, image, attributes, *, config) -> (mean, log_var)
      reconstruct(params, image, attributes, *, config) -> [B, 64, 64, 3]
      edit(params, image, attrs_from, attrs_to, *, config) -> [B, 64, 64, 3]
      capabilities(config) -> `CAPABILITIES`

    Args:
      module_cls: the model's flax module, a `GaussianLatentModel` subclass: what `encode`,
        `reconstruct`, `sample` (its `generate`) and `edit` apply; its name is in the docstrings.
      get_model: the model module's `get_model(config, num_attributes) -> module_cls`.
      objective: the model's bound (`losses.cmma_elbo`, `losses.cvae_elbo`), called with the
        networks of `networks` ("prior" only when `module_cls.LEARNED_PRIOR`).

    Returns:
      The nine functions, as `EntryPoints`.
    """
    model = module_cls.__name__
    objective_name = objective.__name__
    objective_summary = (objective.__doc__ or "").strip().splitlines()[0]

    def capabilities(config) -> frozenset[str]:
        del config
        return CAPABILITIES

    def init_state(key: Array, config, example_batch: Mapping[str, Any]) -> common.TrainState:
        return common.init_train_state(get_model, key, config, example_batch)

    def bound(params, batch: Mapping[str, Array], key: Array, *, config,
              num_samples: int = 1, axis_name: Optional[str] = None) -> losses.ElboTerms:
        x, y = common.batch_inputs(batch)
        fns = networks(get_model(config, y.shape[-1]), params)
        fns = {name: common.globalize(f, x.shape[0], axis_name) for name, f in fns.items()}
        x, y = common.gather_rows((x, y), axis_name)
        return objective(key, x, y, **fns, num_samples=num_samples)

    def iwae(params, batch: Mapping[str, Array], key: Array, *, config,
             num_samples: int) -> Array:
        x, y = common.batch_inputs(batch)
        fns = networks(get_model(config, y.shape[-1]), params)
        return losses.iwae_bound(key, x, y, encode=fns["encode"], decode=fns["decode"],
                                 prior=fns.get("prior"), num_samples=num_samples)

    def train_step(state: common.TrainState, batch: Mapping[str, Array], key: Array, *,
                   config, axis_name: Optional[str] = None
                   ) -> tuple[common.TrainState, dict[str, Array]]:
        return elbo_train_step(
            state, batch, key,
            bound_fn=functools.partial(bound, config=config, num_samples=1),
            axis_name=axis_name,
            kl_warmup_steps=int(config.training.get("kl_warmup_steps") or 0))

    def sample(params, attributes: Array, key: Array, temperature: float | Array = 1.0, *,
               config) -> Array:
        return common.sample_images(get_model, params, attributes, key, temperature, config)

    def encode(params, image: Array, attributes: Array, *, config) -> tuple[Array, Array]:
        return common.apply_to_images(get_model, params, image, attributes, module_cls.encode,
                                      config)

    def reconstruct(params, image: Array, attributes: Array, *, config) -> Array:
        return common.apply_to_images(get_model, params, image, attributes,
                                      module_cls.reconstruct, config)

    def edit(params, image: Array, attrs_from: Array, attrs_to: Array, *, config) -> Array:
        return common.edit_images(get_model, params, image, attrs_from, attrs_to, config)

    docs = {
        "capabilities": f"What a {model} can do (`cmma_jax.models.CAPABILITIES`): sample, encode, "
                        "reconstruct, edit, bound, iwae.",
        "init_state": "Initial `TrainState` (float32 parameters, Adam state, int32 step 0).",
        "bound": f"""{objective_summary}

        Per example: `losses.{objective_name}` of the {model}'s networks, each term `[B]` in
        nats. `train_step` minimises `-bound(...).elbo.mean()` with the same key, so the two agree
        exactly. Under `pmap` (`axis_name`) it returns the terms of the global batch on every
        device, with the noise a single device would draw (`cmma_jax.models.common.globalize`).
        """,
        "iwae": f"The importance-weighted bound on log p(x | y) with `num_samples` samples and "
                f"the {model}'s prior, `[B]` nats (`losses.iwae_bound`).",
        "train_step": f"One Adam step on the negative {model} bound (`bound`); metrics: loss, "
                      "elbo, log_likelihood, kl, grad_norm, param_norm (float32 scalars on the "
                      "device). `axis_name`: the pmap axis, if any "
                      "(`cmma_jax.models.gaussian.elbo_train_step`).",
        "sample": f"Faces from attributes, `[B, 64, 64, 3]`: `{model}.generate` with `key` as "
                  "its noise. Temperature 0 gives the means only, whatever the key.",
        "encode": f"q(z | x, y): (mean, log_var), each `[B, latent_dim]` (`{model}.encode`).",
        "reconstruct": f"The reconstruction through the posterior mean, `[B, 64, 64, 3]` "
                       f"(`{model}.reconstruct`).",
        "edit": f"Changes the attributes of faces from `attrs_from` to `attrs_to`, "
                f"`[B, 64, 64, 3]` (`{model}.edit`).",
    }
    fns = dict(init_state=init_state, bound=bound, iwae=iwae, train_step=train_step,
               sample=sample, encode=encode, reconstruct=reconstruct, edit=edit,
               capabilities=capabilities)
    for name, fn in fns.items():
        fn.__module__ = get_model.__module__
        fn.__qualname__ = name
        fn.__doc__ = inspect.cleandoc(docs[name])
    return EntryPoints(**fns)


def elbo_train_step(
    state: common.TrainState,
    batch: Mapping[str, Array],
    key: Array,
    *,
    bound_fn: Callable[[PyTree, Mapping[str, Array], Array], Any],
    axis_name: Optional[str] = None,
    kl_warmup_steps: int = 0,
) -> tuple[common.TrainState, dict[str, Array]]:
    """One Adam step on the negative conditional bound, averaged over the batch.

    loss = mean_b [ -elbo_b ], with elbo_b the per-example bound in nats (a sum over the pixels and
    the latent units: never a per-pixel mean, which would rescale the KL's weight).

    With `kl_warmup_steps` > 0 (an ablation; 0 in the paper) the KL term is weighed by
    β = min(1, step / kl_warmup_steps) in the loss: loss = mean_b [ -(log p(x|z) - β KL) ]. Until
    step `kl_warmup_steps` the loss is then not the bound; the "elbo" metric always is.

    Args:
      state: a `TrainState`.
      batch: `{"image": [B, 64, 64, 3], "attributes": [B, A]}`.
      key: the per-step key.
      bound_fn: `bound_fn(params, batch, key) -> losses.ElboTerms` (per example).
      axis_name: the `pmap` axis, or None (jit, any mesh). Under `pmap`, `bound_fn` must take an
        `axis_name` keyword and return the terms of the global batch (see `common.globalize`);
        the gradients are averaged over the devices, which makes them those of the global loss.

    Returns:
      The new state and the metrics: "loss", "elbo", "log_likelihood", "kl" (batch means),
      "grad_norm" (before clipping) and "param_norm" (of the parameters the loss was computed at).
    """

    if kl_warmup_steps:
        beta = jnp.minimum(1.0, state.step.astype(jnp.float32) / float(kl_warmup_steps))
    else:
        beta = None

    def loss_fn(params):
        terms = bound_fn(params, batch, key, axis_name=axis_name)
        if beta is None:
            return -jnp.mean(terms.elbo), terms
        return -jnp.mean(terms.log_likelihood - beta * terms.kl), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = common.cross_device_mean(grads, axis_name)
    metrics = {
        "loss": loss,
        "elbo": jnp.mean(terms.elbo),
        "log_likelihood": jnp.mean(terms.log_likelihood),
        "kl": jnp.mean(terms.kl),
        "grad_norm": common.global_norm(grads),
        "param_norm": common.global_norm(state.params),
    }
    metrics = common.cross_device_mean(metrics, axis_name)
    return state.apply_gradients(grads=grads), common.f32_metrics(metrics)
