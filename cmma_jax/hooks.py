"""What the training loop (`cmma_jax.train.fit`) does beside the step: the metric log, and the
hooks that run every so many steps outside the step's timing.

- `MetricWriter`: `metrics.jsonl` (and TensorBoard when tensorboardX is installed), process 0.
- `Hook`: the interface; `SampleWriter` (the PNG grid of validation faces, reconstructions and
  samples), `ValidationBound` (the validation bound, the learning curve and the convergence
  rule's signal). The classifier's validation scores are a hook of `cmma_jax.classifier`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cmma_jax import images, losses, parallel
from cmma_jax.data.reading import SplitReader

PyTree = Any


class MetricWriter:
    """Writes scalars to `metrics.jsonl` (one JSON object a line) and, where tensorboardX is
    installed, to TensorBoard event files. Only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter  # optional extra [tensorboard]
        except ImportError:
            logging.info("tensorboardX is not installed: metrics go to metrics.jsonl only "
                         "(pip install -e '.[tensorboard]' for TensorBoard).")
        else:
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class Hook:
    """Something the loop does every `every` steps (and after the last step), outside the step's
    timing: `__call__(state, step)` gets one copy of the state and may return scalars, which are
    written with that step's metrics."""

    every: int

    def __call__(self, state: PyTree, step: int) -> Mapping[str, float] | None:
        raise NotImplementedError


class SampleWriter(Hook):
    """Writes a labelled PNG of validation faces, their reconstructions (models that can
    reconstruct) and samples from their attributes at temperatures 0 and 1, always from the same
    attributes and noise so that grids are comparable across steps."""

    def __init__(self, model_lib, config, workdir, images_, attributes, key, every: int):
        self.workdir, self.every = workdir, int(every)
        self.images, self.attributes = images_, attributes
        self.key = key
        self._sample = jax.jit(functools.partial(model_lib.sample, config=config),
                               static_argnames=("temperature",))
        self._reconstruct = (jax.jit(functools.partial(model_lib.reconstruct, config=config))
                             if "reconstruct" in model_lib.capabilities(config) else None)

    def __call__(self, state, step: int) -> None:
        self.write(state.params, step)

    def write(self, params, step: int) -> str:
        # A host copy of the (replicated) parameters: sampling then runs on this process's
        # default device alone, with no collective that other processes would have to join.
        params = parallel.host_copy(params)
        rows, labels = [np.asarray(self.images)], ["data"]
        if self._reconstruct is not None:
            rows.append(np.asarray(self._reconstruct(params, self.images, self.attributes)))
            labels.append("reconstruction")
        for t in (0.0, 1.0):
            rows.append(np.asarray(self._sample(params, self.attributes, self.key,
                                                temperature=t)))
            labels.append(f"sample T={t:g}")
        grid = images.labelled_grid(np.stack(rows), row_labels=labels,
                                    title=f"step {step}: faces from the data's attributes")
        return images.save_png(os.path.join(self.workdir, "samples", f"step_{step:07d}.png"),
                               grid)


class ValidationBound(Hook):
    """The variational bound on a fixed set of validation faces: `val_elbo`, `val_kl` and
    `val_log_likelihood`, each the mean over the faces in nats (one posterior sample a face, the
    noise fixed across steps so that the curve moves with the parameters only).

    The learning curve that shows whether the models still improve; `cmma_jax.evaluate` scores
    the final model more thoroughly (the test split, IWAE).
    """

    def __init__(self, model_lib, config, images_, attributes, key, every: int):
        self.every = int(every)
        self.key = key
        batch = int(config.training.batch_size)
        self.batches = [(images_[i:i + batch], attributes[i:i + batch])
                        for i in range(0, len(images_), batch)]

        def terms_sum(params, x, y, key):
            terms = model_lib.bound(params, {"image": x, "attributes": y}, key, config=config)
            return {f"val_{name}": jnp.sum(getattr(terms, name)) for name in losses.ELBO_TERMS}

        self._terms_sum = jax.jit(terms_sum)

    def __call__(self, state, step: int) -> dict[str, float]:
        params = parallel.host_copy(state.params)
        totals: dict[str, float] = {}
        for i, (x, y) in enumerate(self.batches):
            sums = self._terms_sum(params, x, y, jax.random.fold_in(self.key, i))
            for name, value in sums.items():
                totals[name] = totals.get(name, 0.0) + float(value)
        num_faces = sum(len(x) for x, _ in self.batches)
        return {name: total / num_faces for name, total in totals.items()}


def validation_faces(config, num_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `num_faces` faces of the validation split (all of them if it holds fewer), in
    file order, as host arrays: images and attributes in the model's encoding."""
    encoding = config.data.attribute_encoding
    images_, attributes = [], []
    for chunk in SplitReader(config.data, "validation", batch_size=100, limit=num_faces):
        images_.append(chunk.images[:chunk.num_valid])
        attributes.append(chunk.attributes(encoding)[:chunk.num_valid])
    return np.concatenate(images_), np.concatenate(attributes)


__all__ = ["MetricWriter", "Hook", "SampleWriter", "ValidationBound", "validation_faces"]
