"""An attribute classifier for measuring attribute fidelity: do generated faces show the attributes
they were generated from?

A small convnet with one sigmoid output per attribute (multi-label), trained on the training split's
real faces with the binary cross-entropy, and saved as an Orbax checkpoint in its own workdir. The
evaluation (`cmma_jax.evaluate`) scores faces generated from the test split's attributes with it,
against those attributes, and scores the real test faces as the ceiling.

    config = classifier.get_config()
    config.data.name = "celeba"
    config.data.data_dir = "../shared/data/celeba"
    classifier.train_classifier(config, "workdirs/classifier_celeba")
    config, names, params = classifier.load_classifier("workdirs/classifier_celeba")
    probabilities = classifier.predict(params, images, config=config)     # [B, A] in (0, 1)

Network (`AttributeClassifier`): four blocks of [3x3 convolution (padding 1), ReLU, 2x2 max-pool]
(64 -> 32 -> 16 -> 8 -> 4; the widths are `config.model.features`), a dense hidden layer and one
logit per attribute. It is built from the
CPU-friendly layers of `cmma_jax.nets` (explicit padding then a VALID convolution; pooling as a
reshape and a max). Training flips half the faces left-right (the attributes are symmetric).

Labels are the attributes in the "binary" encoding ({0, 1}: raw value > 0), whatever encoding a
generative model used; LFW's real-valued scores become "score > 0".

The workdir holds `config.json`, `attributes.json`, `metrics.jsonl` (training loss; validation
accuracy and AUC at every evaluation) and `checkpoints/` (train state and data position), and a run
resumes from its latest checkpoint like `cmma_jax.train`.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections import config_dict

from cmma_jax import checkpoints, metrics, nets, parallel, train, workdirs
from cmma_jax.configs import base as base_config
from cmma_jax.configs import checks
from cmma_jax.data import reading
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.models import common

Array = jax.Array

__all__ = [
    "get_config",
    "AttributeClassifier",
    "get_model",
    "init_state",
    "train_step",
    "logits",
    "predict",
    "train_classifier",
    "load_classifier",
    "load_predict_fn",
    "evaluate_classifier",
]


def get_config() -> ml_collections.ConfigDict:
    """The classifier's config. Sections mirror the model configs (`cmma_jax.configs.base`), so the
    same data fields apply (`--config.data.options.num_train=...` and the like).

    data: name, data_dir (the raw folder of celeba/lfw), prepared_dir (prepared datasets), options,
      worker_count. The labels are always the "binary" attribute encoding.
    model: features (the convolution widths, one 2x2 pooling each), hidden (the dense layer),
      input_pool (average-pool the input by this factor first; 1: full resolution).
    training: batch_size, num_steps, seed, log_every, eval_every (validation accuracy/AUC),
      checkpoint_every, keep_checkpoints, flip (random left-right flips), num_eval (validation
      faces per evaluation; None = the whole split).
    optimizer: Adam's learning_rate, b1, b2, eps.
    """
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict()
    config.model.name = "attribute_classifier"
    config.model.features = (16, 32, 64, 64)
    config.model.hidden = 128
    config.model.input_pool = 1

    config.data = base_config.data_config()  # the labels are always "binary"

    config.training = ml_collections.ConfigDict()
    config.training.batch_size = 64
    config.training.num_steps = 1500
    config.training.seed = 0
    config.training.log_every = 100
    config.training.eval_every = 500
    config.training.checkpoint_every = 500
    config.training.keep_checkpoints = 2
    config.training.flip = True
    config.training.num_eval = config_dict.placeholder(int)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    return config


class AttributeClassifier(nn.Module):
    """Faces `[B, 64, 64, 3]` in [0, 1] -> attribute logits `[B, A]` (float32).

    Attributes:
      num_attributes: A, one sigmoid output per attribute.
      features: the widths of the convolution blocks (each halves the map).
      hidden: units of the dense layer before the output.
      input_pool: average-pool the 64x64 input by this factor first (1: none; 2: 32x32, four
        times cheaper, for tests).
    """

    num_attributes: int
    features: Sequence[int] = (16, 32, 64, 64)
    hidden: int = 128
    input_pool: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"AttributeClassifier takes faces [B, {', '.join(map(str, IMAGE_SHAPE))}], "
                             f"got {x.shape}.")
        h = x.astype(jnp.float32) * 2.0 - 1.0  # centred inputs
        if self.input_pool > 1:  # average-pool the input first: a cheaper, coarser classifier
            p = self.input_pool
            b, height, width, c = h.shape
            h = h.reshape(b, height // p, p, width // p, p, c).mean(axis=(2, 4))
        for width in self.features:
            h = nets.Conv(width, 3, padding=1)(h)
            h = nets.max_pool_2x2(jax.nn.relu(h))
        h = h.reshape(h.shape[0], -1)
        h = jax.nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.num_attributes)(h)


def get_model(config, num_attributes: int) -> AttributeClassifier:
    """The classifier module of a config."""
    return AttributeClassifier(num_attributes=int(num_attributes),
                               features=tuple(config.model.features),
                               hidden=int(config.model.hidden),
                               input_pool=int(config.model.get("input_pool", 1)))


def init_state(key: Array, config, num_attributes: int) -> common.TrainState:
    """A fresh train state (float32 parameters, Adam, int32 step 0)."""
    model = get_model(config, num_attributes)
    example = jnp.zeros((1, *IMAGE_SHAPE), jnp.float32)
    params = jax.jit(lambda k: common.init_params(model, k, example))(key)
    tx = optax.adam(config.optimizer.learning_rate, b1=config.optimizer.b1,
                    b2=config.optimizer.b2, eps=config.optimizer.eps)
    return common.create_train_state(model.apply, params, tx)


def logits(params, images: Array, *, config) -> Array:
    """Attribute logits `[B, A]` of faces `[B, 64, 64, 3]`; A is read from the parameters."""
    num_attributes = params["Dense_1"]["bias"].shape[0]
    return get_model(config, num_attributes).apply({"params": params}, images)


def predict(params, images: Array, *, config) -> Array:
    """Attribute probabilities `[B, A]` in (0, 1): the sigmoid of `logits`."""
    return jax.nn.sigmoid(logits(params, images, config=config))


def train_step(state: common.TrainState, batch: Mapping[str, Array], key: Array, *,
               config) -> tuple[common.TrainState, dict[str, Array]]:
    """One Adam step on the binary cross-entropy, summed over attributes, averaged over faces.

    Args:
      state: the train state.
      batch: `{"image": [B, 64, 64, 3], "attributes": [B, A]}` with binary attributes.
      key: the per-step key (random left-right flips when `config.training.flip`).

    Returns:
      The new state and the metrics "loss" and "accuracy" (of the batch, before the update).
    """
    images = batch["image"]
    labels = batch["attributes"]
    if config.training.flip:
        flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
        images = jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)

    def loss_fn(params):
        out = state.apply_fn({"params": params}, images)
        # optax's form: log σ(-x) terms, never log(1 - σ(x)), which is -inf once σ(x) rounds to 1.
        loss = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(out, labels), axis=-1))
        return loss, out

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean((out > 0) == (labels > 0.5))
    return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": accuracy}


def evaluate_classifier(params, config, split: str = "validation",
                        limit: int | None = None) -> dict[str, Any]:
    """Accuracy and ROC AUC of the classifier on the real faces of a split.

    Args:
      params: the classifier's parameters.
      config: its config (the data section says which dataset).
      split: "train", "validation" or "test".
      limit: the first `limit` faces of the split (None: all of them).

    Returns:
      A dict: "num_images", "accuracy" and "auc" (per attribute, `[A]` numpy; AUC NaN where the
      labels are constant), "mean_accuracy", "mean_auc" (over the attributes with an AUC).
    """
    predict_fn = jax.jit(functools.partial(predict, config=config))
    probabilities, labels = [], []
    seed = int(config.training.get("seed") or 0)
    for chunk in reading.SplitReader(config.data, split, batch_size=64, limit=limit, seed=seed):
        p = np.asarray(predict_fn(params, chunk.images))[: chunk.num_valid]
        probabilities.append(p)
        labels.append(chunk.binary_attributes[: chunk.num_valid])
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    accuracy = metrics.attribute_accuracy(probabilities, labels)
    auc = metrics.attribute_auc(probabilities, labels)
    return {"num_images": int(len(labels)), "accuracy": accuracy, "auc": auc,
            "mean_accuracy": float(np.mean(accuracy)),
            "mean_auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")}


class _ValidationScores(train.Hook):
    """The classifier's hook: validation accuracy and AUC every `eval_every` steps."""

    def __init__(self, config):
        self.config, self.every = config, int(config.training.eval_every)
        self.scores = None

    def __call__(self, state, step: int) -> dict[str, float]:
        self.scores = evaluate_classifier(state.params, self.config, "validation",
                                          self.config.training.get("num_eval"))
        return {"val_accuracy": self.scores["mean_accuracy"],
                "val_auc": self.scores["mean_auc"]}


def train_classifier(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains the attribute classifier on the training split's real faces, resuming if it can.

    The loop is the trainer's (`cmma_jax.train.fit`): the same checkpoints (state and data
    position), metrics.jsonl, non-finite checks and progress display.

    Args:
      config: `get_config()` with overrides (dataset, steps, ...).
      workdir: where `config.json`, `attributes.json`, `metrics.jsonl` and `checkpoints/` go.
        A workdir with a checkpoint is resumed (same state and data position).

    Returns:
      The final validation scores (`evaluate_classifier`), with "step".

    Raises:
      ValueError: for a config error; `workdirs.WorkdirMismatchError` for a workdir that holds
        another run (other settings or attributes; nothing is written).
      workdirs.WorkdirLockedError: another run holds the workdir.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.attribute_encoding = "binary"
    checks.check_config(config)
    if config.training.get("eval_every") is None:
        raise ValueError("--config.training.eval_every=None: the classifier needs an integer "
                         ">= 1 (its validation scores).")
    with workdirs.lock(workdir):
        train_data = train.open_run(config, workdir, batch_size=int(config.training.batch_size),
                                    shard=False)
        names = list(train_data.attribute_names)
        init_key, train_key = jax.random.split(jax.random.key(int(config.training.seed)))
        validation = _ValidationScores(config)
        state = train.fit(workdir, config,
                          init_state=lambda: init_state(init_key, config, len(names)),
                          train_step=train_step, train_data=train_data, train_key=train_key,
                          hooks=[validation], progress_label="classifier",
                          progress_metrics=("loss", "accuracy"), progress_stream=sys.stderr)
    scores = validation.scores
    if scores is None:  # nothing left to train: score the restored state
        scores = evaluate_classifier(state.params, config, "validation",
                                     config.training.get("num_eval"))
    return {"step": int(parallel.host_copy(state.step)), **scores}


def load_classifier(workdir: str, step: int | None = None):
    """A trained classifier: `(config, attribute_names, params)`.

    Raises:
      FileNotFoundError: if `workdir` has no classifier config or checkpoint.
      ValueError: if `workdir` holds another model.
    """
    if not os.path.exists(os.path.join(workdir, workdirs.CONFIG_FILE)):
        raise FileNotFoundError(f"{os.path.join(workdir, workdirs.CONFIG_FILE)} not found: train "
                                "a classifier first (python launch/train_classifier.py "
                                "--workdir=...).")
    config, names = workdirs.read_workdir(workdir)
    if config.model.get("name") != "attribute_classifier":
        raise ValueError(f"{workdir} is not an attribute classifier's workdir "
                         f"(its model is {config.model.get('name')!r}).")
    abstract = jax.eval_shape(lambda k: init_state(k, config, len(names)), jax.random.key(0))
    state, _ = checkpoints.restore_state(workdir, abstract, step)
    return config, names, state.params


def load_predict_fn(workdir: str, attribute_names) -> tuple[Callable[[Array], Array], Any]:
    """The classifier in `workdir` as `images [B, 64, 64, 3] -> probabilities [B, A]` (jitted),
    with its config, for models of `attribute_names`.

    Raises:
      FileNotFoundError: if `workdir` holds no classifier.
      ValueError: if it was trained on other attributes than `attribute_names`.
    """
    config, names, params = load_classifier(workdir)
    if tuple(names) != tuple(attribute_names):
        raise ValueError(
            f"The classifier in {workdir} was trained on the attributes of "
            f"{config.data.name!r} ({len(names)}), the models on others "
            f"({len(attribute_names)}); train a classifier on the models' dataset.")
    return functools.partial(jax.jit(functools.partial(predict, config=config)), params), config

