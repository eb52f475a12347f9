"""Workdirs: what a training run leaves behind, and the one way to load a trained model from it.

A workdir written by the trainer (`cmma_jax.train`) or the classifier (`cmma_jax.classifier`) holds

    config.json        the resolved config of the run
    attributes.json    the dataset's attribute names, in column order
    checkpoints/       Orbax checkpoints (`cmma_jax.checkpoints`)
    metrics.jsonl      one JSON object per logged step
    samples/           sample grids (generative models)
    best/, stopped.json  with the convergence rule (`cmma_jax.convergence`): the best checkpoint,
                       and which rule stopped the run, when

`read_workdir` reads the records without touching a checkpoint; `load_model` and `load_trained`
restore parameters with a template from `jax.eval_shape` of the model's `init_state`, so loading
compiles nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import socket
from typing import Any, Iterator, Mapping

import jax
import ml_collections
import numpy as np

from cmma_jax import checkpoints, convergence, files, presets
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.models import MODELS

CONFIG_FILE = "config.json"
ATTRIBUTES_FILE = "attributes.json"
LOCK_FILE = ".lock"

# Config fields that may change when a run is resumed: how long to train and how often to log,
# sample and save, and where the data is now. Every other field changes the model, the data or
# the optimizer's meaning, and must match the workdir's.
RESUMABLE_FIELDS = frozenset({
    "training.num_steps", "training.log_every", "training.sample_every",
    "training.checkpoint_every", "training.keep_checkpoints", "training.eval_every",
    "training.num_eval", "training.parallelism", "training.steps_per_call",
    "training.stop_patience", "training.stop_min_delta",
    "data.data_dir", "data.prepared_dir", "data.worker_count", "data.options.num_workers",
    "model.conv_impl",
})


class WorkdirMismatchError(ValueError):
    """A run's config or data does not match the workdir it would resume."""


class WorkdirLockedError(RuntimeError):
    """Another run holds the workdir."""


# Fields added to a model's config after workdirs were written without them: (the models that
# have the field, the field, the value that does what those workdirs did). `upgrade_config` fills
# them in, so that an older workdir still resumes and loads.
ADDED_FIELDS: tuple[tuple[tuple[str, ...], str, Any], ...] = (
    (("cvae",), "model.condition_decoder", True),
    (("cmma", "cvae", "cgan", "vlae"), "model.decoder_variance", "pixel"),
    (("cmma", "cvae", "cgan", "vlae"), "model.decoder_sigma", presets.DEFAULT_DECODER_SIGMA),
    (("cmma", "cvae", "cgan", "vlae"), "training.stop_patience", None),
    (("cmma", "cvae", "cgan", "vlae"), "training.stop_min_delta", 0.0),
    (("cmma", "cvae", "cgan", "vlae"), "training.stop_metric", "val_elbo"),
    (("cmma", "cvae", "cgan", "vlae"), "training.kl_warmup_steps", 0),
    (("cmma",), "model.prior_log_var_range", None),
    (("cmma",), "optimizer.prior_lr_scale", None),
    (("cmma", "cvae", "cgan", "vlae"), "training.steps_per_call", 1),
)


def _recorded_options(config: ml_collections.ConfigDict) -> Mapping[str, tuple[Any, Any]]:
    """The data options of `config`'s dataset that a workdir records explicitly (see
    `data.registry.Dataset.recorded_options`); none for a config without a known dataset."""
    from cmma_jax.data import registry  # pylint: disable=g-import-not-at-top (tfds, on use)

    data = config.get("data")
    if data is None or data.get("name") not in registry.REGISTRY or data.get("options") is None:
        return {}
    return registry.get(data.name).recorded_options


def with_recorded_options(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` whose data options that change the faces are set explicitly (an unset
    one takes the builder's default of today), as `write_records` writes them and
    `check_resumable` compares them: a workdir says which faces it was trained on."""
    config = ml_collections.ConfigDict(config.to_dict())
    for option, (default, _) in _recorded_options(config).items():
        if config.data.options.get(option) is None:
            with config.unlocked():
                config.data.options[option] = default
    return config


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A config of an older workdir in today's field names (changes `config` in place).

    Before the data fields were named after the flags, `data.source_dir` was the raw folder and
    `data.data_dir` the prepared cache; today they are `data.data_dir` and `data.prepared_dir`.
    A data option that changes the faces and did not exist when the workdir was written
    (`data.registry.Dataset.recorded_options`, e.g. synthetic_faces' `jitter`) gets the value
    the workdir was trained with.
    Fields added since (`ADDED_FIELDS`) get the value that does what the older code did.
    """
    data = config.get("data")
    if data is not None and "source_dir" in data:
        values = data.to_dict()
        values["prepared_dir"] = values.pop("data_dir", None)
        values["data_dir"] = values.pop("source_dir")
        config.data = ml_collections.ConfigDict(values)
    for option, (_, before) in _recorded_options(config).items():
        if option not in config.data.options:  # written before the option existed
            with config.unlocked():
                config.data.options[option] = before
    model_name = config.get("model", {}).get("name")
    for models, field, value in ADDED_FIELDS:
        section, name = field.split(".")
        if model_name in models and section in config and name not in config[section]:
            with config.unlocked():
                config[section][name] = value
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


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_differences(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict,
                       ignore=RESUMABLE_FIELDS) -> list[tuple[str, Any, Any]]:
    """`(field, old value, new value)` for every field that differs, except `ignore`d ones.
    A field missing on one side counts as None (configs of older versions lack newer fields)."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k) != b.get(k)]


# Data options that say only how the data is read, not which faces are in which split.
_READING_OPTIONS = ("num_workers",)


def split_option_differences(a, b) -> list[str]:
    """The builder options (`data.options`) of two data sections that would change which faces
    are in which split, as "option: a != b" (the raw folder may have moved: it is not compared)."""
    options_a = dict((a.get("options") or {}))
    options_b = dict((b.get("options") or {}))
    return [f"{k}: {options_a.get(k)!r} != {options_b.get(k)!r}"
            for k in sorted(set(options_a) | set(options_b))
            if k not in _READING_OPTIONS and options_a.get(k) != options_b.get(k)]


def config_flag(field: str, value: Any) -> str:
    """The command-line flag that sets a config field to `value` (shell-quoted where needed), e.g.
    `--config.model.decoder_variance=pixel`, `"--config.model.decoder_log_var_range=(-10.0,4.0)"`."""
    if isinstance(value, (list, tuple)):
        text = "(" + ",".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    else:
        text = str(value)
    flag = f"--config.{field}={text}"
    return f'"{flag}"' if any(c in text for c in " ()'\"") else flag


def check_resumable(workdir: str, config: ml_collections.ConfigDict,
                    attribute_names: tuple[str, ...] | list[str] | None = None) -> None:
    """Refuses to run `config` in a workdir written with other settings (nothing is written).

    Fields of `RESUMABLE_FIELDS` may differ (a longer run, other intervals, data moved);
    any other difference, or other attribute names, raises. A workdir without a checkpoint
    (a run that died before its first one) holds nothing to protect and takes any config.

    Raises:
      WorkdirMismatchError: listing each differing field with its old and new value, and how to
        start fresh.
    """
    if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        return
    if checkpoints.latest_step(workdir) is None and not os.path.isdir(
            os.path.join(workdir, checkpoints.DAMAGED_DIR)):
        # A run that stopped before its first checkpoint (a bad flag, an error at the first
        # step): nothing trained to protect. This run starts afresh and rewrites the records.
        return
    old, old_names = read_workdir(workdir)
    fresh = (f"Resume with the workdir's settings, or start fresh with another --workdir (or "
             f"delete {workdir}).")
    differences = config_differences(old, with_recorded_options(config))
    if differences:
        lines = "\n".join(f"  {k}: {a!r} (workdir) != {b!r} (this run)" for k, a, b in differences)
        flags = " ".join(config_flag(k, a) for k, a, _ in differences)
        raise WorkdirMismatchError(
            f"{workdir} holds a run with other settings; these fields change the model, the data "
            f"or the optimizer and must match to resume:\n{lines}\n{fresh} The workdir's "
            f"settings: {flags}")
    if attribute_names is not None and tuple(attribute_names) != tuple(old_names):
        raise WorkdirMismatchError(
            f"{workdir} holds a run on other attributes ({len(old_names)}: {', '.join(old_names[:5])}"
            f", ...) than this run's data ({len(attribute_names)}). {fresh}")


@contextlib.contextmanager
def lock(workdir: str, enabled: bool = True) -> Iterator[None]:
    """Holds the workdir for one run: an exclusive OS lock on `<workdir>/.lock`, which the OS
    releases when the process ends, however it ends (a `kill -9` never leaves it stuck).

    Only process 0 of a multi-host run takes it (`enabled`); the others work under its lock.

    Raises:
      WorkdirLockedError: naming the workdir and the holder (host, PID, since when).
    """
    if not enabled:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(path) as f:
                holder = f.read().strip() or "unknown"
            raise WorkdirLockedError(
                f"{workdir} is in use by another run ({holder}). Wait for it to finish or stop "
                "it, or use another --workdir.") from None
        os.ftruncate(fd, 0)
        since = datetime.datetime.now().isoformat(timespec="seconds")
        os.write(fd, f"host {socket.gethostname()}, PID {os.getpid()}, since {since}".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def write_records(workdir: str, config: ml_collections.ConfigDict,
                  attribute_names: tuple[str, ...] | list[str]) -> None:
    """Writes `config.json` and `attributes.json` (process 0 of a run)."""
    os.makedirs(workdir, exist_ok=True)
    config = with_recorded_options(config)
    files.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))
    files.write_json(os.path.join(workdir, ATTRIBUTES_FILE), list(attribute_names), indent=None)


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


def checkpoint_home(workdir: str, step: int | None = None, best: bool = True) -> str:
    """The workdir whose `checkpoints/` a loader reads: `<workdir>/best` (the best checkpoint of
    the convergence rule, `cmma_jax.convergence`) when `best`, no `step` is asked for and the
    workdir has one; else `workdir` itself (its latest checkpoint, or `step`)."""
    home = convergence.best_workdir(workdir)
    if best and step is None and checkpoints.latest_step(home) is not None:
        return home
    return workdir


def _restore(workdir: str, step: int | None, best: bool = True):
    config, names = read_workdir(workdir)
    model_lib = _model_lib(config, workdir)
    example = example_batch(int(config.training.batch_size), len(names))
    abstract = jax.eval_shape(lambda k: model_lib.init_state(k, config, example),
                              jax.random.key(0))
    state, step = checkpoints.restore_state(checkpoint_home(workdir, step, best), abstract, step)
    return config, names, model_lib, state, step


def load_trained(workdir: str, step: int | None = None, *, best: bool = True):
    """A trained model from a workdir: its config, attribute names and train state.

    Args:
      workdir: a workdir written by `cmma_jax.train.train_and_evaluate`.
      step: the checkpoint to load (default: the best one kept by the convergence rule when the
        workdir has one, else the latest).
      best: False to load the latest checkpoint even when there is a best one.

    Returns:
      `(config, attribute_names, state)`; `state.params` feeds the model's functions
      (`MODELS[config.model.name].sample(state.params, ...)` and the like); the state carries
      its `apply_fn` and `tx`.

    Raises:
      FileNotFoundError: if the workdir has no config.json or no checkpoint.
    """
    config, names, _, state, _ = _restore(workdir, step, best)
    return config, names, state


def load_model(workdir: str, step: int | None = None, *, best: bool = True) -> TrainedModel:
    """A trained model from its workdir as a `TrainedModel` (parameters on the host): the best
    checkpoint of the convergence rule when there is one (unless `best=False` or a `step` is
    given), else the latest (`load_trained`).

    Raises:
      FileNotFoundError: if `workdir` is not a training workdir or has no checkpoint.
    """
    config, names, model_lib, state, step = _restore(workdir, step, best)
    return TrainedModel(workdir=workdir, name=config.model.name, model_lib=model_lib,
                        config=config, attribute_names=tuple(names),
                        params=jax.device_get(state.params), step=int(step))
