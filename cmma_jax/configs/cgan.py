"""CGAN: the conditional GAN baseline of the CMMA paper (section 4.2).

Run:

    python launch/train.py --config=cmma_jax/configs/cgan.py:small --workdir=/tmp/cgan_small

What it should give: a generator G(z, y) that mirrors the CMMA's decoder g (mean head only) and a
discriminator D(x, y) that mirrors its encoder h, trained with the non-saturating GAN loss and
alternating updates (one D step, one G step). The paper found the CGAN sensitive to its learning
rates (section 4.3); these defaults are the DCGAN ones (Adam 2e-4, b1 = 0.5). There is no bound;
its conditional log-likelihood is estimated with Parzen windows.

Model fields beyond the base config:
  gan_loss: "non_saturating" (default), "minimax", "hinge" or "least_squares" (`cmma_jax.losses`).
  discriminator_hidden: D's hidden units (None = the preset's: 500 / 128 / 16).
Optimizer fields: generator_lr, discriminator_lr (learning_rate is unused by the CGAN).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from cmma_jax.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The CGAN config; `arg` is a preset name (None: "auto", see `base`)."""
    config = base.get_base_config()
    config.model.name = "cgan"
    config.model.gan_loss = "non_saturating"
    config.model.discriminator_hidden = config_dict.placeholder(int)
    # The generator has no log-variance head.
    config.model.decoder_log_var_range = None
    config.optimizer.learning_rate = 2e-4
    config.optimizer.generator_lr = 2e-4
    config.optimizer.discriminator_lr = 2e-4
    config.optimizer.b1 = 0.5
    return base.apply_preset(config, arg)
