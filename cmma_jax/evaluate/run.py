"""The whole evaluation: `evaluate_workdirs(workdirs, settings, output_dir)`."""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from cmma_jax import classifier as classifier_lib
from cmma_jax import configs, files
from cmma_jax.data.reading import SplitReader
from cmma_jax.evaluate import fidelity, registry, report
from cmma_jax.evaluate.common import Array
from cmma_jax.evaluate.estimator import Context
from cmma_jax.evaluate.settings import EvalSettings
from cmma_jax.progress import Progress
from cmma_jax.workdirs import TrainedModel, load_model, split_option_differences


def data_config_for(models: Sequence[TrainedModel], *, data_dir: str | None = None,
                    prepared_dir: str | None = None) -> ml_collections.ConfigDict:
    """The data section every model is evaluated on: the first model's, with overrides of
    where the raw folder (`data_dir`) and the prepared datasets (`prepared_dir`) are now.

    Raises:
      ValueError: if the models were trained on different datasets, attributes or splits
        (`data.options` such as num_train, num_validation, seed).
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
        differ = split_option_differences(first.config.data, m.config.data)
        if differ:
            raise ValueError(
                f"{m.workdir} and {first.workdir} were trained on different splits of "
                f"{first.config.data.name!r} ({'; '.join(differ)}): the test faces of one are "
                "not those of the other (some may be the other's training faces). Evaluate "
                "models of the same splits together.")
    return configs.base.set_folders(ml_collections.ConfigDict(first.config.data.to_dict()),
                                    data_dir=data_dir, prepared_dir=prepared_dir)


def _fold(key: Array, name: str) -> Array:
    # A stable per-estimator key (the same for every model, so models see the same noise).
    return jax.random.fold_in(key, sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**31))


def _evaluate_model(model: TrainedModel, settings: EvalSettings, data_section, key: Array,
                    predict_fn, classifier_names) -> tuple[dict[str, Any], list[str]]:
    """Every estimator of the settings that applies to the model (`registry.ESTIMATORS`):
    the model's results and the notes."""
    config = model.config
    result: dict[str, Any] = {
        "workdir": model.workdir, "model": model.name, "step": model.step,
        "preset": config.model.get("preset"), "attribute_encoding": model.encoding,
        "seconds": {},
    }
    per_face: dict[str, np.ndarray] = {}
    result["per_face"] = per_face  # taken out (to per_face.npz) by evaluate_workdirs
    notes: list[str] = []
    for name in settings.estimators:
        estimator = registry.get(name)
        if estimator.requires not in model.capabilities:
            continue
        if estimator.needs_classifier and predict_fn is None:
            continue
        t0 = time.perf_counter()
        context = Context(model=model, settings=settings, data_section=data_section,
                          key=_fold(key, name), predict_fn=predict_fn,
                          attribute_names=classifier_names)
        estimate = estimator.estimate(context)
        result[name] = estimate.summary
        per_face.update(estimate.per_face)
        notes += estimate.notes
        result["seconds"][name] = time.perf_counter() - t0
    return result, notes


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
    if output_dir is not None:  # before the work, not after it
        files.ensure_writable_dir(output_dir, "--output_dir")
    models = [load_model(w) for w in workdirs]
    data_section = data_config_for(models, data_dir=settings.data_dir,
                                   prepared_dir=settings.prepared_dir)
    names = models[0].attribute_names
    predict_fn, classifier_info = None, None
    if settings.classifier_workdir and any(registry.get(e).needs_classifier
                                           for e in settings.estimators):
        predict_fn, c_config = classifier_lib.load_predict_fn(settings.classifier_workdir, names)
        classifier_info = {"workdir": settings.classifier_workdir,
                           "num_steps": int(c_config.training.num_steps)}
    key = jax.random.key(settings.seed)
    results: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "dataset": data_section.name,
        "data_dir": data_section.get("data_dir"),
        "split": settings.split,
        "settings": settings.to_dict(),
        "machine": report.machine_description(),
        "classifier": classifier_info,
        "models": [],
        "real": None,
        "notes": [],
    }
    for name in settings.estimators:
        if registry.get(name).needs_classifier and predict_fn is None:
            results["notes"].append(f"{name} skipped: no classifier (--classifier_workdir; "
                                    "train one with launch/train_classifier.py).")
    for model in models:
        result, notes = _evaluate_model(model, settings, data_section, key, predict_fn, names)
        results["models"].append(result)
        results["notes"] += notes
    for note in results["notes"]:
        if settings.show_progress:
            print(f"note: {note}", file=sys.stderr, flush=True)
    per_face = {f"{i}_{m['model']}": m.pop("per_face") for i, m in enumerate(results["models"])}
    results["comparisons"] = report.paired_differences(list(per_face.values()),
                                                [m["model"] for m in results["models"]])
    if predict_fn is not None:
        chunks = SplitReader(data_section, settings.split, batch_size=settings.batch_size,
                             limit=settings.num_test)
        shown = Progress("[real faces] fidelity", chunks.num_examples,
                         enabled=settings.show_progress)
        results["real"] = {"fidelity": fidelity.attribute_fidelity(
            predict_fn, chunks, attribute_names=names, progress=shown,
            total=chunks.num_examples)}
        shown.close()
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        # Whole or not at all (cmma_jax.files): a full disk leaves the previous files readable.
        # Every face's value of every estimator, "<model index>_<model>/<estimator>".
        files.write_npz(os.path.join(output_dir, "per_face.npz"),
                        {f"{m}/{e}": v for m, d in per_face.items() for e, v in d.items()})
        files.write_text(os.path.join(output_dir, "results.md"), report.markdown_report(results))
        # Last: results.json is what says "evaluated" (cmma_jax.reproduce).
        files.write_json(os.path.join(output_dir, "results.json"), report.json_safe(results))
    return results
