"""CMMA: faces from attributes (Pandey & Dukkipati 2016, section 4.1).

Run (the trainer's door; the preset after the colon, or --preset; "auto" when omitted):

    python launch/train.py --config=cmma_jax/configs/cmma.py:small --workdir=/tmp/cmma_small
    python launch/train.py --config=cmma_jax/configs/cmma.py --workdir=/tmp/cmma_paper \\
        --config.data.name=lfw --config.data.data_dir=/path/to/lfwcrop

What it should give:
  "paper": the architecture of section 4.1 exactly (f: 800 softplus units, two 500-unit heads;
    h: 192-96-48 filters; g: its mirror, see `nets.ImageDecoder`), trained with Adam at batch 64
    for ~78,000 steps (the paper's 500 epochs of 10,000 faces). On LFW the paper reports a test
    bound of 17,973 nats (Table 2); bounds here are in nats with the log 2π constant.
  "small": 16-32-32 filters, 64 latent units, batch 16; on a 2-core CPU 0.2-0.3 s per step, and
    recognisable faces (reconstructions, and face-like samples that follow the attributes) after
    a few thousand steps (~10 minutes).
  "tiny": tests only.

Model fields beyond the base config:
  attribute_hidden: hidden units of f (None = the preset's: 800 / 256 / 16).
  feed_attributes_to_encoder: feed y to h (erratum 7; False as in the paper).
  prior_log_var_range: soft-clip range of f_σ alone (None: as h_σ, `latent_log_var_range`).
Optimizer fields beyond the base config:
  prior_lr_scale: f's learning rate as a multiple of the others' (None: the same).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from cmma_jax.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The CMMA config; `arg` is a preset name (None: "auto", see `base`)."""
    config = base.get_base_config()
    config.model.name = "cmma"
    config.model.attribute_hidden = config_dict.placeholder(int)
    config.model.feed_attributes_to_encoder = False
    # Ablations of the learnt prior's run-to-run spread (None: the paper's CMMA): a soft-clip
    # range of f_σ alone (a floor under the prior's variance, e.g. (-4.0, 4.0)), and f's learning
    # rate as a multiple of the others'.
    config.model.prior_log_var_range = config_dict.placeholder(tuple)
    config.optimizer.prior_lr_scale = config_dict.placeholder(float)
    return base.apply_preset(config, arg)
