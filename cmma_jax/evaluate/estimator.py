"""What an estimator is: the protocol every entry of `cmma_jax.evaluate.registry` follows.

An estimator is a function of one trained model and a `Context` (the settings, a reader of the
splits, the estimator's own random key, the classifier) that returns an `Estimate`: a summary
(what `results.json` keeps under the estimator's name), the per-face values (to `per_face.npz`,
and paired across models), and notes. It says which model capability it needs, which columns it
adds to the report's table, and which numbers the reproduction carries across seeds. Adding one
is one module (the function and its `Estimator`) and one line in `registry.ESTIMATORS`; the
evaluation, its report and the reproduction iterate over the registry (docs/design.md, "a new
estimator").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cmma_jax.data.reading import SplitReader
from cmma_jax.evaluate.common import Array
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.progress import Progress

DIM = math.prod(IMAGE_SHAPE)


@dataclasses.dataclass(frozen=True)
class Context:
    """What an estimator gets besides the model.

    Attributes:
      model: the `workdirs.TrainedModel` (params, config, model library, encoding, capabilities).
      settings: the `EvalSettings` of the evaluation.
      data_section: the data config every model is evaluated on (`run.data_config_for`).
      key: the estimator's own key (the same for every model: models see the same noise).
      predict_fn: the attribute classifier (faces -> probabilities), or None without one.
      attribute_names: the attributes' names, in the models' order.
    """

    model: Any
    settings: Any
    data_section: Any
    key: Array
    predict_fn: Callable[[np.ndarray], Any] | None
    attribute_names: Sequence[str]

    def reader(self, split: str, limit: int | None, batch_size: int) -> SplitReader:
        """The faces of `split` (the first `limit`; None: all) in chunks of `batch_size`."""
        return SplitReader(self.data_section, split, batch_size=batch_size, limit=limit)

    def progress(self, what: str, total: int) -> Progress:
        return Progress(f"[{self.model.name}] {what}", total,
                        enabled=self.settings.show_progress)


@dataclasses.dataclass
class Estimate:
    """One estimator's result for one model.

    Attributes:
      summary: stored in `results.json` under the estimator's name (JSON-able).
      per_face: {name: one value per face, in split order}; written to `per_face.npz` and paired
        across the models (same faces, same noise) in the report.
      notes: sentences for the report (e.g. "σ at the edge of its grid").
    """

    summary: dict[str, Any]
    per_face: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


Cell = Callable[[Mapping[str, Any]], str]


@dataclasses.dataclass(frozen=True)
class Estimator:
    """A registry entry.

    Attributes:
      name: the key in `EvalSettings.estimators`, `results.json` and the flags.
      requires: the model capability it needs (`models.<name>.capabilities`: "bound", "iwae",
        "sample"); models without it are skipped.
      estimate: `estimate(context) -> Estimate`.
      columns: `columns(model_results) -> [(header, cell)]`, the report table's columns, where
        `cell(model_result) -> str` reads the model's summary (absent: "–"); `model_results` are
        all the models' results (e.g. for the K's of IWAE).
      numbers: `numbers(summary) -> {name: (value, stderr or None)}`, what the reproduction
        averages over seeds.
      unpaired: the names among `numbers` without per-face values, whose differences between
        models the reproduction takes from the means.
      label: `label(number name) -> (label, digits)` for reports, or None for a number that is
        not its own.
      describe: `describe(settings_dict) -> str`, the report's settings line.
      section: `section(results) -> [markdown lines]`, a part of the report of its own (e.g.
        fidelity per attribute), after the table; None: none.
      needs_classifier: skipped (with a note) when the evaluation has no classifier.
    """

    name: str
    requires: str
    estimate: Callable[[Context], Estimate]
    columns: Callable[[Sequence[Mapping[str, Any]]], list[tuple[str, Cell]]]
    numbers: Callable[[Mapping[str, Any]], dict[str, tuple[float | None, float | None]]]
    describe: Callable[[Mapping[str, Any]], str]
    unpaired: tuple[str, ...] = ()
    label: Callable[[str], tuple[str, int] | None] = lambda name: None
    needs_classifier: bool = False
    section: Callable[[Mapping[str, Any]], list[str]] | None = None


def fmt(summary: Mapping[str, Any] | None, key: str = "nats", err: str = "stderr",
        digits: int = 0) -> str:
    """`value ± stderr` of a summary's `key` ("–" when absent or undefined)."""
    if not summary or summary.get(key) is None:
        return "–"
    text = f"{summary[key]:,.{digits}f}"
    if summary.get(err) is not None and math.isfinite(summary[err]):
        text += f" ± {summary[err]:,.{digits}f}"
    return text


def fmt_number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
