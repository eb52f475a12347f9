"""Workdirs: what a training run leaves behind, and the one way to load a trained model from it.

A workdir written by the trainer (`cmma_jax.train`) or the classifier (`cmma_jax.classifier`) holds

    config.json        the resolved config of the run
    attributes.json    the dataset's attribute names, in column order
    checkpoints/       Orbax checkpoints (`cmma_jax.checkpoints`)
    metrics.jsonl      one JSON object per logged step
    samples/           sample grids (generative models)

`read_workdir` reads the records without touching a checkpoint; `load_model` and `load_trained`
restore parameters with a template from `jax.eval_shape` of the model's `init_state`, so loading
compiles nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from cmma_jax import checkpoints
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.models import MODELS

CONFIG_FILE = "config.json"
ATTRIBUTES_FILE = "attributes.json"


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A config of an older workdir in today's field names (changes `config` in place).

    Before the data fields were named after the flags, `data.source_dir` was the raw folder and
    `data.data_dir` the prepared cache; today they are `data.data_dir` and `data.prepared_dir`.
    """
    data = config.get("data")
    if data is not None and "source_dir" in data:
        values = data.to_dict()
        values["prepared_dir"] = values.pop("data_dir", None)
        values["data_dir"] = values.pop("source_dir")
        config.data = ml_collections.ConfigDict(values)
    return config


def read_workdir(workdir: str) -> tuple[ml_collections.ConfigDict, tuple[str, ...]]:
    """A workdir's config and attribute names, without loading any parameters.

    Raises:
      FileNotFoundError: if `workdir` has no `config.json` or `attributes.json`.
    """
    paths = [os.path.join(workdir, n) for n in (CONFIG_FILE, ATTRIBUTES_FILE)]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir "
                                    "(train one with launch/train.py --workdir=...).")
    with open(paths[0]) as f:
        config = upgrade_config(ml_collections.ConfigDict(json.load(f)))
    with open(paths[1]) as f:
        names = tuple(json.load(f))
    return config, names


def write_records(workdir: str, config: ml_collections.ConfigDict,
                  attribute_names: tuple[str, ...] | list[str]) -> None:
    """Writes `config.json` and `attributes.json` (process 0 of a run)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json(indent=2))
    with open(os.path.join(workdir, ATTRIBUTES_FILE), "w") as f:
        json.dump(list(attribute_names), f)


def example_batch(batch_size: int, num_attributes: int) -> dict[str, np.ndarray]:
    """A batch of zeros with the shapes of the real ones (for `init_state` and shape checks)."""
    return {"image": np.zeros((batch_size, *IMAGE_SHAPE), np.float32),
            "attributes": np.zeros((batch_size, num_attributes), np.float32)}


@dataclasses.dataclass
class TrainedModel:
    """A model loaded from a training workdir.

    Attributes:
      workdir: the workdir.
      name: the model name ("cmma", "cvae", "cgan", "vlae").
      model_lib: its module of `cmma_jax.models` (the model contract).
      config: the training config.
      attribute_names: the dataset's attribute names.
      params: the trained parameters (`state.params`), on the host.
      step: the training step of the checkpoint.
    """

    workdir: str
    name: str
    model_lib: Any
    config: ml_collections.ConfigDict
    attribute_names: tuple[str, ...]
    params: Any
    step: int

    @property
    def encoding(self) -> str:
        return self.config.data.attribute_encoding

    @property
    def capabilities(self) -> frozenset[str]:
        """What the model can do (`cmma_jax.models.CAPABILITIES`) with this config."""
        return self.model_lib.capabilities(self.config)

    @property
    def label(self) -> str:
        return f"{self.name} ({os.path.basename(os.path.normpath(self.workdir))}, step {self.step})"


def _model_lib(config, workdir: str):
    name = config.model.get("name")
    if name not in MODELS:
        raise ValueError(f"{workdir} holds a {name!r}, not one of the generative models "
                         f"{sorted(MODELS)} (a classifier loads with "
                         "cmma_jax.classifier.load_classifier).")
    return MODELS[name]


def _restore(workdir: str, step: int | None):
    config, names = read_workdir(workdir)
    model_lib = _model_lib(config, workdir)
    example = example_batch(int(config.training.batch_size), len(names))
    abstract = jax.eval_shape(lambda k: model_lib.init_state(k, config, example),
                              jax.random.key(0))
    state, step = checkpoints.restore_state(workdir, abstract, step)
    return config, names, model_lib, state, step


def load_trained(workdir: str, step: int | None = None):
    """A trained model from a workdir: its config, attribute names and train state.

    Args:
      workdir: a workdir written by `cmma_jax.train.train_and_evaluate`.
      step: the checkpoint to load (default: the latest).

    Returns:
      `(config, attribute_names, state)`; `state.params` feeds the model's functions
      (`MODELS[config.model.name].sample(state.params, ...)` and the like); the state carries
      its `apply_fn` and `tx`.

    Raises:
      FileNotFoundError: if the workdir has no config.json or no checkpoint.
    """
    config, names, _, state, _ = _restore(workdir, step)
    return config, names, state


def load_model(workdir: str, step: int | None = None) -> TrainedModel:
    """A trained model from its workdir as a `TrainedModel` (parameters on the host).

    Raises:
      FileNotFoundError: if `workdir` is not a training workdir or has no checkpoint.
    """
    config, names, model_lib, state, step = _restore(workdir, step)
    return TrainedModel(workdir=workdir, name=config.model.name, model_lib=model_lib,
                        config=config, attribute_names=tuple(names),
                        params=jax.device_get(state.params), step=int(step))
