"""The CMMA paper's protocol in one call: `reproduce(settings, workdir)` (`launch/reproduce.py`).

For every seed it trains the models (cmma, cvae, cgan, vlae by default), trains one attribute
classifier, evaluates each seed's models (Table 2: the bound in nats and bits/dim, IWAE; Table 3:
Parzen with σ chosen on the validation split; attribute fidelity), draws the figures, and writes
one report: per seed, and mean ± standard error across seeds, with the paired per-face differences
of the first model (the CMMA) against each other one.

    settings = reproduce.ReproduceSettings(dataset="lfw", data_dir="../shared/data/lfw",
                                           preset="small", seeds=(0, 1, 2))
    reproduce.reproduce(settings, "runs/lfw_small")

Layout of `workdir`:

    reproduce.json              the settings, and every command run on this workdir
    timings.json                seconds spent per stage (summed over the runs that did the work)
    seed_<s>/<model>/           a training workdir (`train.train_and_evaluate`, training.seed = s)
    classifier/                 the attribute classifier (`classifier.train_classifier`, seed 0)
    evaluation/seed_<s>/        `evaluate.evaluate_workdirs`: results.json, results.md, per_face.npz
    figures/seed_<s>/           `figures.generate_figures`: the PNGs and figures.json (a marker)
    report.md, report.json      the report

Resuming. Run again after a kill, the same call skips what is finished and continues what is not:
a training workdir whose latest checkpoint is at its `num_steps`, or that the convergence rule
stopped (`stopped.json`, `cmma_jax.convergence`), is finished (read from the checkpoint folder, no
parameters loaded), otherwise the trainer resumes it from its checkpoint; an
evaluation is finished when its results.json scores the models' latest checkpoints with the same
settings and is newer than them (the best checkpoint, where the convergence rule kept one);
figures likewise (their figures.json). What is trained must
match the first run: a rerun whose dataset, preset, data options, config overrides or classifier
settings differ from `reproduce.json` is refused with an error naming the fields, and a training
workdir whose config.json differs from the config it would get is refused too. Seeds and models
may be added; `training.num_steps` (an override) and `classifier_steps` may be raised, and
training then continues from the checkpoints, after which evaluation and figures are redone.
Evaluation and figure settings may change: the evaluations and figures they touch are redone.

One process trains a workdir at a time: the trainer locks each workdir for its run
(`workdirs.lock`), and a training workdir held by another process (a reproduce or a
launch/train.py) is skipped with a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import math
import os
import socket
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import ml_collections

from cmma_jax import (checkpoints, classifier, configs, convergence, data, evaluate, figures,
                      files, presets, stats, train, workdirs)
from cmma_jax.evaluate import EvalSettings
from cmma_jax.figures import FigureSettings
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.models import MODELS

STAGES = ("train", "classifier", "evaluate", "figures", "report")
DEFAULT_MODELS = ("cmma", "cvae", "cgan", "vlae")
SETTINGS_FILE = "reproduce.json"
TIMINGS_FILE = "timings.json"
REPORT_MD, REPORT_JSON = "report.md", "report.json"
RESULTS_FILE = "results.json"
FIGURES_MARKER = "figures.json"
CLASSIFIER_DIR = "classifier"
NUM_STEPS = "training.num_steps"
DIM = math.prod(IMAGE_SHAPE)

# Settings that change what is trained: a rerun must match them (but see `_RAISABLE`).
TRAINING_FIELDS = ("dataset", "preset", "data_options", "overrides", "classifier_steps",
                   "classifier_overrides")
# Config fields the settings set themselves; an override may not set them.
_RESERVED = ("model.name", "model.preset", "data.name", "data.data_dir", "data.prepared_dir",
             "training.seed")
# Fields of the evaluation and figure settings that say where things are or how the work is
# chunked, not what is computed (the evaluation's noise does not depend on its chunk sizes).
_NOT_COMPARED = ("data_dir", "prepared_dir", "classifier_workdir", "show_progress", "batch_size",
                 "iwae_sample_chunk", "parzen_batch", "parzen_sample_chunk")


def _plain(value):
    """A JSON-comparable copy: tuples as lists, NaN as None."""
    return json.loads(json.dumps(evaluate.json_safe(value)))


@dataclasses.dataclass(frozen=True)
class ReproduceSettings:
    """What `reproduce` runs.

    Attributes:
      dataset: the dataset name (`cmma_jax.data.DATASETS`: lfw, celeba, synthetic_faces, ...).
      data_dir: the raw folder of lfw/celeba (`data.data_dir`).
      prepared_dir: where prepared datasets are cached (`data.prepared_dir`; None: the default).
      preset: "paper" (the paper's networks and its 500 epochs: the preset's num_steps), "small",
        "tiny" (tests), or "auto" (resolved now: paper on an accelerator, small on a CPU).
      seeds: the training seeds (`training.seed`), one set of models each.
      models: any of cmma, cvae, cgan, vlae; the CMMA is put first, so that the paired
        differences of the evaluation are CMMA − each other model.
      classifier_steps: the attribute classifier's training steps (None: its config's default).
      classifier_overrides: {dotted field: value} of the classifier's config
        (`classifier.get_config`), e.g. {"model.features": (16, 32, 32)}.
      overrides: {dotted field: value} applied to every model's config, e.g.
        {"training.num_steps": 10000}; a field that a model's config lacks is left out for that
        model (it must exist in at least one).
      data_options: the dataset builder's options (`data.options`), e.g. {"num_train": 2000}.
      evaluation: `EvalSettings` (its classifier_workdir, data_dir and prepared_dir are set here).
      figures: `FigureSettings` (its data_dir and prepared_dir are set here).
      max_epochs: the training budget in epochs of the training split (None: the preset's or
        the override's `training.num_steps`): num_steps = ceil(max_epochs · faces / batch).
        With the convergence rule (`training.stop_patience` among the overrides) the models with
        a bound stop earlier when their validation bound stops improving; the others (CGAN,
        MMD-VLAE) have no bound to watch and train the whole budget.
    """

    dataset: str = "synthetic_faces"
    data_dir: str | None = None
    prepared_dir: str | None = None
    preset: str = "small"
    seeds: tuple[int, ...] = (0,)
    models: tuple[str, ...] = DEFAULT_MODELS
    classifier_steps: int | None = None
    classifier_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    figures: FigureSettings = dataclasses.field(default_factory=FigureSettings)
    max_epochs: float | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("preset", presets.resolve_preset_name(self.preset))
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct integers, at least one; got {self.seeds}.")
        set_("seeds", seeds)
        models = tuple(self.models)
        unknown = sorted(set(models) - set(MODELS))
        if unknown or not models or len(set(models)) != len(models):
            raise ValueError(f"models must be distinct names of {sorted(MODELS)}; got "
                             f"{list(self.models)}.")
        set_("models", tuple(sorted(models, key=lambda m: m != "cmma")))  # stable: cmma first
        if self.max_epochs is not None and not (math.isfinite(float(self.max_epochs))
                                                and float(self.max_epochs) > 0):
            raise ValueError(f"max_epochs must be a positive number, got {self.max_epochs}.")
        if self.classifier_steps is not None and int(self.classifier_steps) < 1:
            raise ValueError(f"classifier_steps must be positive, got {self.classifier_steps}.")
        for name in ("overrides", "classifier_overrides", "data_options"):
            set_(name, dict(getattr(self, name)))
        reserved = sorted(set(self.overrides) & set(_RESERVED))
        if reserved:
            raise ValueError(f"Overrides may not set {reserved}: they come from the settings "
                             "(dataset, data_dir, prepared_dir, preset, seeds).")
        if not isinstance(self.evaluation, EvalSettings):
            set_("evaluation", EvalSettings(**dict(self.evaluation)))
        if not isinstance(self.figures, FigureSettings):
            set_("figures", FigureSettings(**dict(self.figures)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("evaluation", "figures")}
        out["evaluation"] = self.evaluation.to_dict()
        out["figures"] = dataclasses.asdict(self.figures)
        return _plain(out)


# ---------------------------------------------------------------------------------------------
# Configs


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
    if settings.data_dir is not None:
        config.data.data_dir = settings.data_dir
    if settings.prepared_dir is not None:
        config.data.prepared_dir = settings.prepared_dir
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


# ---------------------------------------------------------------------------------------------
# The workdir: paths, what is finished


def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"seed_{seed}")


def training_dir(workdir: str, seed: int, model: str) -> str:
    return os.path.join(seed_dir(workdir, seed), model)


def evaluation_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, "evaluation", f"seed_{seed}")


def figures_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, "figures", f"seed_{seed}")


def training_finished(workdir: str, num_steps: int) -> bool:
    """Whether the workdir's latest checkpoint is at `num_steps`, or the convergence rule stopped
    the run at its latest checkpoint, and that checkpoint is not damaged (a damaged one is not
    finished: the trainer moves it aside and trains again from the newest that verifies)."""
    latest = checkpoints.latest_step(workdir)
    if latest is None:
        return False
    stopped = convergence.read_stopped(workdir)
    ended = latest == int(num_steps) or bool(
        stopped and stopped["rule"] == convergence.CONVERGED and stopped["step"] == latest)
    if ended and checkpoints.verify(workdir, latest) is False:
        _say(f"{checkpoints.step_directory(workdir, latest)} is damaged: trained again from the "
             "newest checkpoint that verifies")
        return False
    return ended


def loaded_step(workdir: str) -> int | None:
    """The step that evaluation and figures load from a training workdir: the best checkpoint's
    where the convergence rule kept one, else the latest (`workdirs.checkpoint_home`)."""
    return checkpoints.latest_step(workdirs.checkpoint_home(workdir))


def _checkpoint_mtime(workdir: str) -> float:
    """When the checkpoint that loaders read was written (the newest file in its folder: the
    best checkpoint where the convergence rule kept one, else the latest); 0 without one."""
    workdir = workdirs.checkpoint_home(workdir)
    step = checkpoints.latest_step(workdir)
    if step is None:
        return 0.0
    path = os.path.join(checkpoints.directory(workdir), str(step))
    times = [os.path.getmtime(path)] if os.path.exists(path) else [0.0]
    for root, _, names in os.walk(path):
        times += [os.path.getmtime(os.path.join(root, f)) for f in names]
    return max(times)


def _check_workdir_config(path: str, wanted, *, generative: bool = True) -> None:
    """Fails before any work if a training workdir holds another run (the trainer's own checks,
    `workdirs.check_resumable` and `train.check_not_past_the_end`, made up front, on the config
    as the trainer resolves it; the classifier's has no preset)."""
    workdirs.check_resumable(path, presets.resolve_config(wanted) if generative else wanted)
    train.check_not_past_the_end(path, int(wanted.training.num_steps))


# ---------------------------------------------------------------------------------------------
# The settings record (reproduce.json) and the timings


def settings_differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The fields of `TRAINING_FIELDS` that differ between a stored and a new `to_dict()`, as
    "field: stored -> new"; `training.num_steps` in the overrides and `classifier_steps` may
    grow."""
    out = []
    for name in TRAINING_FIELDS:
        a, b = stored.get(name), new.get(name)
        if name == "overrides":
            a, b = dict(a or {}), dict(b or {})
            if a.get(NUM_STEPS) is not None and b.get(NUM_STEPS) is not None \
                    and int(b[NUM_STEPS]) >= int(a[NUM_STEPS]):
                a.pop(NUM_STEPS), b.pop(NUM_STEPS)
        if name == "classifier_steps" and a is not None and b is not None and int(b) >= int(a):
            continue
        if a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def _read_json(path: str, default=None):
    """The JSON in `path`, or `default` if there is none. An unreadable file (cut by an older
    version's non-atomic write) counts as absent, with a warning: what it recorded is redone."""
    if not os.path.exists(path):
        return default
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        _say(f"warning: {path} is unreadable ({type(e).__name__}: {e}); it is redone")
        return default


def _write_json(path: str, value) -> None:
    files.write_json(path, evaluate.json_safe(value))


def _merge_settings(workdir: str, settings: ReproduceSettings
                    ) -> tuple[dict[str, Any], ReproduceSettings]:
    """Checks the settings against reproduce.json and merges the seeds and models of earlier runs.

    Returns the record (not yet written) and the settings of the whole workdir."""
    path = os.path.join(workdir, SETTINGS_FILE)
    record = _read_json(path)
    if record is None:
        return {"runs": []}, settings
    diff = settings_differences(record["settings"], settings.to_dict())
    if diff:
        raise ValueError(
            f"{workdir} holds a run with other settings ({path}); they differ in "
            + "; ".join(diff) + ". Use another --workdir, or the same settings (seeds and "
            "models may be added; training.num_steps and classifier_steps may be raised).")
    old = record["settings"]
    seeds = tuple(dict.fromkeys([*old["seeds"], *settings.seeds]))
    models = tuple(dict.fromkeys([*old["models"], *settings.models]))
    return record, dataclasses.replace(settings, seeds=seeds, models=models)


@contextlib.contextmanager
def _records_lock(workdir: str) -> Iterator[None]:
    """Holds `<workdir>/.records.lock` while reproduce.json or timings.json is read, changed and
    written, so that two reproductions on one workdir (one training, one evaluating) keep every
    record. Held for milliseconds; the OS releases it when the process ends."""
    with open(os.path.join(workdir, ".records.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _record_run(workdir: str, record: dict[str, Any], settings: ReproduceSettings,
                command: str | None, stages: Sequence[str]) -> str:
    """Appends this run to reproduce.json (read again under the lock: another reproduction may
    have added its own run meanwhile); returns the run's id."""
    run_id = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    path = os.path.join(workdir, SETTINGS_FILE)
    with _records_lock(workdir):
        stored = _read_json(path) or {"runs": []}
        stored["settings"] = settings.to_dict()
        stored["runs"].append({"command": command, "stages": list(stages),
                               "date": datetime.datetime.now().isoformat(timespec="seconds"),
                               "host": socket.gethostname(), "seconds": None, "id": run_id})
        _write_json(path, stored)
    record.clear()
    record.update(stored)
    return run_id


def _finish_run(workdir: str, run_id: str, seconds: float) -> dict[str, Any]:
    """Records this run's seconds in reproduce.json (under the lock); returns the record."""
    path = os.path.join(workdir, SETTINGS_FILE)
    with _records_lock(workdir):
        stored = _read_json(path) or {"runs": []}
        for run in stored["runs"]:
            if run.get("id") == run_id:
                run["seconds"] = seconds
        _write_json(path, stored)
    return stored


class _Timings:
    """Seconds per stage, summed over the runs that worked on it (timings.json)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, TIMINGS_FILE)

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            # Read again under the lock: another reproduction may have added its seconds.
            with _records_lock(self.workdir):
                values = _read_json(self.path, {})
                values[name] = values.get(name, 0.0) + time.perf_counter() - start
                _write_json(self.path, values)


# ---------------------------------------------------------------------------------------------
# Stages


def _say(message: str) -> None:
    print(f"[reproduce] {message}", flush=True)


def _train_stage(workdir, settings, timings) -> None:
    for seed in settings.seeds:
        for model in settings.models:
            path = training_dir(workdir, seed, model)
            config = model_config(settings, model, seed)
            num_steps = int(config.training.num_steps)
            _check_workdir_config(path, config)
            if training_finished(path, num_steps):
                _say(f"seed {seed} {model}: trained ({num_steps} steps), skipped")
                continue
            start = checkpoints.latest_step(path)
            _say(f"seed {seed} {model}: training to step {num_steps}"
                 + (f", resuming from step {start}" if start else "") + f" in {path}")
            try:
                with timings.time(f"train seed_{seed} {model}"):
                    train.train_and_evaluate(config, path)
            except workdirs.WorkdirLockedError as e:
                _say(f"seed {seed} {model}: skipped: {e}")


def _classifier_stage(workdir, settings, timings) -> None:
    path = os.path.join(workdir, CLASSIFIER_DIR)
    config = classifier_config(settings)
    num_steps = int(config.training.num_steps)
    if training_finished(path, num_steps):
        _say(f"classifier: trained ({num_steps} steps), skipped")
        return
    _say(f"classifier: training to step {num_steps} in {path}")
    try:
        with timings.time("classifier"):
            scores = classifier.train_classifier(config, path)
    except workdirs.WorkdirLockedError as e:
        _say(f"classifier: skipped: {e}")
        return
    _say(f"classifier: validation accuracy {scores['mean_accuracy']:.3f}, "
         f"AUC {scores['mean_auc']:.3f}")


def _comparable(settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _plain(settings_dict).items() if k not in _NOT_COMPARED}


def _models_ready(workdir, settings, seed) -> tuple[list[str], str | None]:
    """The seed's training workdirs (cmma first), or None and why they are not ready."""
    paths = []
    for model in settings.models:
        path = training_dir(workdir, seed, model)
        num_steps = int(model_config(settings, model, seed).training.num_steps)
        if not training_finished(path, num_steps):
            return paths, f"{model} not trained to step {num_steps} yet"
        paths.append(path)
    return paths, None


def _classifier_ready(workdir, settings) -> bool:
    return training_finished(os.path.join(workdir, CLASSIFIER_DIR),
                             int(classifier_config(settings).training.num_steps))


def _eval_settings(workdir, settings) -> EvalSettings:
    return dataclasses.replace(settings.evaluation,
                               classifier_workdir=os.path.join(workdir, CLASSIFIER_DIR),
                               data_dir=settings.data_dir, prepared_dir=settings.prepared_dir)


def evaluation_finished(output_dir: str, paths: Sequence[str], models: Sequence[str],
                        eval_settings: EvalSettings, classifier_dir: str | None) -> str | None:
    """None if `output_dir/results.json` scores these models' latest checkpoints (and the
    classifier's) with these settings and is newer than them; else why not."""
    path = os.path.join(output_dir, RESULTS_FILE)
    results = _read_json(path)
    if results is None:
        return "not evaluated yet"
    if [m["model"] for m in results["models"]] != list(models):
        return "the models changed"
    if [m["step"] for m in results["models"]] != [loaded_step(p) for p in paths]:
        return "the models were trained further"
    if _comparable(results["settings"]) != _comparable(eval_settings.to_dict()):
        return "the evaluation settings changed"
    newer = [_checkpoint_mtime(p) for p in paths]
    if classifier_dir is not None:
        info = results.get("classifier") or {}
        if info.get("num_steps") != checkpoints.latest_step(classifier_dir):
            return "the classifier changed"
        newer.append(_checkpoint_mtime(classifier_dir))
    if os.path.getmtime(path) < max(newer):
        return "a checkpoint is newer than the results"
    return None


def _evaluate_stage(workdir, settings, timings) -> None:
    eval_settings = _eval_settings(workdir, settings)
    uses_classifier = "fidelity" in eval_settings.estimators
    classifier_dir = os.path.join(workdir, CLASSIFIER_DIR) if uses_classifier else None
    for seed in settings.seeds:
        paths, waiting = _models_ready(workdir, settings, seed)
        if waiting is None and uses_classifier and not _classifier_ready(workdir, settings):
            waiting = "the classifier is not trained yet"
        if waiting:
            _say(f"seed {seed} evaluation: waiting ({waiting})")
            continue
        out = evaluation_dir(workdir, seed)
        why = evaluation_finished(out, paths, settings.models, eval_settings, classifier_dir)
        if why is None:
            _say(f"seed {seed} evaluation: done, skipped")
            continue
        _say(f"seed {seed} evaluation ({why}) -> {out}")
        with timings.time(f"evaluate seed_{seed}"):
            evaluate.evaluate_workdirs(paths, eval_settings, out)


def _figure_settings(settings, workdir: str | None = None) -> FigureSettings:
    """The figure settings with the data's folders, and the protocol's classifier (its verdict
    beside the figures) once it is trained."""
    classifier_dir = None if workdir is None else os.path.join(workdir, CLASSIFIER_DIR)
    if classifier_dir is not None and checkpoints.latest_step(classifier_dir) is None:
        classifier_dir = None
    return dataclasses.replace(settings.figures, data_dir=settings.data_dir,
                               prepared_dir=settings.prepared_dir,
                               classifier_workdir=classifier_dir)


def _figures_record(paths, figure_settings) -> dict[str, Any]:
    return {"settings": _comparable(dataclasses.asdict(figure_settings)),
            "workdirs": [os.path.basename(os.path.normpath(p)) for p in paths],
            "steps": [loaded_step(p) for p in paths]}


def _figures_stage(workdir, settings, timings) -> None:
    figure_settings = _figure_settings(settings, workdir)
    for seed in settings.seeds:
        paths, waiting = _models_ready(workdir, settings, seed)
        if waiting:
            _say(f"seed {seed} figures: waiting ({waiting})")
            continue
        out = figures_dir(workdir, seed)
        marker = os.path.join(out, FIGURES_MARKER)
        wanted = _figures_record(paths, figure_settings)
        stored = _read_json(marker)
        if stored is not None and {k: stored.get(k) for k in wanted} == _plain(wanted) \
                and os.path.getmtime(marker) >= max(_checkpoint_mtime(p) for p in paths):
            _say(f"seed {seed} figures: done, skipped")
            continue
        _say(f"seed {seed} figures -> {out}")
        with timings.time(f"figures seed_{seed}"):
            written = figures.generate_figures(paths, out, figure_settings,
                                               log=lambda line: _say(f"seed {seed} {line}"))
        _write_json(marker, {**wanted, "written": written})


# ---------------------------------------------------------------------------------------------
# The report: numbers per seed, across seeds, paired differences


mean_stderr = stats.mean_stderr


def model_numbers(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The numbers of one model's evaluation: {name: {"value", "stderr" (over faces, or None)}}.

    Names: "bound" (nats), "bound_bits_per_dim", "iwae_<K>" (nats), "parzen" (nats),
    "parzen_sigma", "fidelity_accuracy", "fidelity_auc" (means over attributes)."""
    out: dict[str, dict[str, Any]] = {}

    def put(name, value, stderr=None):
        if value is not None:
            out[name] = {"value": float(value), "stderr": None if stderr is None else
                         float(stderr)}

    bound = result.get("bound")
    if bound:
        put("bound", bound.get("nats"), bound.get("stderr"))
        put("bound_bits_per_dim", bound.get("bits_per_dim"), bound.get("bits_per_dim_stderr"))
    for k, s in sorted((result.get("iwae") or {}).items(), key=lambda kv: int(kv[0])):
        put(f"iwae_{int(k)}", s.get("nats"), s.get("stderr"))
    parzen = result.get("parzen")
    if parzen:
        put("parzen", parzen.get("nats"), parzen.get("stderr"))
        put("parzen_sigma", parzen.get("sigma"))
    fid = result.get("fidelity")
    if fid:
        put("fidelity_accuracy", fid.get("mean_accuracy"))
        put("fidelity_auc", fid.get("mean_auc"))
    return out


def seed_differences(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first model minus each other one in one seed's results: the paired per-face
    differences of the evaluation ("comparisons": bound, IWAE, Parzen, with their per-face
    standard errors) and the differences of the mean attribute accuracy and AUC (no per-face
    standard error)."""
    out = [{"a": c["a"], "b": c["b"], "quantity": c["estimator"], "difference": c["difference"],
            "stderr": c.get("stderr"), "num_images": c.get("num_images"),
            "a_better_fraction": c.get("a_better_fraction")}
           for c in results.get("comparisons") or []]
    models = results["models"]
    if models:
        first = model_numbers(models[0])
        for other in models[1:]:
            numbers = model_numbers(other)
            for q in ("fidelity_accuracy", "fidelity_auc"):
                if q in first and q in numbers:
                    out.append({"a": models[0]["model"], "b": other["model"], "quantity": q,
                                "difference": first[q]["value"] - numbers[q]["value"],
                                "stderr": None, "num_images": None, "a_better_fraction": None})
    return out


def summarize_seeds(results_by_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per seed and across seeds, from each seed's `evaluate_workdirs` results.

    Returns:
      {"seeds", "models" (in order of first appearance), "per_seed": {seed: {model: numbers}}
      (`model_numbers`), "across_seeds": {model: {number: mean_stderr of the seeds' values}},
      "differences": {"per_seed": {seed: [...]} (`seed_differences`), "across_seeds": [{"a",
      "b", "quantity", "mean", "stderr", "n", "values"}]}, "real": the classifier on the real
      faces {"fidelity_accuracy", "fidelity_auc"} across seeds}. Seeds are keyed by str.
      Standard errors across seeds: std (ddof=1) / sqrt(number of seeds).
    """
    seeds = sorted(int(s) for s in results_by_seed)
    models: list[str] = []
    per_seed, diffs, real = {}, {}, {"fidelity_accuracy": [], "fidelity_auc": []}
    for seed in seeds:
        results = results_by_seed[seed]
        per_seed[str(seed)] = {m["model"]: model_numbers(m) for m in results["models"]}
        models += [m["model"] for m in results["models"] if m["model"] not in models]
        diffs[str(seed)] = seed_differences(results)
        fid = (results.get("real") or {}).get("fidelity")
        if fid:
            real["fidelity_accuracy"].append(fid.get("mean_accuracy"))
            real["fidelity_auc"].append(fid.get("mean_auc"))
    across = {}
    for model in models:
        names = list(dict.fromkeys(n for s in per_seed.values() for n in s.get(model, {})))
        across[model] = {n: {**mean_stderr([s[model][n]["value"] for s in per_seed.values()
                                            if n in s.get(model, {})])} for n in names}
    keys = list(dict.fromkeys((d["a"], d["b"], d["quantity"]) for s in diffs.values()
                              for d in s))
    across_diffs = []
    for a, b, q in keys:
        values = [d["difference"] for s in seeds for d in diffs[str(s)]
                  if (d["a"], d["b"], d["quantity"]) == (a, b, q)]
        across_diffs.append({"a": a, "b": b, "quantity": q, **mean_stderr(values),
                             "values": values})
    return {"seeds": seeds, "models": models, "per_seed": per_seed, "across_seeds": across,
            "differences": {"per_seed": diffs, "across_seeds": across_diffs},
            "real": {k: mean_stderr(v) for k, v in real.items() if v}}


# Formatting as evaluate/report.py: nats to the unit, bits/dim to 4 decimals, accuracies and AUCs
# to 3, differences in nats to 1 with a sign.
_DIGITS = {"bound_bits_per_dim": 4, "fidelity_accuracy": 3, "fidelity_auc": 3, "parzen_sigma": 3}


def _number(value, stderr=None, digits=0, sign=False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:{'+' if sign else ''},.{digits}f}"
    if stderr is not None and math.isfinite(stderr):
        text += f" ± {stderr:,.{digits}f}"
    return text


def _label(name: str) -> str:
    if name.startswith("iwae_"):
        return f"IWAE K={name[5:]} (nats)"
    return {"bound": "bound (nats)", "bound_bits_per_dim": "bound (bits/dim)",
            "parzen": "Parzen (nats)", "parzen_sigma": "Parzen σ",
            "fidelity_accuracy": "attribute accuracy", "fidelity_auc": "attribute AUC"}[name]


def _quantity(name: str) -> str:
    return {"bound": "bound", "parzen": "Parzen", "fidelity_accuracy": "attribute accuracy",
            "fidelity_auc": "attribute AUC"}.get(name, name.replace("iwae_", "IWAE K="))


def _columns(tables: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[str]:
    order = ["bound", "bound_bits_per_dim"]
    names = {n for t in tables for numbers in t.values() for n in numbers}
    ks = sorted(int(n[5:]) for n in names if n.startswith("iwae_"))
    order += [f"iwae_{k}" for k in ks] + ["parzen", "parzen_sigma", "fidelity_accuracy",
                                          "fidelity_auc"]
    return [n for n in order if n in names]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown(summary: Mapping[str, Any], *, settings: Mapping[str, Any],
             runs: Sequence[Mapping[str, Any]], timings: Mapping[str, float],
             pending: Mapping[int, str], results_by_seed: Mapping[int, Mapping[str, Any]]
             ) -> str:
    """The report as Markdown."""
    seeds, models = summary["seeds"], summary["models"]
    n = len(seeds)
    lines = [f"# Reproducing the CMMA paper: {settings['dataset']}, preset "
             f"`{settings['preset']}`, {n} seed(s)", ""]
    lines += [f"Seeds {', '.join(map(str, seeds)) or 'none yet'}; models "
              f"{', '.join(models) or ', '.join(settings['models'])}. Nats per image (higher is "
              "better), log-densities of x in [0, 1]^12288; bits/dim = -nats / (12288 ln 2) "
              "(lower is better)."]
    if pending:
        lines += ["", "Not in this report yet: " + "; ".join(
            f"seed {s} ({why})" for s, why in sorted(pending.items())) + "."]
    # Across seeds.
    across = summary["across_seeds"]
    cols = _columns([{m: across[m] for m in models}])
    if n:
        lines += ["", f"## Across seeds (mean ± standard error over {n} seed(s))", "",
                  "Standard error across seeds = standard deviation over the seeds (ddof 1) / "
                  f"√{n}; with one seed there is none.", ""]
        lines.append("| model | " + " | ".join(_label(c) for c in cols) + " |")
        lines.append("|" + "---|" * (len(cols) + 1))
        for m in models:
            cells = [_number(across[m][c]["mean"], across[m][c]["stderr"], _DIGITS.get(c, 0))
                     if c in across[m] else "–" for c in cols]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        real = summary.get("real") or {}
        if real:
            lines += ["", "The classifier on the real test faces (the ceiling): accuracy "
                      f"{_number(real['fidelity_accuracy']['mean'], None, 3)}, AUC "
                      f"{_number(real['fidelity_auc']['mean'], None, 3)}."]
        diffs = summary["differences"]["across_seeds"]
        if diffs:
            lines += ["", f"### Paired differences across seeds (mean ± standard error over "
                      f"{n} seed(s))", "",
                      "Each seed's difference is the mean over the same test faces of the "
                      "per-face difference (bound, IWAE, Parzen) or the difference of the mean "
                      "attribute accuracy and AUC; positive: the first model is higher.", "",
                      "| difference | across seeds | per seed |", "|---|---|---|"]
            for d in diffs:
                digits = 3 if d["quantity"].startswith("fidelity") else 1
                per = ", ".join(_number(v, None, digits, sign=True) for v in d["values"])
                lines.append(f"| {d['a']} − {d['b']}: {_quantity(d['quantity'])} | "
                             f"{_number(d['mean'], d['stderr'], digits, sign=True)} | {per} |")
    # Per seed.
    for seed in seeds:
        numbers = summary["per_seed"][str(seed)]
        results = results_by_seed[seed]
        cols = _columns([numbers])
        lines += ["", f"## Seed {seed}", "",
                  f"Mean ± standard error over the test faces; evaluation in "
                  f"`evaluation/seed_{seed}/results.md` (per attribute, settings), figures in "
                  f"`figures/seed_{seed}/`.", ""]
        lines.append("| model | step | " + " | ".join(_label(c) for c in cols) + " |")
        lines.append("|" + "---|" * (len(cols) + 2))
        for m in results["models"]:
            row = numbers[m["model"]]
            cells = [_number(row[c]["value"], row[c]["stderr"], _DIGITS.get(c, 0))
                     if c in row else "–" for c in cols]
            lines.append(f"| {m['model']} | {m['step']} | " + " | ".join(cells) + " |")
        seed_diffs = summary["differences"]["per_seed"][str(seed)]
        if seed_diffs:
            lines += ["", "| difference | per face (same faces) | faces where the first is "
                      "higher | faces |", "|---|---|---|---|"]
            for d in seed_diffs:
                digits = 3 if d["quantity"].startswith("fidelity") else 1
                frac = d.get("a_better_fraction")
                lines.append(f"| {d['a']} − {d['b']}: {_quantity(d['quantity'])} | "
                             f"{_number(d['difference'], d['stderr'], digits, sign=True)} | "
                             f"{'–' if frac is None else f'{100 * frac:.0f}%'} | "
                             f"{d['num_images'] or '–'} |")
        for note in results.get("notes") or []:
            lines.append(f"\nNote: {note}")
    # Time and commands.
    lines += ["", "## Time", "", "Seconds spent per stage, summed over the runs that did the "
              "work (a stage skipped as finished adds nothing; trainings done outside "
              "`reproduce` are not counted).", "", "| stage | time |", "|---|---|"]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {_duration(seconds)} |")
    totals: dict[str, float] = {}
    for name, seconds in timings.items():
        totals[name.split()[0]] = totals.get(name.split()[0], 0.0) + seconds
    if totals:
        lines.append("| **total** | " + ", ".join(f"{k} {_duration(v)}" for k, v in
                                                   totals.items())
                     + f"; all {_duration(sum(totals.values()))} |")
    lines += ["", "## Commands", ""]
    for run in runs:
        lines.append(f"- {run.get('date')} on {run.get('host')}, stages "
                     f"{','.join(run.get('stages') or [])}"
                     + (f", {_duration(run['seconds'])}" if run.get("seconds") else "")
                     + f": `{run.get('command') or '(library call)'}`")
    s = settings
    ev = s["evaluation"]
    lines += ["", "## Settings", "",
              f"- dataset `{s['dataset']}`" + (f" from `{s['data_dir']}`" if s.get("data_dir")
                                               else "")
              + (f", options {s['data_options']}" if s.get("data_options") else ""),
              f"- preset `{s['preset']}`" + (f", overrides {s['overrides']}" if s.get("overrides")
                                              else ""),
              f"- classifier: {s.get('classifier_steps') or 'default'} steps"
              + (f", overrides {s['classifier_overrides']}" if s.get("classifier_overrides")
                 else ""),
              f"- evaluation: {ev['num_test'] or 'all'} test faces for the bound, IWAE "
              f"(K = {', '.join(map(str, ev['iwae_samples']))}) and fidelity; Parzen on "
              f"{ev['parzen_num_test'] or 'all'} test faces with {ev['parzen_samples']} samples "
              f"each, σ chosen on {ev['parzen_num_validation'] or 'all'} validation faces",
              "- `reproduce.json` holds every setting; `report.json` these numbers.", ""]
    return "\n".join(lines)


def _report_stage(workdir, settings, record) -> dict[str, Any]:
    results_by_seed, pending = {}, {}
    eval_settings = _eval_settings(workdir, settings)
    uses_classifier = "fidelity" in eval_settings.estimators
    for seed in settings.seeds:
        paths, waiting = _models_ready(workdir, settings, seed)
        why = waiting or evaluation_finished(
            evaluation_dir(workdir, seed), paths, settings.models, eval_settings,
            os.path.join(workdir, CLASSIFIER_DIR) if uses_classifier else None)
        if why is not None:
            pending[seed] = why
            continue
        results_by_seed[seed] = _read_json(os.path.join(evaluation_dir(workdir, seed),
                                                        RESULTS_FILE))
    summary = summarize_seeds(results_by_seed)
    timings = _read_json(os.path.join(workdir, TIMINGS_FILE), {})
    text = markdown(summary, settings=record["settings"], runs=record["runs"], timings=timings,
                    pending=pending, results_by_seed=results_by_seed)
    files.write_text(os.path.join(workdir, REPORT_MD), text)
    report = {**summary, "pending": {str(k): v for k, v in pending.items()},
              "timings": timings, "runs": record["runs"], "settings": record["settings"],
              "bits_per_dim_dimension": DIM,
              "stderr_across_seeds": "std (ddof=1) / sqrt(number of seeds)"}
    _write_json(os.path.join(workdir, REPORT_JSON), report)
    _say(f"report: {os.path.join(workdir, REPORT_MD)}"
         + (f" (pending: {', '.join(f'seed {s}' for s in sorted(pending))})" if pending else ""))
    return report


# ---------------------------------------------------------------------------------------------
# The protocol


def reproduce(settings: ReproduceSettings, workdir: str, *, stages: Sequence[str] = STAGES,
              command: str | None = None) -> dict[str, Any]:
    """Runs the protocol into `workdir`, skipping what is finished (module docstring).

    Args:
      settings: `ReproduceSettings`.
      workdir: the run's folder (created; an existing one is resumed).
      stages: any of `STAGES`, in any order (they run in the order of `STAGES`): e.g.
        ("evaluate", "figures", "report") while trainings run elsewhere; a seed whose models are
        not trained yet is left out of the evaluation, the figures and the report.
      command: the command line, recorded in reproduce.json and the report.

    Returns:
      The report (`report.json`'s content) if "report" is among the stages, else {}.

    Raises:
      ValueError: for settings that differ from the workdir's in what is trained (naming the
        fields), or a training workdir trained with another config.
      KeyError: for an override of a field no config has.
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"Unknown stage(s) {unknown}; choose from {STAGES}.")
    _check_overrides(settings)
    os.makedirs(workdir, exist_ok=True)
    record, settings = _merge_settings(workdir, settings)
    for seed in settings.seeds:  # refuse a mismatch before any work
        for model in settings.models:
            _check_workdir_config(training_dir(workdir, seed, model),
                                  model_config(settings, model, seed))
    _check_workdir_config(os.path.join(workdir, CLASSIFIER_DIR), classifier_config(settings),
                          generative=False)
    run_id = _record_run(workdir, record, settings, command, stages)
    timings = _Timings(workdir)
    start = time.perf_counter()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("train", lambda: _train_stage(workdir, settings, timings)),
        ("classifier", lambda: _classifier_stage(workdir, settings, timings)),
        ("evaluate", lambda: _evaluate_stage(workdir, settings, timings)),
        ("figures", lambda: _figures_stage(workdir, settings, timings)),
    ]
    for name, run in steps:
        if name in stages:
            run()
    record = _finish_run(workdir, run_id, time.perf_counter() - start)
    if "report" in stages:
        return _report_stage(workdir, settings, record)
    return {}


__all__ = [
    "STAGES", "DEFAULT_MODELS", "ReproduceSettings", "reproduce", "model_config",
    "classifier_config", "apply_overrides", "training_finished", "loaded_step",
    "evaluation_finished", "settings_differences", "mean_stderr",
    "model_numbers", "seed_differences", "summarize_seeds", "markdown",
]
