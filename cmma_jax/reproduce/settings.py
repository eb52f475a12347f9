"""What `reproduce` runs: `ReproduceSettings`, the workdir's file names and the protocol's
constants, and which differences of the settings a rerun may not make (`settings_differences`)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

from cmma_jax import evaluate, presets
from cmma_jax.evaluate import EvalSettings
from cmma_jax.figures import FigureSettings
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.models import MODELS

STAGES = ("train", "classifier", "evaluate", "figures", "report")
DEFAULT_MODELS = tuple(MODELS)  # every registered model (cmma_jax.models)
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
