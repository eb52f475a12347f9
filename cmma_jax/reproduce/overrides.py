"""The configs of the protocol's trainings: each model's for a seed (`model_config`) and the
attribute classifier's (`classifier_config`), with the settings' data fields, overrides and
budget applied (`apply_overrides`)."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import ml_collections

from cmma_jax import classifier, configs, data, presets
from cmma_jax.models import MODELS
from cmma_jax.reproduce.settings import ReproduceSettings


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], *,
                    skip_missing: bool = False) -> list[str]:
    """Sets `config.<dotted field> = value` for each override (in place).

    Lists become tuples (JSON gives lists back). Returns the fields set.

    Raises:
      KeyError: for a field the config does not have (unless `skip_missing`).
    """
    applied = []
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            if skip_missing:
                continue
            raise KeyError(f"The config has no field {dotted!r}.")
        node[leaf] = tuple(value) if isinstance(value, list) else value
        applied.append(dotted)
    return applied


def _data_fields(config, settings: ReproduceSettings) -> None:
    config.data.name = settings.dataset
    configs.base.set_folders(config.data, data_dir=settings.data_dir,
                             prepared_dir=settings.prepared_dir)
    for key, value in settings.data_options.items():
        config.data.options[key] = tuple(value) if isinstance(value, list) else value


def model_config(settings: ReproduceSettings, model: str, seed: int) -> ml_collections.ConfigDict:
    """The config of `model` for `seed`: `CONFIGS[model].get_config(preset)`, the data fields and
    options, `training.seed = seed`, the overrides that apply to it; the preset resolved."""
    config = configs.CONFIGS[model].get_config(settings.preset)
    _data_fields(config, settings)
    config.training.seed = int(seed)
    apply_overrides(config, settings.overrides, skip_missing=True)
    if config.training.get("stop_patience") and "bound" not in MODELS[model].capabilities(config):
        config.training.stop_patience = None  # nothing to watch: the budget alone (max_epochs)
    config = presets.resolve_config(config)
    if settings.max_epochs is not None:
        num_train = _num_train(config.data)
        config.training.num_steps = math.ceil(
            float(settings.max_epochs) * num_train / int(config.training.batch_size))
    return config


def _num_train(data_config) -> int:
    """The training split's size (the dataset is prepared if it is not yet)."""
    key = json.dumps(data_config.to_dict(), sort_keys=True, default=str)
    if key not in _NUM_TRAIN:
        builder = data.prepare_from_config(data_config)
        _NUM_TRAIN[key] = int(builder.info.splits["train"].num_examples)
    return _NUM_TRAIN[key]


_NUM_TRAIN: dict[str, int] = {}


def classifier_config(settings: ReproduceSettings) -> ml_collections.ConfigDict:
    """The attribute classifier's config (`classifier.get_config`), seed 0."""
    config = classifier.get_config()
    _data_fields(config, settings)
    config.training.seed = 0
    if settings.classifier_steps is not None:
        config.training.num_steps = int(settings.classifier_steps)
    apply_overrides(config, settings.classifier_overrides)
    return config


def _check_overrides(settings: ReproduceSettings) -> None:
    found = set()
    for model in settings.models:
        found.update(apply_overrides(configs.CONFIGS[model].get_config(settings.preset),
                                     settings.overrides, skip_missing=True))
    missing = sorted(set(settings.overrides) - found)
    if missing:
        raise KeyError(f"No model config ({', '.join(settings.models)}) has the field(s) "
                       f"{missing}.")
    classifier_config(settings)  # raises for a field the classifier's config lacks
