"""Shared defaults of every model config, and the architecture presets' training settings.

Each model config (`cmma.py`, `cvae.py`, `cgan.py`, `vlae.py`) starts from `get_base_config()` and
overrides a few fields. Every `get_config(arg)` takes an optional preset name, so that on the
command line

    python launch/train.py --config=cmma_jax/configs/cmma.py:small --workdir=/tmp/cmma_small

picks the "small" preset (`apply_preset` below). No argument means "auto": "paper" on an
accelerator, "small" on a CPU, resolved by the trainer (`cmma_jax.train.resolve_config`), which
also fills the training fields left as None from the preset (`PRESET_TRAINING`); fields set on
the command line win. Tests use `get_config("tiny")` (or `apply_preset(config, "tiny")`).

Sections:
  model: name, preset ("paper", "small" or "tiny": the sizes of `cmma_jax.nets.PRESETS`), dtype
    ("float32"; "bfloat16" on accelerators: parameters, optimizer state and the loss stay float32),
    conv_impl, and size overrides (None = from the preset): encoder_features, latent_dim, ...;
    model-specific options are added by each model config.
  data: name ("synthetic_faces", rendered offline; "celeba"; "lfw"), data_dir, source_dir,
    attribute_encoding ("binary" {0, 1}, "signed" {-1, +1}, or "raw" scores), num_attributes
    (None = from the data).
  training: batch_size, num_steps, seed, log_every, sample_every, checkpoint_every,
    keep_checkpoints, parallelism ("mesh" or "pmap").
  optimizer: adam's learning_rate, b1, b2, eps, grad_clip_norm (None = no clipping), warmup_steps.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

PRESET_NAMES = ("paper", "small", "tiny")

# Training settings that go with each architecture preset (batch size, length, intervals).
# "paper": the paper trains for 500 epochs of the 10,000 LFW training faces (section 4.3); at
# batch 64 that is ~78,000 steps. "small": a 2-core CPU run of about ten minutes; batch 16
# because XLA's CPU convolutions process about twice as many images per second at batch 16 as
# at batch 32 on that machine (measured: CMMA "small", 0.2-0.3 s per step at 16, 1.1-1.3 s at
# 32). "tiny": tests.
PRESET_TRAINING = {
    "paper": dict(batch_size=64, num_steps=78_000, log_every=100, sample_every=2_000,
                  checkpoint_every=2_000),
    "small": dict(batch_size=16, num_steps=3_000, log_every=50, sample_every=500,
                  checkpoint_every=500),
    "tiny": dict(batch_size=8, num_steps=20, log_every=5, sample_every=10, checkpoint_every=10),
}


def get_base_config() -> ml_collections.ConfigDict:
    """The fields every model config shares, with the "auto" preset."""
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = ""
    config.model.preset = "auto"
    config.model.dtype = "float32"
    # "auto": the fast CPU convolutions (cmma_jax.fast_conv) on the CPU backend, XLA's own
    # elsewhere; "xla" or "fast_cpu" to force one. The same parameters and function either way.
    config.model.conv_impl = "auto"
    # Size overrides; None = the preset's value (cmma_jax.nets.resolve_sizes).
    config.model.encoder_features = config_dict.placeholder(tuple)
    config.model.latent_dim = config_dict.placeholder(int)
    # Soft-clip range of the decoder's per-pixel log-variance (nets.soft_clip), or None for a
    # linear head. The likelihood stays a true Gaussian; the bound only limits how small a pixel
    # variance can get (exp(-10): σ ≈ 0.0067, i.e. 1.7/255), so that flat, exactly reproducible
    # regions (rendered backgrounds) cannot drive the bound to infinity. Upper end: variance e^4,
    # far beyond anything useful for pixels in [0, 1]; the map is ≈ the identity in between.
    config.model.decoder_log_var_range = (-10.0, 4.0)
    # The same for the latent log-variances (h_σ, f_σ); None = linear heads, as in the paper.
    config.model.latent_log_var_range = config_dict.placeholder(tuple)

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic_faces"
    config.data.data_dir = config_dict.placeholder(str)
    config.data.source_dir = config_dict.placeholder(str)
    config.data.attribute_encoding = "binary"
    config.data.num_attributes = config_dict.placeholder(int)
    # Dataset builder options (None = the builder's default), e.g. a small synthetic_faces for a
    # quick run: --config.data.options.num_train=2000.
    config.data.options = ml_collections.ConfigDict({
        "num_train": config_dict.placeholder(int),
        "num_validation": config_dict.placeholder(int),
        "num_test": config_dict.placeholder(int),
    })
    # grain worker processes for reading and decoding (0: in the training process).
    config.data.worker_count = 0

    config.training = ml_collections.ConfigDict()
    # None = from the preset (PRESET_TRAINING), filled in by the trainer.
    config.training.batch_size = config_dict.placeholder(int)
    config.training.num_steps = config_dict.placeholder(int)
    config.training.seed = 0
    config.training.log_every = config_dict.placeholder(int)
    config.training.sample_every = config_dict.placeholder(int)
    config.training.checkpoint_every = config_dict.placeholder(int)
    config.training.keep_checkpoints = 3
    config.training.parallelism = "mesh"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-4
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.grad_clip_norm = config_dict.placeholder(float)
    config.optimizer.warmup_steps = 0
    return config


def apply_preset(config: ml_collections.ConfigDict,
                 preset: str | None) -> ml_collections.ConfigDict:
    """Sets `config.model.preset` and the training settings that go with it (in place).

    Args:
      config: a model config.
      preset: "paper", "small", "tiny", or None/"" (leave the config as it is: "auto").

    Returns:
      The same config, for chaining.
    """
    if not preset:
        return config
    if preset not in PRESET_NAMES:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {PRESET_NAMES}.")
    config.model.preset = preset
    for name, value in PRESET_TRAINING[preset].items():
        config.training[name] = value
    return config


def tiny_overrides(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The "tiny" preset for tests: tiny networks, batch 8, 20 steps (in place; returns config)."""
    return apply_preset(config, "tiny")
