"""Evaluation of trained models: bounds, importance-weighted likelihood, Parzen, attribute fidelity.

    settings = evaluate.EvalSettings(classifier_workdir="workdirs/classifier_celeba")
    results = evaluate.evaluate_workdirs(["workdirs/cmma", "workdirs/cvae", "workdirs/cgan"],
                                         settings, "results/")   # results.json, results.md

Estimators (each a function of a model module that follows the model contract of DESIGN.md, its
parameters and config, and a stream of `Chunk`s of one split; all in nats per image):

- `conditional_bound`: the conditional variational bound of the CMMA paper's Table 2, per test
  face (`module.bound`: eq. 6 for the CMMA, eq. 13 for the CVAE), averaged over the split.
- `importance_weighted_bounds`: the importance-weighted bound on log p(x | y) (Burda et al. 2016)
  with K samples, for several K from ONE set of K_max samples per face (the bound with K uses the
  first K of them), so that the numbers for K = 1, 10, 100 are nested and cost the largest K alone.
  IWAE(K) increases with K towards log p(x | y) and is a true lower bound for every K (in
  expectation): a tighter and more trustworthy number than Parzen.
- `parzen_log_likelihoods`: the Parzen-window conditional log-likelihood of Table 3: for each face,
  S faces are generated from its own attributes (the decoder's mean g_μ(z) for z drawn from the
  prior at `temperature`; the generator's output for a GAN), a Gaussian kernel density with width
  σ is fitted to them and evaluated at the face. `select_parzen_sigma` picks σ from a grid by the
  mean log-likelihood on the validation split; the test split is then scored with that σ alone.
  The same protocol, sample count and σ grid for every model.
- `attribute_fidelity`: a trained attribute classifier (`cmma_jax.classifier`) scores one face
  generated from each test face's attributes; per-attribute accuracy and ROC AUC against those
  attributes, and the means over attributes. The same classifier on the real test faces is the
  ceiling. An attribute that is constant over the faces scored has no AUC: it is reported as null
  and left out of the mean AUC.

Randomness does not depend on how the work is chunked: the noise of face i (its global index in
the split) and sample s is drawn from `fold_in(fold_in(key, i), s)`, and each face goes through the
model on its own (`vmap` over faces), so batch sizes and chunk sizes change nothing but speed and
memory. Memory is bounded by the chunk sizes (`EvalSettings.batch_size`, `iwae_sample_chunk`,
`parzen_batch`, `parzen_sample_chunk`), never by the size of the split.

Units and signs. Bounds and log-likelihoods are log-densities of the image x in [0, 1]^D
(D = 64·64·3 = 12,288 values) in nats per image, with every normalising constant; higher is better.
Bits per dimension is the same number as a code length: `bits/dim = -nats / (D ln 2)`, lower is
better. Because the density is over continuous values in [0, 1], a good model's log-density is
positive (the paper's Table 2: 17,973 nats) and its bits/dim negative; these are not the
discrete 8-bit bits/dim of image-modelling papers (which count log2(256) = 8 more bits per value
for the quantisation bins and need dequantised data).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cmma_jax import classifier as classifier_lib
from cmma_jax import metrics
from cmma_jax.data import pipeline
from cmma_jax.models import MODELS

Array = jax.Array
ProgressFn = Callable[[float, float], None]

ESTIMATORS = ("bound", "iwae", "parzen", "fidelity")
LN2 = math.log(2.0)

__all__ = [
    "ESTIMATORS",
    "EvalSettings",
    "Chunk",
    "SplitReader",
    "split_chunks",
    "chunks_from_arrays",
    "TrainedModel",
    "read_workdir",
    "load_model",
    "data_config_for",
    "Progress",
    "bits_per_dim",
    "summarize",
    "conditional_bound",
    "importance_weighted_bounds",
    "parzen_log_likelihoods",
    "select_parzen_sigma",
    "attribute_fidelity",
    "evaluate_workdirs",
    "paired_differences",
    "markdown_report",
    "machine_description",
]


# ---------------------------------------------------------------------------------------------
# Settings


def _default_sigmas() -> tuple[float, ...]:
    # Log-spaced from 0.02 to 0.8 (pixel values are in [0, 1]), ~0.1 decade apart.
    return tuple(float(s) for s in np.round(np.geomspace(0.02, 0.8, 17), 5))


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What `evaluate_workdirs` computes, and how. The defaults suit a 2-core CPU.

    Attributes:
      split: the split scored ("test").
      validation_split: the split on which the Parzen σ is chosen ("validation").
      estimators: any of `ESTIMATORS`.
      num_test: faces of `split` for the bound, IWAE and fidelity (None: all of them).
      batch_size: faces per call for the bound, IWAE and fidelity.
      bound_samples: Monte Carlo samples of z per face for the variational bound (the paper: 1).
      iwae_samples: the K's of the importance-weighted bound; they share the first K samples.
      iwae_sample_chunk: importance samples per call (memory: batch_size × this many images).
      parzen_num_test: faces of `split` scored by Parzen (None: all).
      parzen_num_validation: faces of `validation_split` used to choose σ (None: all).
      parzen_samples: S, faces generated per test face.
      parzen_sigmas: the σ grid.
      parzen_temperature: scale of the prior noise for the generated faces (1: the model).
      parzen_batch: test faces per call (memory: parzen_batch × parzen_sample_chunk images).
      parzen_sample_chunk: generated faces per test face per call.
      classifier_workdir: a trained attribute classifier (`launch/train_classifier.py`); without
        one the fidelity is skipped.
      fidelity_temperature: temperature of the faces the classifier scores.
      seed: the base random seed.
      data_dir: where prepared datasets live (None: as the models were trained).
      source_dir: the raw folder of celeba/lfw (None: as the models were trained).
      show_progress: print progress lines (to stderr) during long estimators.
    """

    split: str = "test"
    validation_split: str = "validation"
    estimators: tuple[str, ...] = ESTIMATORS
    num_test: int | None = None
    batch_size: int = 32
    bound_samples: int = 1
    iwae_samples: tuple[int, ...] = (1, 10, 100)
    iwae_sample_chunk: int = 10
    parzen_num_test: int | None = 100
    parzen_num_validation: int | None = 100
    parzen_samples: int = 200
    parzen_sigmas: tuple[float, ...] = dataclasses.field(default_factory=_default_sigmas)
    parzen_temperature: float = 1.0
    parzen_batch: int = 10
    parzen_sample_chunk: int = 50
    classifier_workdir: str | None = None
    fidelity_temperature: float = 1.0
    seed: int = 0
    data_dir: str | None = None
    source_dir: str | None = None
    show_progress: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.estimators) - set(ESTIMATORS))
        if unknown:
            raise ValueError(f"Unknown estimator(s) {unknown}; choose from {ESTIMATORS}.")
        positive = ("batch_size", "bound_samples", "iwae_sample_chunk", "parzen_samples",
                    "parzen_batch", "parzen_sample_chunk")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("num_test", "parzen_num_test", "parzen_num_validation"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be positive or None (all), got {value}.")
        if not self.iwae_samples or any(int(k) < 1 for k in self.iwae_samples):
            raise ValueError(f"iwae_samples must be positive ints, got {self.iwae_samples}.")
        if not self.parzen_sigmas or any(float(s) <= 0 for s in self.parzen_sigmas):
            raise ValueError(f"parzen_sigmas must be positive, got {self.parzen_sigmas}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# Reading a split in fixed-size chunks


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A fixed-size chunk of consecutive faces of a split (the last one padded).

    Attributes:
      start: the index in the split of the first face.
      images: `[n, H, W, 3]` float32 in [0, 1]; rows past `num_valid` repeat the last valid face.
      raw_attributes: `[n, A]` the dataset's raw attribute values (CelebA: -1/+1; LFW: scores).
      num_valid: how many rows are real faces.
    """

    start: int
    images: np.ndarray
    raw_attributes: np.ndarray
    num_valid: int

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    @property
    def indices(self) -> np.ndarray:
        """`[n]` int32 global indices (padding rows continue the count; their results are
        dropped)."""
        return np.arange(self.start, self.start + self.size, dtype=np.int32)

    @property
    def binary_attributes(self) -> np.ndarray:
        """`[n, A]` {0, 1}: raw value > 0 (the classifier's labels)."""
        return pipeline.encode_attributes(self.raw_attributes, "binary")

    def attributes(self, encoding: str) -> np.ndarray:
        """`[n, A]` in a model's encoding (`config.data.attribute_encoding`)."""
        return pipeline.encode_attributes(self.raw_attributes, encoding)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


class SplitReader:
    """The first `limit` faces of a split, in file order, as fixed-size `Chunk`s.

    Reads through `cmma_jax.train.load_data` (the data section of a model or classifier config)
    with the raw attribute encoding. The loader drops incomplete batches, so it reads with the
    largest batch size that divides the number of faces, and regroups into chunks of `batch_size`
    (the last padded), so that a jitted function sees one shape. The "train" split comes in its
    shuffled training order.

    Attributes:
      num_examples: the number of faces read (min(limit, faces in the split)).
      attribute_names: the dataset's attribute names.
    """

    def __init__(self, data_config: ml_collections.ConfigDict, split: str, *, batch_size: int,
                 limit: int | None = None):
        from cmma_jax import train  # the trainer's data helper (train imports the models)

        if split not in pipeline.SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose one of {pipeline.SPLITS}.")
        self._train = train
        config = ml_collections.ConfigDict(data_config.to_dict())
        config.data.attribute_encoding = "raw"
        if config.training.get("seed") is None:
            config.training.seed = 0
        self.config, self.split, self.batch_size = config, split, int(batch_size)
        with train.load_data(config, split, batch_size=1, shard=False) as probe:
            total = probe.num_examples
            self.attribute_names = probe.attribute_names
        self.num_examples = total if limit is None else min(int(limit), total)
        if self.num_examples < 1:
            raise ValueError(f"The {split!r} split has no faces to evaluate.")

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def __iter__(self) -> Iterator[Chunk]:
        n, size = self.num_examples, self.batch_size
        read = _largest_divisor_at_most(n, max(size, 64))
        images, attributes, start, buffered = [], [], 0, 0
        with self._train.load_data(self.config, self.split, batch_size=read,
                                   shard=False) as data:
            for _ in range(n // read):
                batch = next(data.iterator)
                images.append(batch["image"])
                attributes.append(batch["attributes"])
                buffered += read
                while buffered >= size:
                    im, at = np.concatenate(images), np.concatenate(attributes)
                    yield Chunk(start, im[:size], at[:size], size)
                    images, attributes = [im[size:]], [at[size:]]
                    start += size
                    buffered -= size
        if buffered:
            im, at = np.concatenate(images), np.concatenate(attributes)
            pad = size - buffered
            im = np.concatenate([im, np.repeat(im[-1:], pad, axis=0)])
            at = np.concatenate([at, np.repeat(at[-1:], pad, axis=0)])
            yield Chunk(start, im, at, buffered)


def split_chunks(data_config, split: str, *, batch_size: int,
                 limit: int | None = None) -> SplitReader:
    """`SplitReader(data_config, split, batch_size=..., limit=...)`: iterate it for `Chunk`s."""
    return SplitReader(data_config, split, batch_size=batch_size, limit=limit)


def chunks_from_arrays(images: np.ndarray, raw_attributes: np.ndarray,
                       batch_size: int) -> list[Chunk]:
    """`Chunk`s of in-memory arrays (faces `[N, ...]`, raw attributes `[N, A]`), for tests and
    for callers with their own data."""
    images, raw_attributes = np.asarray(images, np.float32), np.asarray(raw_attributes, np.float32)
    if images.shape[0] != raw_attributes.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {raw_attributes.shape[0]} attribute rows.")
    out = []
    for start in range(0, len(images), batch_size):
        im, at = images[start:start + batch_size], raw_attributes[start:start + batch_size]
        valid = len(im)
        if valid < batch_size:
            im = np.concatenate([im, np.repeat(im[-1:], batch_size - valid, axis=0)])
            at = np.concatenate([at, np.repeat(at[-1:], batch_size - valid, axis=0)])
        out.append(Chunk(start, im, at, valid))
    return out


# ---------------------------------------------------------------------------------------------
# Trained models


@dataclasses.dataclass
class TrainedModel:
    """A model loaded from a training workdir.

    Attributes:
      workdir: the workdir.
      name: the model name ("cmma", "cvae", "cgan", "vlae").
      module: its module of `cmma_jax.models` (the model contract).
      config: the training config.
      attribute_names: the dataset's attribute names.
      params: the trained parameters (`state.params`).
      step: the training step of the checkpoint.
    """

    workdir: str
    name: str
    module: Any
    config: ml_collections.ConfigDict
    attribute_names: tuple[str, ...]
    params: Any
    step: int

    @property
    def encoding(self) -> str:
        return self.config.data.attribute_encoding

    @property
    def label(self) -> str:
        return f"{self.name} ({os.path.basename(os.path.normpath(self.workdir))}, step {self.step})"


def read_workdir(workdir: str) -> tuple[ml_collections.ConfigDict, tuple[str, ...]]:
    """A training workdir's config and attribute names, without loading any parameters.

    Raises:
      FileNotFoundError: if `workdir` has no `config.json` or `attributes.json`.
    """
    paths = [os.path.join(workdir, n) for n in ("config.json", "attributes.json")]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir "
                                    "(train one with launch/train.py --workdir=...).")
    with open(paths[0]) as f:
        config = ml_collections.ConfigDict(json.load(f))
    with open(paths[1]) as f:
        names = tuple(json.load(f))
    return config, names


def load_model(workdir: str, step: int | None = None) -> TrainedModel:
    """A trained model from its workdir: the parameters of a checkpoint, nothing compiled.

    The checkpoint is the trainer's (`cmma_jax.train`: `workdir/checkpoints/<step>`, item
    "state"). Unlike `train.load_trained`, the restore template comes from `jax.eval_shape` of the
    model's `init_state`, so loading compiles nothing (seconds saved per model on a CPU).

    Raises:
      FileNotFoundError: if `workdir` is not a training workdir or has no checkpoint.
    """
    import orbax.checkpoint as ocp

    config, names = read_workdir(workdir)
    module = MODELS[config.model.name]
    batch = int(config.training.batch_size)
    example = {"image": np.zeros((batch, 64, 64, 3), np.float32),
               "attributes": np.zeros((batch, len(names)), np.float32)}
    abstract = jax.eval_shape(lambda k: module.init_state(k, config, example), jax.random.key(0))
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    manager = ocp.CheckpointManager(directory)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {directory}.")
        state = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))["state"]
    finally:
        manager.close()
    return TrainedModel(workdir=workdir, name=config.model.name, module=module, config=config,
                        attribute_names=tuple(names), params=jax.device_get(state.params),
                        step=int(jax.device_get(state.step)))


def data_config_for(models: Sequence[TrainedModel], *, data_dir: str | None = None,
                    source_dir: str | None = None) -> ml_collections.ConfigDict:
    """The data config every model is evaluated on: the first model's, with overrides.

    Raises:
      ValueError: if the models were trained on different datasets or attributes.
    """
    if not models:
        raise ValueError("No models to evaluate.")
    first = models[0]
    for m in models[1:]:
        if m.config.data.name != first.config.data.name:
            raise ValueError(f"{m.workdir} was trained on {m.config.data.name!r} but "
                             f"{first.workdir} on {first.config.data.name!r}: evaluate models of "
                             "one dataset together.")
        if m.attribute_names != first.attribute_names:
            raise ValueError(f"{m.workdir} and {first.workdir} have different attributes.")
    config = ml_collections.ConfigDict(first.config.to_dict())
    if data_dir is not None:
        config.data.data_dir = data_dir
    if source_dir is not None:
        config.data.source_dir = source_dir
    return config


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """Progress lines for long estimators: `label: done/total (pct) elapsed, ETA`, at most every
    `interval` seconds and at the end. A callable `progress(done, total)`."""

    def __init__(self, label: str, *, interval: float = 10.0, stream=None, enabled: bool = True):
        self.label, self.interval, self.enabled = label, interval, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()
        self._last = -math.inf
        self.calls = 0

    def __call__(self, done: float, total: float) -> None:
        self.calls += 1
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = done >= total
        if not finished and now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self.t0
        eta = elapsed / max(done, 1e-9) * (total - done)
        self.stream.write(f"{self.label}: {done:.0f}/{total:.0f} ({100.0 * done / total:.0f}%) "
                          f"{elapsed:.0f} s, ETA {eta:.0f} s\n")
        self.stream.flush()


def _call(progress: ProgressFn | None, done: float, total: float) -> None:
    if progress is not None:
        progress(done, total)


# ---------------------------------------------------------------------------------------------
# Summaries


def bits_per_dim(nats_per_image: float | np.ndarray, dim: int) -> float | np.ndarray:
    """A log-density in nats per image as bits per dimension: `-nats / (dim · ln 2)`.

    The sign flips: a log-likelihood (higher is better) becomes a code length (lower is better).
    `dim` is the number of values per image (12,288 for 64×64×3).
    """
    return -np.asarray(nats_per_image, np.float64) / (dim * LN2)


def summarize(values: np.ndarray, dim: int | None = None) -> dict[str, float]:
    """Mean, standard error and count of per-face values (nats); with `dim`, bits/dim too."""
    v = np.asarray(values, np.float64)
    n = int(v.size)
    out = {"nats": float(np.mean(v)),
           "stderr": float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
           "num_images": n}
    if dim is not None:
        out["bits_per_dim"] = float(bits_per_dim(out["nats"], dim))
        out["bits_per_dim_stderr"] = out["stderr"] / (dim * LN2)
    return out


def _single(batch_x, batch_y):
    return {"image": batch_x[None], "attributes": batch_y[None]}


# Jitted per-face functions, kept per (kind, model module, config, static settings), so that a
# second estimator (or a second split) on the same model reuses the compiled code. The config is
# kept alive with its entry, so its id cannot be reused by another object.
_COMPILED: dict[tuple, tuple[Any, Callable]] = {}


def _compiled(kind: str, module, config, static: tuple, build: Callable[[], Callable]):
    key = (kind, id(module), id(config), static)
    hit = _COMPILED.get(key)
    if hit is None or hit[0] is not config:
        hit = (config, build())
        _COMPILED[key] = hit
    return hit[1]


# ---------------------------------------------------------------------------------------------
# The variational bound (Table 2)


def conditional_bound(module, params, config, chunks: Iterable[Chunk], key: Array, *,
                      num_samples: int = 1, progress: ProgressFn | None = None,
                      total: int | None = None) -> dict[str, np.ndarray]:
    """The conditional variational bound of each face, `module.bound`, one face at a time.

    Args:
      module: a model module with `bound(params, batch, key, *, config, num_samples)` returning
        `losses.ElboTerms` of `[B]` (cmma, cvae).
      params, config: the trained model.
      chunks: `Chunk`s of the split (`SplitReader`).
      key: the base key; face i uses `fold_in(key, i)`.
      num_samples: Monte Carlo samples of z per face.
      progress: `progress(done_faces, total_faces)` after each chunk.
      total: the number of faces (for progress only).

    Returns:
      A dict of `[N]` float64 arrays, one value per face in nats: "elbo", "log_likelihood"
      (E_q[log p(x | z, ...)]) and "kl".
    """
    encoding = config.data.attribute_encoding

    def build():
        def one(p, x, y, k):
            terms = module.bound(p, _single(x, y), k, config=config, num_samples=num_samples)
            return jnp.stack([terms.elbo[0], terms.log_likelihood[0], terms.kl[0]])

        def per_chunk(p, images, attributes, indices, base_key):
            keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(indices)
            return jax.vmap(one, in_axes=(None, 0, 0, 0))(p, images, attributes, keys)

        return jax.jit(per_chunk)

    per_chunk = _compiled("bound", module, config, (int(num_samples),), build)

    rows, done = [], 0
    for chunk in chunks:
        out = per_chunk(params, chunk.images, chunk.attributes(encoding), chunk.indices, key)
        rows.append(np.asarray(out, np.float64)[: chunk.num_valid])
        done += chunk.num_valid
        _call(progress, done, total or done)
    values = np.concatenate(rows)
    return {"elbo": values[:, 0], "log_likelihood": values[:, 1], "kl": values[:, 2]}


# ---------------------------------------------------------------------------------------------
# The importance-weighted bound


def importance_weighted_bounds(module, params, config, chunks: Iterable[Chunk], key: Array, *,
                               num_samples: Sequence[int] = (1, 10, 100), sample_chunk: int = 10,
                               progress: ProgressFn | None = None,
                               total: int | None = None) -> dict[int, np.ndarray]:
    """The importance-weighted bound on log p(x | y) of each face, for several K.

        IWAE_K(x, y) = log (1/K) Σ_{k<K} p(x, z_k | y) / q(z_k | x, y),   z_k ~ q(z | x, y)

    Each log-weight is `module.iwae(..., num_samples=1)` with the key
    `fold_in(fold_in(key, i), k)` for face i and sample k; IWAE_K uses samples 0..K-1, so the
    bounds for all K come from the K_max weights of each face, drawn `sample_chunk` at a time.

    Args:
      module: a model module with `iwae(params, batch, key, *, config, num_samples)` -> `[B]`.
      params, config: the trained model.
      chunks: `Chunk`s of the split.
      key: the base key.
      num_samples: the K's.
      sample_chunk: importance samples per call.
      progress, total: as `conditional_bound`.

    Returns:
      `{K: [N] float64}`, nats per face.
    """
    ks = sorted({int(k) for k in num_samples})
    k_max = ks[-1]
    sample_chunk = max(1, min(int(sample_chunk), k_max))
    encoding = config.data.attribute_encoding

    def build():
        def one(p, x, y, i, s, base_key):
            k = jax.random.fold_in(jax.random.fold_in(base_key, i), s)
            return module.iwae(p, _single(x, y), k, config=config, num_samples=1)[0]

        over_samples = jax.vmap(one, in_axes=(None, None, None, None, 0, None))
        return jax.jit(jax.vmap(over_samples, in_axes=(None, 0, 0, 0, None, None)))

    log_weights_fn = _compiled("iwae", module, config, (), build)

    out = {k: [] for k in ks}
    done = 0
    for chunk in chunks:
        attributes = chunk.attributes(encoding)
        log_w = np.empty((chunk.size, k_max), np.float64)
        for s0 in range(0, k_max, sample_chunk):
            sample_ids = np.arange(s0, s0 + sample_chunk, dtype=np.int32)
            w = log_weights_fn(params, chunk.images, attributes, chunk.indices, sample_ids, key)
            stop = min(s0 + sample_chunk, k_max)
            log_w[:, s0:stop] = np.asarray(w, np.float64)[:, : stop - s0]
            _call(progress, done + chunk.num_valid * stop / k_max, total or done + chunk.size)
        log_w = log_w[: chunk.num_valid]
        for k in ks:
            # log-mean-exp with the largest weight factored out: the weights span hundreds of nats.
            top = np.max(log_w[:, :k], axis=1, keepdims=True)
            lme = top[:, 0] + np.log(np.mean(np.exp(log_w[:, :k] - top), axis=1))
            out[k].append(lme)
        done += chunk.num_valid
    return {k: np.concatenate(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Parzen (Table 3)


def _per_face_sampler(module, config, temperature: float):
    """A jitted `(params, attributes [b, A], indices [b], sample_ids [s], key) -> [b, s, ...]`:
    sample s of face i from `fold_in(fold_in(key, i), s)`, each face through the model alone."""

    def build():
        def one(p, y, i, s, base_key):
            k = jax.random.fold_in(jax.random.fold_in(base_key, i), s)
            return module.sample(p, y[None], k, temperature, config=config)[0]

        over_samples = jax.vmap(one, in_axes=(None, None, None, 0, None))
        return jax.jit(jax.vmap(over_samples, in_axes=(None, 0, 0, None, None)))

    return _compiled("sample", module, config, (float(temperature),), build)


def parzen_log_likelihoods(module, params, config, chunks: Iterable[Chunk], key: Array, *,
                           num_samples: int, sigmas: Sequence[float], temperature: float = 1.0,
                           sample_chunk: int = 50, progress: ProgressFn | None = None,
                           total: int | None = None) -> np.ndarray:
    """Parzen-window conditional log-likelihoods of each face for a grid of σ.

    For face i with attributes y_i, S faces are generated from y_i (`module.sample` at
    `temperature`; sample s from the key `fold_in(fold_in(key, i), s)`), and

        log p̂(x_i | y_i) = log (1/S) Σ_s N(x_i; x̂_{i,s}, σ² I)

    (`metrics.parzen_log_likelihood_from_fn`, chunk by chunk: at most `chunk.size ×
    sample_chunk` generated faces exist at a time).

    Args:
      module: a model module with `sample(params, attributes, key, temperature, *, config)`.
      params, config: the trained model.
      chunks: `Chunk`s of the split (their size is the number of faces per call).
      key: the base key.
      num_samples: S.
      sigmas: the σ grid, `[K]`.
      temperature: the prior noise scale of the generated faces.
      sample_chunk: generated faces per face per call.
      progress, total: as `conditional_bound`.

    Returns:
      `[K, N]` float64, nats per face for each σ.
    """
    sample_chunk = max(1, min(int(sample_chunk), int(num_samples)))
    encoding = config.data.attribute_encoding
    sampler = _per_face_sampler(module, config, float(temperature))
    rows, done = [], 0
    for chunk in chunks:
        attributes = chunk.attributes(encoding)
        indices = chunk.indices

        def sample_fn(b_slice, s_slice, attributes=attributes, indices=indices):
            # Always the full chunk of faces and a full chunk of samples (one compiled shape);
            # the rows and samples asked for are sliced out.
            ids = np.arange(s_slice.start, s_slice.start + sample_chunk, dtype=np.int32)
            out = sampler(params, attributes, indices, ids, key)
            return out[b_slice, : s_slice.stop - s_slice.start]

        def chunk_progress(d, t, before=done, n=chunk.num_valid):
            _call(progress, before + n * d / t, total or before + n)

        ll = metrics.parzen_log_likelihood_from_fn(
            chunk.images[: chunk.num_valid], sample_fn, int(num_samples), list(sigmas),
            shared=False, test_chunk=chunk.size, sample_chunk=sample_chunk,
            progress=chunk_progress)
        rows.append(np.asarray(ll, np.float64))
        done += chunk.num_valid
    return np.concatenate(rows, axis=1)


def select_parzen_sigma(module, params, config, chunks: Iterable[Chunk], key: Array, *,
                        num_samples: int, sigmas: Sequence[float], **kwargs
                        ) -> tuple[float, np.ndarray]:
    """Chooses σ on validation faces: the σ of the grid with the highest mean log-likelihood.

    Args: as `parzen_log_likelihoods` (the chunks of the validation split).

    Returns:
      `(best_sigma, mean_log_likelihoods)`: a float, and `[K]` the mean over the faces per σ.
    """
    ll = parzen_log_likelihoods(module, params, config, chunks, key, num_samples=num_samples,
                                sigmas=sigmas, **kwargs)
    means = np.mean(ll, axis=1)
    return float(sigmas[int(np.argmax(means))]), means


# ---------------------------------------------------------------------------------------------
# Attribute fidelity


def attribute_fidelity(predict_fn: Callable[[np.ndarray], Array], chunks: Iterable[Chunk], *,
                       generate_fn: Callable[[Chunk], np.ndarray] | None = None,
                       attribute_names: Sequence[str] | None = None,
                       progress: ProgressFn | None = None,
                       total: int | None = None) -> dict[str, Any]:
    """Scores faces with an attribute classifier against the attributes they should show.

    Args:
      predict_fn: faces `[n, H, W, 3]` -> probabilities `[n, A]`.
      chunks: `Chunk`s of the split; their binary attributes (raw value > 0) are the labels.
      generate_fn: `chunk -> faces [n, H, W, 3]` generated from the chunk's attributes; None
        scores the chunk's real faces (the ceiling).
      attribute_names: for the per-attribute report.
      progress, total: as `conditional_bound`.

    Returns:
      A dict: "num_images"; "mean_accuracy"; "mean_auc" (over the attributes with an AUC);
      "undefined_auc" (the attributes whose labels are constant); "per_attribute" ({name:
      {"accuracy", "auc" (None where undefined), "positive_rate"}}).
    """
    probabilities, labels, done = [], [], 0
    for chunk in chunks:
        faces = chunk.images if generate_fn is None else generate_fn(chunk)
        p = np.asarray(predict_fn(faces), np.float64)[: chunk.num_valid]
        probabilities.append(p)
        labels.append(chunk.binary_attributes[: chunk.num_valid])
        done += chunk.num_valid
        _call(progress, done, total or done)
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    accuracy = metrics.attribute_accuracy(probabilities, labels)
    auc = metrics.attribute_auc(probabilities, labels)
    names = list(attribute_names) if attribute_names is not None else \
        [str(a) for a in range(labels.shape[1])]
    defined = np.isfinite(auc)
    return {
        "num_images": int(labels.shape[0]),
        "mean_accuracy": float(np.mean(accuracy)),
        "mean_auc": float(np.mean(auc[defined])) if defined.any() else None,
        "undefined_auc": [n for n, d in zip(names, defined) if not d],
        "per_attribute": {
            n: {"accuracy": float(a), "auc": float(u) if d else None,
                "positive_rate": float(r)}
            for n, a, u, d, r in zip(names, accuracy, auc, defined, labels.mean(axis=0))
        },
    }


# ---------------------------------------------------------------------------------------------
# The whole evaluation


def machine_description() -> dict[str, Any]:
    """The machine and software the numbers come from."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def _fold(key: Array, name: str) -> Array:
    # A stable per-estimator key (the same for every model, so models see the same noise).
    return jax.random.fold_in(key, sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**31))


def _evaluate_model(model: TrainedModel, settings: EvalSettings, data_config, key: Array,
                    predict_fn, classifier_names) -> dict[str, Any]:
    module, params, config = model.module, model.params, model.config
    result: dict[str, Any] = {
        "workdir": model.workdir, "model": model.name, "step": model.step,
        "preset": config.model.get("preset"), "attribute_encoding": model.encoding,
        "seconds": {},
    }
    per_face: dict[str, np.ndarray] = {}
    result["per_face"] = per_face  # taken out (to per_face.npz) by evaluate_workdirs
    tag = f"[{model.name}]"

    def progress(what):
        return Progress(f"{tag} {what}", enabled=settings.show_progress)

    def reader(split, limit, batch):
        return SplitReader(data_config, split, batch_size=batch, limit=limit)

    if "bound" in settings.estimators and hasattr(module, "bound"):
        t0 = time.perf_counter()
        chunks = reader(settings.split, settings.num_test, settings.batch_size)
        terms = conditional_bound(module, params, config, chunks, _fold(key, "bound"),
                                  num_samples=settings.bound_samples, progress=progress("bound"),
                                  total=chunks.num_examples)
        dim = 64 * 64 * 3
        per_face["bound"] = terms["elbo"]
        result["bound"] = {**summarize(terms["elbo"], dim),
                           "log_likelihood": float(np.mean(terms["log_likelihood"])),
                           "kl": float(np.mean(terms["kl"])),
                           "num_samples": settings.bound_samples}
        result["seconds"]["bound"] = time.perf_counter() - t0
    if "iwae" in settings.estimators and hasattr(module, "iwae"):
        t0 = time.perf_counter()
        chunks = reader(settings.split, settings.num_test, settings.batch_size)
        bounds = importance_weighted_bounds(
            module, params, config, chunks, _fold(key, "iwae"),
            num_samples=settings.iwae_samples, sample_chunk=settings.iwae_sample_chunk,
            progress=progress(f"IWAE K<={max(settings.iwae_samples)}"),
            total=chunks.num_examples)
        result["iwae"] = {str(k): summarize(v, 64 * 64 * 3) for k, v in bounds.items()}
        per_face.update({f"iwae_{k}": v for k, v in bounds.items()})
        result["seconds"]["iwae"] = time.perf_counter() - t0
    if "parzen" in settings.estimators and hasattr(module, "sample"):
        t0 = time.perf_counter()
        common_args = dict(num_samples=settings.parzen_samples,
                           temperature=settings.parzen_temperature,
                           sample_chunk=settings.parzen_sample_chunk)
        parzen_key = _fold(key, "parzen")
        val = reader(settings.validation_split, settings.parzen_num_validation,
                     settings.parzen_batch)
        sigma, grid = select_parzen_sigma(
            module, params, config, val, jax.random.fold_in(parzen_key, 0),
            sigmas=settings.parzen_sigmas, progress=progress("Parzen sigma on validation"),
            total=val.num_examples, **common_args)
        test = reader(settings.split, settings.parzen_num_test, settings.parzen_batch)
        ll = parzen_log_likelihoods(
            module, params, config, test, jax.random.fold_in(parzen_key, 1), sigmas=[sigma],
            progress=progress("Parzen test"), total=test.num_examples, **common_args)[0]
        per_face["parzen"] = ll
        at_edge = sigma in (min(settings.parzen_sigmas), max(settings.parzen_sigmas))
        result["parzen"] = {**summarize(ll, 64 * 64 * 3), "sigma": sigma,
                            "sigma_at_grid_edge": bool(at_edge),
                            "validation_mean_by_sigma": {f"{s:g}": float(m) for s, m in
                                                         zip(settings.parzen_sigmas, grid)},
                            "num_validation": val.num_examples,
                            "num_samples": settings.parzen_samples}
        result["seconds"]["parzen"] = time.perf_counter() - t0
    if predict_fn is not None and hasattr(module, "sample"):
        t0 = time.perf_counter()
        chunks = reader(settings.split, settings.num_test, settings.batch_size)
        sampler = _per_face_sampler(module, config, float(settings.fidelity_temperature))
        fid_key = _fold(key, "fidelity")
        zero = np.zeros((1,), np.int32)

        def generate(chunk):
            out = sampler(params, chunk.attributes(model.encoding), chunk.indices, zero, fid_key)
            return out[:, 0]

        result["fidelity"] = attribute_fidelity(
            predict_fn, chunks, generate_fn=generate, attribute_names=classifier_names,
            progress=progress("fidelity"), total=chunks.num_examples)
        result["fidelity"]["temperature"] = settings.fidelity_temperature
        result["seconds"]["fidelity"] = time.perf_counter() - t0
    return result


def evaluate_workdirs(workdirs: Sequence[str], settings: EvalSettings | None = None,
                      output_dir: str | None = None) -> dict[str, Any]:
    """Evaluates trained models on one split and writes `results.json` and `results.md`.

    Every model gets the estimators that apply to it: the bound and IWAE where the model has
    them (cmma, cvae), Parzen and attribute fidelity where it can generate faces from attributes
    (all four). With a classifier, the real faces of the split are scored too (the ceiling).

    Args:
      workdirs: training workdirs (`launch/train.py`), all of one dataset.
      settings: what to compute (`EvalSettings`; defaults suit a CPU).
      output_dir: where `results.json` and `results.md` go (None: nothing is written).

    Returns:
      The results: {"settings", "dataset", "split", "machine", "date", "classifier",
      "models": [one dict per model: "bound", "iwae", "parzen", "fidelity" where they apply,
      "seconds"], "real": {"fidelity"} or None, "comparisons": `paired_differences` (the first
      model minus each other one), "notes": [...]}. With `output_dir`, every face's values go to
      `per_face.npz` as well.

    Raises:
      ValueError: for models of different datasets, or a classifier of other attributes.
      FileNotFoundError: for a workdir without a checkpoint.
    """
    settings = settings or EvalSettings()
    models = [load_model(w) for w in workdirs]
    data_config = data_config_for(models, data_dir=settings.data_dir,
                                  source_dir=settings.source_dir)
    names = models[0].attribute_names
    predict_fn, classifier_info = None, None
    if "fidelity" in settings.estimators and settings.classifier_workdir:
        c_config, c_names, c_params = classifier_lib.load_classifier(settings.classifier_workdir)
        if tuple(c_names) != tuple(names):
            raise ValueError(
                f"The classifier in {settings.classifier_workdir} was trained on the attributes "
                f"of {c_config.data.name!r} ({len(c_names)}), the models on those of "
                f"{data_config.data.name!r} ({len(names)}); train a classifier on the models' "
                "dataset.")
        jitted = jax.jit(functools.partial(classifier_lib.predict, config=c_config))
        predict_fn = functools.partial(jitted, c_params)
        classifier_info = {"workdir": settings.classifier_workdir,
                           "num_steps": int(c_config.training.num_steps)}
    key = jax.random.key(settings.seed)
    results: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "dataset": data_config.data.name,
        "source_dir": data_config.data.get("source_dir"),
        "split": settings.split,
        "settings": settings.to_dict(),
        "machine": machine_description(),
        "classifier": classifier_info,
        "models": [],
        "real": None,
        "notes": [],
    }
    if "fidelity" in settings.estimators and predict_fn is None:
        results["notes"].append("Attribute fidelity skipped: no classifier "
                                "(--classifier_workdir; train one with "
                                "launch/train_classifier.py).")
    for model in models:
        results["models"].append(
            _evaluate_model(model, settings, data_config, key, predict_fn, names))
        parzen = results["models"][-1].get("parzen")
        if parzen and parzen["sigma_at_grid_edge"]:
            results["notes"].append(
                f"{model.name}: the Parzen σ chosen ({parzen['sigma']:g}) is at the edge of the "
                "grid; widen --parzen_sigmas.")
    for note in results["notes"]:
        if settings.show_progress:
            print(f"note: {note}", file=sys.stderr, flush=True)
    per_face = {f"{i}_{m['model']}": m.pop("per_face") for i, m in enumerate(results["models"])}
    results["comparisons"] = paired_differences(list(per_face.values()),
                                                [m["model"] for m in results["models"]])
    if predict_fn is not None:
        chunks = SplitReader(data_config, settings.split, batch_size=settings.batch_size,
                             limit=settings.num_test)
        results["real"] = {"fidelity": attribute_fidelity(
            predict_fn, chunks, attribute_names=names,
            progress=Progress("[real faces] fidelity", enabled=settings.show_progress),
            total=chunks.num_examples)}
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "results.json"), "w") as f:
            json.dump(_json_safe(results), f, indent=2)
        with open(os.path.join(output_dir, "results.md"), "w") as f:
            f.write(markdown_report(results))
        # Every face's value of every estimator, "<model index>_<model>/<estimator>".
        np.savez(os.path.join(output_dir, "per_face.npz"),
                 **{f"{m}/{e}": v for m, d in per_face.items() for e, v in d.items()})
    return results


def paired_differences(per_face: Sequence[Mapping[str, np.ndarray]],
                       names: Sequence[str]) -> list[dict[str, Any]]:
    """The first model minus each other model, estimator by estimator, on the same faces.

    Every model is scored on the same faces with the same estimator, so the difference of two
    models is best judged face by face: its standard error is that of the per-face differences,
    usually far smaller than the spread of either model's values over the faces.

    Args:
      per_face: for each model, {estimator: `[N]` values per face}.
      names: the models' names.

    Returns:
      One dict per (other model, estimator both have): "estimator", "a" (the first model), "b",
      "difference" (mean of a - b, nats), "stderr", "num_images", "a_better_fraction" (the
      fraction of faces where a's value is higher).
    """
    out = []
    if not per_face:
        return out
    reference = per_face[0]
    for other, name in zip(per_face[1:], names[1:]):
        for estimator, a in reference.items():
            if estimator not in other or len(other[estimator]) != len(a):
                continue
            d = np.asarray(a, np.float64) - np.asarray(other[estimator], np.float64)
            out.append({"estimator": estimator, "a": names[0], "b": name,
                        "difference": float(d.mean()),
                        "stderr": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1
                        else float("nan"),
                        "num_images": int(len(d)),
                        "a_better_fraction": float(np.mean(d > 0))})
    return out


def _json_safe(obj):
    """NaN and infinities as null (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


# ---------------------------------------------------------------------------------------------
# Markdown


def _fmt(summary: Mapping[str, Any] | None, key: str = "nats", err: str = "stderr",
         digits: int = 0) -> str:
    if not summary or summary.get(key) is None:
        return "–"
    value = summary[key]
    text = f"{value:,.{digits}f}"
    if summary.get(err) is not None and math.isfinite(summary[err]):
        text += f" ± {summary[err]:,.{digits}f}"
    return text


def _fmt_num(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_report(results: Mapping[str, Any]) -> str:
    """The results as Markdown: a table with one row per model (and the real faces), the
    per-attribute fidelity, and the settings that produced them."""
    models = results["models"]
    ks = sorted({int(k) for m in models for k in (m.get("iwae") or {})})
    lines = [f"## Evaluation on {results['dataset']} ({results['split']} split)", ""]
    header = ["model", "step", "bound (nats)", "bound (bits/dim)"]
    header += [f"IWAE K={k} (nats)" for k in ks]
    header += ["Parzen (nats)", "Parzen σ", "attribute accuracy", "attribute AUC"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for m in models:
        fid = m.get("fidelity") or {}
        parzen = m.get("parzen")
        row = [f"{m['model']} (`{m['workdir']}`)", str(m["step"]), _fmt(m.get("bound")),
               _fmt(m.get("bound"), "bits_per_dim", "bits_per_dim_stderr", 4)]
        row += [_fmt((m.get("iwae") or {}).get(str(k))) for k in ks]
        row += [_fmt(parzen), f"{parzen['sigma']:g}" + (" (grid edge)" if
                parzen.get("sigma_at_grid_edge") else "") if parzen else "–",
                _fmt_num(fid.get("mean_accuracy")), _fmt_num(fid.get("mean_auc"))]
        lines.append("| " + " | ".join(row) + " |")
    real = (results.get("real") or {}).get("fidelity")
    if real:
        row = ["real test faces (classifier ceiling)", "–", "–", "–"] + ["–"] * len(ks)
        row += ["–", "–", _fmt_num(real["mean_accuracy"]), _fmt_num(real["mean_auc"])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Bounds and log-likelihoods: nats per image (mean ± standard error over the "
              "faces), log-densities of x in [0, 1]^12288, higher is better. bits/dim = "
              "-nats / (12288 ln 2), lower is better (negative when the density exceeds 1; "
              "not comparable with discrete 8-bit bits/dim)."]
    with_fid = [m for m in models if m.get("fidelity")]
    if with_fid or real:
        names = list((real or with_fid[0]["fidelity"])["per_attribute"])
        undefined = sorted({n for f in ([real] if real else []) + [m["fidelity"] for m in with_fid]
                            for n in f["undefined_auc"]})
        lines += ["", "### Attribute fidelity per attribute (accuracy / AUC)", ""]
        cols = (["real faces"] if real else []) + [m["model"] for m in with_fid]
        lines.append("| attribute | positive rate | " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * (len(cols) + 2))
        sources = ([real] if real else []) + [m["fidelity"] for m in with_fid]
        for n in names:
            rate = sources[0]["per_attribute"][n]["positive_rate"]
            cells = [f"{s['per_attribute'][n]['accuracy']:.2f} / "
                     f"{_fmt_num(s['per_attribute'][n]['auc'], 2)}" for s in sources]
            lines.append(f"| {n} | {rate:.2f} | " + " | ".join(cells) + " |")
        if undefined:
            lines += ["", "AUC undefined (the attribute is constant over the faces scored; left "
                      "out of the mean AUC): " + ", ".join(undefined) + "."]
    if results.get("comparisons"):
        lines += ["", "### Paired differences (same faces)", "",
                  "| estimator | difference (nats) | faces where the first is higher | faces |",
                  "|---|---|---|---|"]
        for c in results["comparisons"]:
            lines.append(f"| {c['a']} − {c['b']}: {c['estimator'].replace('_', ' K=')} | "
                         f"{c['difference']:+,.1f} ± {c['stderr']:,.1f} | "
                         f"{100 * c['a_better_fraction']:.0f}% | {c['num_images']} |")
    if results.get("notes"):
        lines += [""] + [f"Note: {n}" for n in results["notes"]]
    s = results["settings"]
    lines += ["", "### Settings", "",
              f"- dataset `{results['dataset']}`" + (f" from `{results['source_dir']}`"
                                                     if results.get("source_dir") else "")
              + f", split `{s['split']}`; σ chosen on `{s['validation_split']}`",
              f"- bound and IWAE: {s['num_test'] or 'all'} faces, {s['bound_samples']} sample(s) "
              f"of z for the bound, K = {', '.join(map(str, s['iwae_samples']))} "
              "(nested: K uses the first K samples)",
              f"- Parzen: {s['parzen_num_test'] or 'all'} test faces, "
              f"{s['parzen_num_validation'] or 'all'} validation faces, {s['parzen_samples']} "
              f"generated faces each at temperature {s['parzen_temperature']:g}, "
              f"σ grid {', '.join(f'{x:g}' for x in s['parzen_sigmas'])}",
              f"- fidelity: classifier `{(results.get('classifier') or {}).get('workdir')}`, "
              f"generated faces at temperature {s['fidelity_temperature']:g}",
              f"- seed {s['seed']}; {results['date']}",
              f"- machine: {results['machine']['processor']}, {results['machine']['cpu_count']} "
              f"CPUs, {results['machine']['platform']}, jax {results['machine']['jax']} "
              f"({results['machine']['backend']})"]
    times = [f"{m['model']}: " + ", ".join(f"{k} {v:.0f} s" for k, v in m["seconds"].items())
             for m in models]
    lines += ["- time: " + "; ".join(times), ""]
    return "\n".join(lines)
