"""CVAE: the conditional VAE baseline of the CMMA paper (section 4.2, eq. 13).

Run:

    python launch/train.py --config=cmma_jax/configs/cvae.py:small --workdir=/tmp/cvae_small

What it should give: the encoder q(z | x, y) and decoder p(x | z, y) mirror the CMMA's h and g
(same presets), with the prior N(0, I). The paper reports a lower test bound than the CMMA's
(14,356 against 17,973 nats on LFW, Table 2). "small" trains in about the time of the CMMA's.

Model fields beyond the base config:
  feed_attributes_to_encoder: True: q(z | x, y) of eq. (13), y concatenated after the flatten.
  condition_decoder: True: p(x | z, y) of eq. (13). False (an ablation of the CMMA paper's
    comparison): the decoder ignores y, like the CMMA's g, e.g.
    `--config.model.condition_decoder=false`.
"""

from __future__ import annotations

import ml_collections

from cmma_jax.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The CVAE config; `arg` is a preset name (None: "auto", see `base`)."""
    config = base.get_base_config()
    config.model.name = "cvae"
    config.model.feed_attributes_to_encoder = True
    config.model.condition_decoder = True
    return base.apply_preset(config, arg)
