"""Shared defaults of every model config; `apply_preset` sets a preset of `cmma_jax.presets`.

Each model config (`cmma.py`, `cvae.py`, `cgan.py`, `vlae.py`) starts from `get_base_config()` and
overrides a few fields. Every `get_config(arg)` takes an optional preset name, so that on the
command line

    python launch/train.py --config=cmma_jax/configs/cmma.py:small --workdir=/tmp/cmma_small

picks the "small" preset (`apply_preset` below). No argument means "auto": "paper" on an
accelerator, "small" on a CPU, resolved by `cmma_jax.presets.resolve_config` (the trainer calls
it), which also fills the training fields left as None from the preset (`cmma_jax.presets.PRESETS`);
fields set on the command line win. Tests use `get_config("tiny")` (or `apply_preset(config,
"tiny")`).

Sections:
  model: name, preset ("paper", "small" or "tiny": the sizes of `cmma_jax.presets.PRESETS`), dtype
    ("float32"; "bfloat16" on accelerators: parameters, optimizer state and the loss stay float32),
    conv_impl, and size overrides (None = from the preset): encoder_features, latent_dim, ...;
    model-specific options are added by each model config.
  data: name ("synthetic_faces", rendered offline; "celeba"; "lfw"), data_dir (the raw folder),
    prepared_dir (the prepared cache), worker_count, device_resident (None/"auto", "true",
    "false": the training split on the devices, `cmma_jax.data.resident`),
    attribute_encoding ("binary" {0, 1}, "signed" {-1, +1}, or "raw" scores), num_attributes
    (None = from the data).
  training: batch_size, num_steps, seed, log_every, sample_every, checkpoint_every,
    keep_checkpoints, eval_every and num_eval (the validation bound in metrics.jsonl),
    stop_patience, stop_min_delta and stop_metric (the convergence rule, `cmma_jax.convergence`),
    parallelism ("mesh" or "pmap").
  optimizer: adam's learning_rate, b1, b2, eps, grad_clip_norm (None = no clipping), warmup_steps.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from cmma_jax import presets


def data_config() -> ml_collections.ConfigDict:
    """The `data` section every config shares (the models' and the attribute classifier's).

    Every builder option of every dataset is a field (None = the builder's default), so that
    `--config.data.options.<option>=...` reaches the builder; an option that is set but that
    the chosen dataset does not take is refused by `cmma_jax.data.builder_options`.
    """
    data = ml_collections.ConfigDict()
    data.name = "synthetic_faces"
    # The raw dataset folder (celeba, lfw), and where prepared datasets are cached (None:
    # cmma_jax.data.pipeline.default_prepared_dir()).
    data.data_dir = config_dict.placeholder(str)
    data.prepared_dir = config_dict.placeholder(str)
    data.attribute_encoding = "binary"
    data.num_attributes = config_dict.placeholder(int)
    # Dataset builder options (None = the builder's default), e.g. a small synthetic_faces for a
    # quick run: --config.data.options.num_train=2000. Which dataset takes which: docs/data.md.
    data.options = ml_collections.ConfigDict({
        "num_train": config_dict.placeholder(int),
        "num_validation": config_dict.placeholder(int),
        "num_test": config_dict.placeholder(int),
        "seed": config_dict.placeholder(int),
        "jitter": config_dict.placeholder(float),
        "max_bad_images": config_dict.placeholder(int),
        "num_workers": config_dict.placeholder(int),
        "layout": config_dict.placeholder(str),
        "attribute_file": config_dict.placeholder(str),
        "crop_box": config_dict.placeholder(tuple),
        "max_rows": config_dict.placeholder(int),
    })
    # grain worker processes for reading and decoding (0: in the training process).
    data.worker_count = 0
    # The training split on the devices, batches gathered there by index (cmma_jax.data.resident):
    # "auto" (None, the default) when its uint8 images and attributes fit in a quarter of the
    # device's memory (never on CPU), "true", or "false" (the grain path). None rather than "auto"
    # so that workdirs written before this field resume unchanged.
    data.device_resident = config_dict.placeholder(str)
    return data


def set_folders(data: ml_collections.ConfigDict, *, data_dir: str | None = None,
                prepared_dir: str | None = None) -> ml_collections.ConfigDict:
    """Says where a data section's folders are now: the raw dataset folder (`data_dir`) and the
    prepared datasets (`prepared_dir`); None keeps the section's own. Changes `data` in place and
    returns it. The one place every door and library function moves them (training, evaluation,
    figures, reproduction)."""
    if data_dir is not None:
        data.data_dir = data_dir
    if prepared_dir is not None:
        data.prepared_dir = prepared_dir
    return data


def set_data(data: ml_collections.ConfigDict, *, name: str | None = None,
             data_dir: str | None = None, prepared_dir: str | None = None
             ) -> ml_collections.ConfigDict:
    """Which dataset a data section reads (`name`; None keeps the section's own) and where its
    folders are now (`set_folders`). Changes `data` in place and returns it; the training doors
    pass their flags (`cmma_jax.flag_types.data_flags`)."""
    if name is not None:
        data.name = name
    return set_folders(data, data_dir=data_dir, prepared_dir=prepared_dir)


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
    # Size overrides; None = the preset's value (cmma_jax.presets.resolve_sizes).
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
    # What the decoder's pixel variance depends on (cmma_jax.nets.DECODER_VARIANCES): "pixel",
    # the paper's per-pixel log-variance head; "channel", one learnt log-variance per colour
    # channel; "shared", one for the whole image; "fixed", every pixel's standard deviation is
    # decoder_sigma (in units of pixel values in [0, 1]). All are Gaussian densities, so bounds
    # in nats stay comparable. None = the preset's (cmma_jax.presets.resolve_likelihood): "pixel"
    # for "paper", "fixed" at σ = 0.05 for "small". (The CGAN's generator has no variance.)
    config.model.decoder_variance = config_dict.placeholder(str)
    config.model.decoder_sigma = config_dict.placeholder(float)

    config.data = data_config()

    config.training = ml_collections.ConfigDict()
    # None = from the preset (cmma_jax.presets.PRESETS), filled in by presets.resolve_config.
    config.training.batch_size = config_dict.placeholder(int)
    config.training.num_steps = config_dict.placeholder(int)
    config.training.seed = 0
    config.training.log_every = config_dict.placeholder(int)
    config.training.sample_every = config_dict.placeholder(int)
    config.training.checkpoint_every = config_dict.placeholder(int)
    config.training.keep_checkpoints = 3
    # The validation bound (metrics.jsonl's val_elbo, val_kl, val_log_likelihood) of models with
    # a bound: on the first num_eval validation faces (0: never), every eval_every steps
    # (None: every sample_every steps).
    config.training.eval_every = config_dict.placeholder(int)
    config.training.num_eval = 1000
    # The convergence rule (cmma_jax.convergence): stop once stop_metric (the validation bound,
    # higher is better) has not improved by more than stop_min_delta nats in stop_patience
    # evaluations in a row, and keep the best checkpoint in <workdir>/best (what evaluation and
    # figures load). None = off: train num_steps, as the paper does. num_steps stays the budget.
    config.training.stop_patience = config_dict.placeholder(int)
    config.training.stop_min_delta = 0.0
    config.training.stop_metric = "val_elbo"
    # The KL term's weight rises linearly from 0 to 1 over this many steps (an ablation of the
    # CMMA and the CVAE; 0 = the paper's bound from the first step).
    config.training.kl_warmup_steps = 0
    config.training.parallelism = "mesh"
    # Training steps per compiled call (cmma_jax.steps): the same steps, fewer starts of the
    # program; a call runs one step where logging, sampling or saving needs the state inside it.
    # None = the preset's (2 for "small", 1 otherwise).
    config.training.steps_per_call = config_dict.placeholder(int)

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
    if preset not in presets.PRESET_NAMES:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {presets.PRESET_NAMES}.")
    config.model.preset = preset
    for name, value in presets.training_defaults(preset).items():
        config.training[name] = value
    for name in presets.LIKELIHOOD_FIELDS:
        if name in config.model:
            config.model[name] = presets.PRESETS[preset][name]
    return config


def tiny_overrides(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The "tiny" preset for tests: tiny networks, batch 8, 20 steps (in place; returns config)."""
    return apply_preset(config, "tiny")
