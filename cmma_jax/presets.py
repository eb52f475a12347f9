"""The architecture presets: ONE table of network sizes, decoder likelihood and training defaults
per preset name.

A preset names a scale of the whole experiment: the widths of the networks (`SIZE_FIELDS`, read by
`cmma_jax.nets` through `resolve_sizes`), the decoder's likelihood (`LIKELIHOOD_FIELDS`, through
`resolve_likelihood`) and the training settings that go with them
(`TRAINING_FIELDS`, filled into a config's `training` section by `resolve_config` and by
`cmma_jax.configs.base.apply_preset`). "auto" stands for "small" on the CPU backend and "paper"
elsewhere; `resolve_preset_name` is the one place that decides it.

A bottom layer: it imports jax and ml_collections only, no `cmma_jax` module.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections

AUTO = "auto"

# The decoder's standard deviation with a "fixed" variance (pixels in [0, 1]); see "small" below.
DEFAULT_DECODER_SIGMA = 0.05

PRESETS: dict[str, dict[str, Any]] = {
    # Networks: section 4.1 of the CMMA paper. The VLAE and discriminator sizes are not in any
    # paper; they reuse the CMMA widths (the CGAN "closely mimics" h and g, section 4.2).
    # Training: the paper trains for 500 epochs of the 10,000 LFW training faces (section 4.3);
    # at batch 64 that is ~78,000 steps.
    "paper": dict(
        encoder_features=(192, 96, 48),
        latent_dim=500,
        attribute_hidden=800,
        discriminator_hidden=500,
        ladder_latent_dims=(32, 32, 32, 32),
        ladder_hidden=500,
        ladder_head_features=8,
        ladder_inject_features=8,
        # The paper's likelihood: a learnt log-variance for every pixel of every face.
        decoder_variance="pixel",
        decoder_sigma=DEFAULT_DECODER_SIGMA,
        batch_size=64,
        num_steps=78_000,
        log_every=100,
        sample_every=2_000,
        checkpoint_every=2_000,
        # One step a call: at 1.8 s a step on a CPU the start of a call does not count, and
        # nobody has measured an accelerator (cmma_jax.steps).
        steps_per_call=1,
    ),
    # Trains to recognisable faces on a 2-core CPU in minutes: 0.2-0.3 s per CMMA step at batch 16
    # there (the decoder's output convolutions, at 64x64, dominate; their cost grows with the
    # first width, hence 16). A run of about ten minutes; batch 16 because XLA's CPU convolutions
    # process about twice as many images per second at batch 16 as at batch 32 on that machine
    # (measured: CMMA "small", 0.2-0.3 s per step at 16, 1.1-1.3 s at 32).
    "small": dict(
        encoder_features=(16, 32, 32),
        latent_dim=64,
        attribute_hidden=256,
        discriminator_hidden=128,
        ladder_latent_dims=(8, 8, 8, 8),
        ladder_hidden=128,
        ladder_head_features=4,
        ladder_inject_features=4,
        # Every pixel's standard deviation held at 0.05. With the paper's per-pixel variance the
        # small networks explain the features they do not draw as noise (eyes, mouths, glasses
        # stay a blur, at any training length); at σ = 0.05 the CMMA draws and edits every one
        # of the 20 synthetic attributes (RESULTS.md, "Ground truth on synthetic faces").
        decoder_variance="fixed",
        decoder_sigma=DEFAULT_DECODER_SIGMA,
        batch_size=16,
        num_steps=3_000,
        log_every=50,
        sample_every=500,
        checkpoint_every=500,
        # Two steps in each compiled call: the same steps, 1.07x the steps per second on a quiet
        # 2-core CPU (median of five comparisons, 0.99-1.13x; benchmarks/RESULTS.md).
        steps_per_call=2,
    ),
    # For tests only: one jitted step compiles in seconds.
    "tiny": dict(
        encoder_features=(4, 4, 4),
        latent_dim=8,
        attribute_hidden=16,
        discriminator_hidden=16,
        ladder_latent_dims=(2, 2, 2, 2),
        ladder_hidden=16,
        ladder_head_features=2,
        ladder_inject_features=2,
        decoder_variance="pixel",
        decoder_sigma=DEFAULT_DECODER_SIGMA,
        batch_size=8,
        num_steps=20,
        log_every=5,
        sample_every=10,
        checkpoint_every=10,
        steps_per_call=1,
    ),
}

PRESET_NAMES = tuple(PRESETS)  # ("paper", "small", "tiny")

# The network sizes of a preset (`model.<field>` in a config; None there = the preset's value).
SIZE_FIELDS = (
    "encoder_features", "latent_dim", "attribute_hidden", "discriminator_hidden",
    "ladder_latent_dims", "ladder_hidden", "ladder_head_features", "ladder_inject_features",
)
# The decoder's likelihood of a preset (`model.<field>`; None there = the preset's value): what
# the pixel variance depends on (`cmma_jax.nets.DECODER_VARIANCES`) and σ when it is "fixed".
LIKELIHOOD_FIELDS = ("decoder_variance", "decoder_sigma")
# The training settings of a preset (`training.<field>` in a config; None there = the preset's).
TRAINING_FIELDS = ("batch_size", "num_steps", "log_every", "sample_every", "checkpoint_every",
                   "steps_per_call")


def resolve_preset_name(name: str) -> str:
    """The preset `name` stands for: "auto" is "small" on the CPU backend and "paper" elsewhere.

    Raises:
      ValueError: on an unknown name.
    """
    if name == AUTO:
        return "small" if jax.default_backend() == "cpu" else "paper"
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {PRESET_NAMES} or 'auto'.")
    return name


def training_defaults(name: str) -> dict[str, Any]:
    """The training settings (`TRAINING_FIELDS`) of a preset ("auto" resolved)."""
    preset = PRESETS[resolve_preset_name(name)]
    return {field: preset[field] for field in TRAINING_FIELDS}


def resolve_sizes(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The network sizes of a model config: its preset, with any size field that is set overriding.

    Args:
      model_config: the `model` section of a config (a `ConfigDict` or a mapping) with a `preset`
        name ("auto": "small" on a CPU, "paper" on an accelerator) and, optionally, any of
        `SIZE_FIELDS` (a value of `None` means "from the preset").

    Returns:
      A dict with every key of `SIZE_FIELDS`; tuples for the sequences.

    Raises:
      ValueError: on an unknown preset.
    """
    preset = PRESETS[resolve_preset_name(model_config["preset"])]
    sizes = {field: preset[field] for field in SIZE_FIELDS}
    for name in SIZE_FIELDS:
        value = model_config.get(name, None)
        if value is not None:
            sizes[name] = tuple(value) if isinstance(value, (list, tuple)) else value
    if len(sizes["encoder_features"]) != 3:
        raise ValueError(f"encoder_features must have 3 widths, got {sizes['encoder_features']}.")
    return sizes


def resolve_likelihood(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The decoder likelihood of a model config (`LIKELIHOOD_FIELDS`): its preset's, with any
    field that is set (not None) overriding.

    Raises:
      ValueError: on an unknown preset.
    """
    preset = PRESETS[resolve_preset_name(model_config.get("preset", AUTO) or AUTO)]
    out = {}
    for name in LIKELIHOOD_FIELDS:
        value = model_config.get(name, None)
        out[name] = preset[name] if value is None else value
    out["decoder_sigma"] = float(out["decoder_sigma"])
    return out


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with its preset chosen and the preset's training defaults filled in.

    `model.preset = "auto"` means "paper" on an accelerator and "small" on a CPU. Training fields
    left as None (batch size, steps, intervals; the decoder's likelihood) take the preset's
    values; fields that are set win.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    preset = resolve_preset_name(config.model.get("preset", AUTO) or AUTO)
    config.model.preset = preset
    for name, value in resolve_likelihood(config.model).items():
        if name in config.model:
            config.model[name] = value
    for name, value in training_defaults(preset).items():
        if config.training.get(name) is None:
            config.training[name] = value
    return config


__all__ = [
    "AUTO", "DEFAULT_DECODER_SIGMA", "PRESETS", "PRESET_NAMES", "SIZE_FIELDS", "LIKELIHOOD_FIELDS",
    "TRAINING_FIELDS", "resolve_preset_name", "training_defaults", "resolve_sizes",
    "resolve_likelihood", "resolve_config",
]
