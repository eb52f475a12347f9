"""Tests for cmma_jax.presets: one table of sizes, likelihoods and training defaults, one "auto"
resolver."""

import jax
import pytest

from cmma_jax import nets, presets
from cmma_jax.configs import CONFIGS, base


def test_one_table_of_sizes_and_training_defaults():
    assert presets.PRESET_NAMES == ("paper", "small", "tiny")
    assert tuple(presets.PRESETS) == presets.PRESET_NAMES
    for name, preset in presets.PRESETS.items():
        assert set(preset) == (set(presets.SIZE_FIELDS) | set(presets.TRAINING_FIELDS)
                               | set(presets.LIKELIHOOD_FIELDS)), name
        assert preset["decoder_variance"] in nets.DECODER_VARIANCES, name
    assert not set(presets.SIZE_FIELDS) & set(presets.TRAINING_FIELDS)
    assert not set(presets.LIKELIHOOD_FIELDS) & (set(presets.SIZE_FIELDS)
                                                 | set(presets.TRAINING_FIELDS))
    # nets and the configs read the same table; neither keeps its own.
    assert nets.PRESETS is presets.PRESETS
    assert nets.resolve_sizes is presets.resolve_sizes
    assert not hasattr(base, "PRESET_TRAINING")
    for name in presets.PRESET_NAMES:
        config = CONFIGS["cmma"].get_config(name)
        for field in presets.TRAINING_FIELDS:
            assert config.training[field] == presets.PRESETS[name][field], (name, field)
        assert presets.training_defaults(name) == {
            f: presets.PRESETS[name][f] for f in presets.TRAINING_FIELDS}
        for field in presets.LIKELIHOOD_FIELDS:
            assert config.model[field] == presets.PRESETS[name][field], (name, field)
    # The paper's numbers (section 4.1, 500 epochs of 10,000 faces at batch 64).
    paper = presets.PRESETS["paper"]
    assert paper["encoder_features"] == (192, 96, 48)
    assert paper["latent_dim"] == 500 and paper["attribute_hidden"] == 800
    assert paper["batch_size"] == 64 and paper["num_steps"] == 78_000
    assert paper["decoder_variance"] == "pixel"  # the paper's per-pixel log-variance head
    # The CPU preset: every pixel's σ held at 0.05 (RESULTS.md, ground truth at convergence).
    small = presets.PRESETS["small"]
    assert small["decoder_variance"] == "fixed" and small["decoder_sigma"] == 0.05


def test_auto_resolves_to_small_on_cpu():
    expected = "small" if jax.default_backend() == "cpu" else "paper"
    assert presets.resolve_preset_name("auto") == expected
    for name in presets.PRESET_NAMES:
        assert presets.resolve_preset_name(name) == name
    with pytest.raises(ValueError, match="preset"):
        presets.resolve_preset_name("huge")
    sizes = presets.resolve_sizes({"preset": "auto"})
    assert sizes == {f: presets.PRESETS[expected][f] for f in presets.SIZE_FIELDS}
    assert presets.training_defaults("auto") == presets.training_defaults(expected)


def test_resolve_sizes_overrides():
    sizes = presets.resolve_sizes({"preset": "tiny", "latent_dim": 7, "ladder_latent_dims": [3] * 4,
                                   "encoder_features": None})
    assert sizes["latent_dim"] == 7
    assert sizes["ladder_latent_dims"] == (3, 3, 3, 3)
    assert sizes["encoder_features"] == presets.PRESETS["tiny"]["encoder_features"]
    assert set(sizes) == set(presets.SIZE_FIELDS)
    with pytest.raises(ValueError, match="3 widths"):
        presets.resolve_sizes({"preset": "tiny", "encoder_features": (4, 4)})


def test_resolve_config_fills_only_unset_fields():
    config = CONFIGS["vlae"].get_config()  # "auto", every training field None
    config.training.num_steps = 123
    config.training.log_every = 7
    resolved = presets.resolve_config(config)
    expected = "small" if jax.default_backend() == "cpu" else "paper"
    assert resolved.model.preset == expected
    assert resolved.training.num_steps == 123 and resolved.training.log_every == 7  # set: kept
    for field in ("batch_size", "sample_every", "checkpoint_every"):  # unset: from the preset
        assert resolved.training[field] == presets.PRESETS[expected][field], field
    # Everything else is untouched, and the input config is not modified (a copy).
    assert resolved.training.seed == config.training.seed
    assert resolved.model.mmd_weight == config.model.mmd_weight
    assert config.model.preset == "auto" and config.training.batch_size is None
    # An explicit preset stays; an empty one means "auto"; an unknown one is an error.
    tiny = presets.resolve_config(CONFIGS["cmma"].get_config("tiny"))
    assert tiny.model.preset == "tiny" and tiny.training.batch_size == 8
    config = CONFIGS["cmma"].get_config()
    config.model.preset = ""
    assert presets.resolve_config(config).model.preset == expected
    config.model.preset = "huge"
    with pytest.raises(ValueError, match="preset"):
        presets.resolve_config(config)


def test_resolve_likelihood_takes_the_preset_unless_set():
    assert presets.resolve_likelihood({"preset": "paper"}) == {
        "decoder_variance": "pixel", "decoder_sigma": presets.DEFAULT_DECODER_SIGMA}
    assert presets.resolve_likelihood({"preset": "small", "decoder_variance": None}) == {
        "decoder_variance": "fixed", "decoder_sigma": 0.05}
    assert presets.resolve_likelihood({"preset": "small", "decoder_variance": "pixel",
                                       "decoder_sigma": 0.1}) == {
        "decoder_variance": "pixel", "decoder_sigma": 0.1}
    expected = "small" if jax.default_backend() == "cpu" else "paper"
    assert presets.resolve_likelihood({"preset": "auto"})["decoder_variance"] == \
        presets.PRESETS[expected]["decoder_variance"]
    # resolve_config fills an unset likelihood from the preset and keeps a set one.
    config = CONFIGS["cmma"].get_config()
    assert config.model.decoder_variance is None
    resolved = presets.resolve_config(config)
    assert resolved.model.decoder_variance == presets.PRESETS[expected]["decoder_variance"]
    config.model.decoder_variance = "channel"
    assert presets.resolve_config(config).model.decoder_variance == "channel"
    # An explicit preset's config carries its likelihood; a flag set after it wins.
    small = CONFIGS["cvae"].get_config("small")
    assert (small.model.decoder_variance, small.model.decoder_sigma) == ("fixed", 0.05)
