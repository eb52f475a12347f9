"""CMMA: the conditional multimodal autoencoder of Pandey & Dukkipati (2016), section 2 and 4.1.

The generative model is y -> z -> x: the attributes y set the prior over the latent z,

    p(z | y) = N(f_μ(y), exp(f_σ(y)))          (f: the attribute MLP, `nets.AttributeMLP`)
    p(x | z) = N(g_μ(z), exp(g_σ(z)))          (g: the image decoder, `nets.ImageDecoder`)
    q(z | x, y) = N(h_μ(x), exp(h_σ(x)))       (h: the image encoder, `nets.ImageEncoder`;
                                                y is fed to h only with the option
                                                `model.feed_attributes_to_encoder`, erratum 7)

and training maximises the conditional bound (eq. 6; `losses.cmma_elbo`)

    log p(x | y) >= E_q[log p(x | z)] - KL(q(z | x, y) ‖ p(z | y)),

with one sample of z per example (section 2.3). σ's are log-variances everywhere (erratum 2).

Public functions (the model contract of docs/design.md; `config` is the full ConfigDict, bound
with `functools.partial` before `jax.jit`). `get_model` is defined here; the others are what the
CMMA shares with the CVAE, written once by `cmma_jax.models.gaussian.entry_points` (signatures
there) and bound here as this module's own functions:

  get_model(config, num_attributes) -> CMMA
  init_state, train_step: initial state; one Adam step on -bound (averaged over the batch)
  bound: eq. 6 per example (`losses.cmma_elbo`), `losses.ElboTerms` of `[B]`; iwae: `[B]` nats
  sample: g_μ(f_μ(y) + temperature · exp(f_σ(y) / 2) ⊙ ε), `[B, 64, 64, 3]`
  encode: q(z | x, y) as (h_μ, h_σ); reconstruct: g_μ(h_μ)
  edit: g_μ(h_μ(x) + f_μ(y_to) - f_μ(y_from))
  capabilities(config): sample, encode, reconstruct, edit, bound, iwae

`params` is `state.params` (the inner parameter dict, without the "params" collection key).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from cmma_jax import losses, nets
from cmma_jax.models import common, gaussian

Array = jax.Array

PROGRESS_METRICS = gaussian.PROGRESS_METRICS


class CMMA(gaussian.GaussianLatentModel, kw_only=True):
    """The CMMA networks f, h, g (section 4.1), with one method per entry point.

    Attributes (beyond those of `gaussian.GaussianLatentModel`: features, latent_dim (500 in the
    paper), feed_attributes (erratum 7; off in the paper), decoder_log_var_range,
    latent_log_var_range (of h_σ and f_σ), conv_impl, dtype):
      attribute_hidden: hidden units of f (800 in the paper).
      prior_log_var_range: optional soft-clip range of f_σ alone (an ablation: a floor under the
        prior's variance); None: `latent_log_var_range`, as h_σ.
    """

    LEARNED_PRIOR = True

    attribute_hidden: int
    prior_log_var_range: Optional[tuple[float, float]] = None

    def setup(self):
        super().setup()  # h and g
        self.attribute_net = nets.AttributeMLP(  # f
            self.attribute_hidden, self.latent_dim,
            self.prior_log_var_range or self.latent_log_var_range, self.dtype)

    def prior(self, y: Array) -> tuple[Array, Array]:
        """p(z | y): (f_μ(y), f_σ(y)), each `[B, J]` float32."""
        return self.attribute_net(y)

    def decode(self, z: Array, y: Optional[Array] = None) -> tuple[Array, Array]:
        """p(x | z): (g_μ(z), g_σ(z)), each `[B, 64, 64, 3]` float32. The CMMA decoder ignores y."""
        del y
        return self.decoder(z)

    def generate(self, y: Array, temperature: float | Array = 1.0) -> Array:
        """Faces from attributes: g_μ(z), z = f_μ(y) + temperature · exp(f_σ(y) / 2) ⊙ ε.

        Temperature 0 is the paper's "variance set to 0" (erratum 8): z = f_μ(y). Draws ε from
        the "sample" rng stream.
        """
        mean, log_var = self.prior(y)
        eps = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
        z = mean + temperature * jnp.exp(0.5 * log_var) * eps
        return self.decode(z)[0]

    def edit(self, x: Array, y_from: Array, y_to: Array) -> Array:
        """Changing a face's attributes (section 4.5.2, erratum 8), with means throughout:

            z = h_μ(x) + f_μ(y_to) - f_μ(y_from),   image = g_μ(z)
        """
        z = self.encode(x, y_from)[0] + self.prior(y_to)[0] - self.prior(y_from)[0]
        return self.decode(z)[0]


def get_model(config, num_attributes: Optional[int] = None) -> CMMA:
    """The CMMA module of a config (`config.model`: preset, sizes, dtype, options).

    `num_attributes` is accepted for the common interface; the networks infer the input size.
    """
    del num_attributes
    sizes = nets.resolve_sizes(config.model)
    return CMMA(attribute_hidden=sizes["attribute_hidden"],
                prior_log_var_range=common.optional_range(
                    config.model.get("prior_log_var_range", None)),
                **gaussian.model_fields(config, sizes, feed_attributes=False))


# The rest of the model contract (module docstring), written once for the CMMA and the CVAE.
(init_state, bound, iwae, train_step, sample, encode, reconstruct, edit,
 capabilities) = gaussian.entry_points(CMMA, get_model, losses.cmma_elbo)
