"""CVAE: the conditional variational autoencoder baseline of the CMMA paper (section 4.2, eq. 13).

The latent z is independent of the attributes y a priori; the decoder sees both (erratum 4):

    p(z) = N(0, I)
    p(x | z, y) = N(g_μ([z; y]), exp(g_σ([z; y])))     (g: `nets.ImageDecoder`, y concatenated to z)
    q(z | x, y) = N(h_μ(x, y), exp(h_σ(x, y)))         (h: `nets.ImageEncoder`, y concatenated to
                                                        the flattened features; on by default,
                                                        `config.model.feed_attributes_to_encoder`)

The networks mirror the CMMA's h and g exactly (section 4.2: "the encoder and decoder of CVAE
closely mimic the MLPs g and h of CMMA"); only the attribute inputs differ. Training maximises

    log p(x | y) >= E_q[log p(x | y, z)] - KL(q(z | x, y) ‖ N(0, I))     (eq. 13, losses.cvae_elbo)

with one sample of z per example.

Public functions (the model contract of docs/design.md; `params` is `state.params`).
`get_model` is defined here; the others are what the CVAE shares with the CMMA, written once by
`cmma_jax.models.gaussian.entry_points` (signatures there) and bound here as this module's own:

  get_model(config, num_attributes) -> CVAE
  init_state, train_step: initial state; one Adam step on -bound (averaged over the batch)
  bound: eq. 13 per example (`losses.cvae_elbo`), `losses.ElboTerms` of `[B]`; iwae: `[B]` nats,
    with the prior N(0, I)
  sample: g_μ([temperature · ε; y]) (temperature 0: z = 0), `[B, 64, 64, 3]`
  encode: (h_μ(x, y), h_σ(x, y)); reconstruct: g_μ([h_μ(x, y); y])
  edit: g_μ([h_μ(x, y_from); y_to])
  capabilities(config): sample, encode, reconstruct, edit, bound, iwae
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from cmma_jax import losses, nets
from cmma_jax.models import gaussian

Array = jax.Array

PROGRESS_METRICS = gaussian.PROGRESS_METRICS


class CVAE(gaussian.GaussianLatentModel):
    """The CVAE networks: encoder q(z | x, y) and decoder p(x | z, y).

    Attributes: those of `gaussian.GaussianLatentModel` (features, latent_dim, feed_attributes,
    decoder_log_var_range, latent_log_var_range, conv_impl, dtype), with feed_attributes True by
    default (q(z | x, y) of eq. 13), and
      condition_decoder: concatenate y to z in the decoder (True, eq. 13). False is an ablation:
        p(x | z) with the prior N(0, I), so that nothing but the encoder sees y; with it, the
        CVAE's decoder is the CMMA's and the two differ only in the prior and the encoder.
    """

    LEARNED_PRIOR = False

    feed_attributes: bool = True
    condition_decoder: bool = True

    def decode(self, z: Array, y: Array) -> tuple[Array, Array]:
        """p(x | z, y): (mean, log_var), each `[B, 64, 64, 3]` float32; y is concatenated to z
        (not with `condition_decoder=False`)."""
        return self.decoder(z, y if self.condition_decoder else None)

    def prior(self, y: Array) -> tuple[Array, Array]:
        """p(z) = N(0, I) (independent of y), as (mean, log_var) `[B, J]`."""
        zeros = jnp.zeros((y.shape[0], self.latent_dim), jnp.float32)
        return zeros, zeros

    def generate(self, y: Array, temperature: float | Array = 1.0) -> Array:
        """Faces from attributes: g_μ([temperature · ε; y]), ε ~ N(0, I) from the "sample" stream.
        Temperature 0 decodes z = 0, the prior mean."""
        eps = jax.random.normal(self.make_rng("sample"), (y.shape[0], self.latent_dim),
                                jnp.float32)
        return self.decode(temperature * eps, y)[0]

    def edit(self, x: Array, y_from: Array, y_to: Array) -> Array:
        """Changing attributes: encode with the old attributes (mean), decode with the new:
        g_μ([h_μ(x, y_from); y_to])."""
        return self.decode(self.encode(x, y_from)[0], y_to)[0]


def get_model(config, num_attributes: Optional[int] = None) -> CVAE:
    """The CVAE module of a config (`num_attributes` is accepted for the common interface)."""
    del num_attributes
    sizes = nets.resolve_sizes(config.model)
    return CVAE(**gaussian.model_fields(config, sizes, feed_attributes=True),
                condition_decoder=bool(config.model.get("condition_decoder", True)))


# The rest of the model contract (module docstring), written once for the CMMA and the CVAE.
(init_state, bound, iwae, train_step, sample, encode, reconstruct, edit,
 capabilities) = gaussian.entry_points(CVAE, get_model, losses.cvae_elbo)
