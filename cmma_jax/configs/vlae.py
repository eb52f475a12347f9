"""MMD-VLAE: a variational ladder autoencoder with one MMD penalty per latent layer (Xu 2018).

Run:

    python launch/train.py --config=cmma_jax/configs/vlae.py:small --workdir=/tmp/vlae_small

What it should give: four latent layers, shallow ones for low-level features (lighting, colour)
and deep ones for high-level ones (identity, pose), visible in per-layer traversals
(`models.vlae.traverse`), and face arithmetic A - B + C (`models.vlae.face_arithmetic`). The
paper gives no sizes; the "paper" preset reuses the CMMA's widths with 32 units per layer.

Model fields beyond the base config (see `cmma_jax/models/vlae.py` for the equations):
  conditional: True: the decoder also sees the attributes (with the top latent), so the model
    generates faces from attributes like the others; False: the paper's unconditional model.
  ladder_latent_dims, ladder_hidden, ladder_head_features, ladder_inject_features: sizes (None =
    from the preset).
  mmd_kernel: "gaussian" (the paper's; k = Σ_s exp(-‖a - b‖² / (s · d)) for a layer of size d) or
    "imq" (k = Σ_s C_s / (C_s + ‖a - b‖²), C_s = 2 s d).
  mmd_scales: the s above (several are summed).
  mmd_weight: λ, the weight of every layer's MMD² against the per-example log-likelihood (a sum
    over 12,288 pixels, so λ is large); mmd_layer_weights: one λ per layer instead (None = all λ).
  mmd_unbiased: the U-statistic instead of the V-statistic.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from cmma_jax.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The MMD-VLAE config; `arg` is a preset name (None: "auto", see `base`)."""
    config = base.get_base_config()
    config.model.name = "vlae"
    config.model.conditional = True
    config.model.ladder_latent_dims = config_dict.placeholder(tuple)
    config.model.ladder_hidden = config_dict.placeholder(int)
    config.model.ladder_head_features = config_dict.placeholder(int)
    config.model.ladder_inject_features = config_dict.placeholder(int)
    config.model.mmd_kernel = "gaussian"
    config.model.mmd_scales = (1.0,)
    config.model.mmd_weight = 1000.0
    config.model.mmd_layer_weights = config_dict.placeholder(tuple)
    config.model.mmd_unbiased = False
    return base.apply_preset(config, arg)
