"""The models and the classifier judged: the checks of their workdirs (trained on
synthetic_faces, nothing loaded yet), their jitted entry points on numpy faces, and batching."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from cmma_jax import classifier as classifier_lib
from cmma_jax.data import synthetic_faces
from cmma_jax.evaluate.ground_truth.settings import ATTRIBUTE_NAMES, InputError
from cmma_jax.metrics import pad_rows
from cmma_jax.models import MODELS
from cmma_jax.workdirs import TrainedModel, read_workdir


def check_synthetic(workdir: str):
    """The workdir's config, if it was trained on synthetic_faces (nothing loaded yet)."""
    config, names = read_workdir(workdir)
    model = config.model.get("name")
    if model not in MODELS:
        hint = (" (an attribute classifier goes to --classifier_workdir)"
                if model == "attribute_classifier" else "")
        raise InputError(f"{workdir} holds a {model!r}, not one of the generative models "
                         f"{sorted(MODELS)}{hint}.")
    dataset = config.data.get("name")
    if dataset != "synthetic_faces":
        raise InputError(
            f"{workdir} was trained on {dataset!r}, not on synthetic_faces: ground truth exists "
            "only for synthetic_faces, whose faces are rendered from known specs. Pass workdirs "
            "of models trained with launch/train.py --dataset=synthetic_faces.")
    if tuple(names) != tuple(ATTRIBUTE_NAMES):
        raise InputError(f"{workdir} has other attributes ({len(names)}) than synthetic_faces "
                         f"({len(ATTRIBUTE_NAMES)}); it was trained on another version of the "
                         "dataset. Retrain it.")
    return config


def variant_of(config) -> synthetic_faces.SyntheticFacesConfig:
    return synthetic_faces.config_from_options(config.data.get("options"))


def batched(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int
             ) -> np.ndarray:
    """`fn` over rows of `arrays` in batches of one size (the last padded by repeating its last
    row, so a jitted `fn` compiles once), concatenated as numpy."""
    n = len(arrays[0])
    size = min(batch_size, n)
    out = []
    for start in range(0, n, size):
        parts = [np.asarray(a[start:start + size]) for a in arrays]
        valid = len(parts[0])
        result = fn(*[pad_rows(p, size) for p in parts])
        out.append(jax.tree_util.tree_map(lambda r: np.asarray(r)[:valid], result))
    if isinstance(out[0], (list, tuple)):
        return [np.concatenate([o[k] for o in out]) for k in range(len(out[0]))]
    return np.concatenate(out)


class Functions:
    """A model's jitted entry points on float32 numpy inputs, outputs clipped to [0, 1]."""

    def __init__(self, model: TrainedModel):
        lib, config = model.model_lib, model.config
        self.params = jax.device_put(model.params)
        self._edit = jax.jit(functools.partial(lib.edit, config=config)) \
            if "edit" in model.capabilities else None
        self._reconstruct = jax.jit(functools.partial(lib.reconstruct, config=config)) \
            if "reconstruct" in model.capabilities else None
        self._sample = jax.jit(functools.partial(lib.sample, config=config))
        self._encode = jax.jit(functools.partial(lib.encode, config=config)) \
            if "encode" in model.capabilities else None
        self._key = jax.random.key(0)  # temperature 0: the noise is multiplied by 0

    def edit(self, x, y_from, y_to):
        return np.clip(np.asarray(self._edit(self.params, x, y_from, y_to)), 0.0, 1.0)

    def reconstruct(self, x, y):
        return np.clip(np.asarray(self._reconstruct(self.params, x, y)), 0.0, 1.0)

    def regenerate(self, y):
        return np.clip(np.asarray(self._sample(self.params, y, self._key, 0.0)), 0.0, 1.0)

    def encode_means(self, x, y) -> list[np.ndarray]:
        means = self._encode(self.params, x, y)[0]
        return [np.asarray(m) for m in means] if isinstance(means, (list, tuple)) \
            else [np.asarray(means)]


def short_labels(models: Sequence[TrainedModel]) -> list[str]:
    """The model names, with the workdir's folder where two models share a name."""
    names = [m.name for m in models]
    return [m.name if names.count(m.name) == 1 else
            f"{m.name} ({os.path.basename(os.path.normpath(m.workdir))})" for m in models]


def load_classifier(workdir: str):
    try:
        predict, c_config = classifier_lib.load_predict_fn(workdir, ATTRIBUTE_NAMES)
    except ValueError as e:  # another model's workdir, or other attributes
        raise InputError(f"{e} Pass a workdir of launch/train_classifier.py "
                         "--dataset=synthetic_faces as --classifier_workdir.") from None
    return (lambda x: np.asarray(predict(x))), c_config
