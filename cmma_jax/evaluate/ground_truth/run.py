"""The whole ground truth (`ground_truth`): the inputs checked, the edits scored, the probes
fitted, the files written."""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, Sequence

from cmma_jax import files as files_lib
from cmma_jax.evaluate.ground_truth.figures import edit_figure, probe_figure
from cmma_jax.evaluate.ground_truth.models import (Functions, check_synthetic, load_classifier,
                                                   short_labels, variant_of)
from cmma_jax.evaluate.ground_truth.probes import probe_scores
from cmma_jax.evaluate.ground_truth.report import markdown_report
from cmma_jax.evaluate.ground_truth.scoring import edit_scores
from cmma_jax.evaluate.ground_truth.settings import (ATTRIBUTE_NAMES, EDIT_FIGURE_FILE, JSON_FILE,
                                                     MARKDOWN_FILE, PROBE_FIGURE_FILE,
                                                     GroundTruthSettings, InputError)
from cmma_jax.evaluate.report import json_safe, machine_description
from cmma_jax.images import save_png
from cmma_jax.workdirs import load_model


def ground_truth(workdirs: Sequence[str], settings: GroundTruthSettings | None = None,
                 output_dir: str | None = None) -> dict[str, Any]:
    """Scores trained models against the ground truth of synthetic_faces (see the module
    docstring): edits against the true counterfactuals, with both references and the
    classifier's verdict, and linear probes of every latent layer for every factor.

    Args:
      workdirs: training workdirs of models trained on synthetic_faces (any of cmma, cvae, cgan,
        vlae; those that cannot edit or encode are left out of that part, with a note), all of
        one seed of the dataset.
      settings: `GroundTruthSettings`.
      output_dir: where `ground_truth.json`, `ground_truth.md`, `edits.png` (the edit figure)
        and `probes.png` (the probes' heat map) go (None: nothing is written).

    Returns:
      {"date", "variant", "seed", "settings", "machine", "classifier", "edits": {"num_faces",
      "attributes", "models": [per model: "per_attribute" {name: {"edit", "reconstruction",
      "regeneration": {"mse", "mse_stderr", "psnr", "mse_changed", "num_faces", "to_on",
      "to_off"}, "beats_reconstruction", "beats_regeneration", "classifier"?}}, "overall"],
      "counterfactuals": {"per_attribute": {name: {"num_to_on", "num_to_off", "change_mse",
      "changed_pixels", "classifier"?}}, "overall"}}, "probes": {"factors", "kinds", "train",
      "test", "num_train", "num_test", "rows": [per latent: "label", "dim", "scores", "accuracy",
      "r2", "alphas"]}, "files", "notes", "seconds"}.

    Raises:
      InputError (a ValueError): for a workdir not trained on synthetic_faces, models of
        different seeds of it, a classifier of other attributes, or too few faces for the probes.
      FileNotFoundError: for a workdir without a config or checkpoint.
    """
    settings = settings or GroundTruthSettings()
    if output_dir is not None:  # before the work, not after it
        files_lib.ensure_writable_dir(output_dir, "--output_dir")
    if not workdirs:
        raise InputError("No workdirs: pass trained models (--workdirs=...).")
    t_start = time.perf_counter()
    # Every workdir is checked before anything is loaded: a wrong one fails at once.
    configs = [check_synthetic(w) for w in workdirs]
    variants = [variant_of(c) for c in configs]
    seeds = sorted({v.seed for v in variants})
    if len(seeds) > 1:
        raise InputError(
            "The models were trained on different seeds of synthetic_faces ("
            + ", ".join(f"{w}: seed {v.seed}" for w, v in zip(workdirs, variants))
            + "), so their test faces differ: score models of one seed together.")
    # Same seed: example i of a split is the same face in every variant; use the smallest split.
    variant = min(variants, key=lambda v: v.split_sizes()[settings.split])
    names = list(settings.attributes or ATTRIBUTE_NAMES)
    n = min(int(settings.num_faces), variant.split_sizes()[settings.split])
    if n < 1:
        raise InputError(f"The {settings.split!r} split of synthetic_faces/{variant.name} has no "
                         "faces; use another --split.")
    predict, classifier_info = None, None
    if settings.classifier_workdir:
        predict, c_config = load_classifier(settings.classifier_workdir)
        classifier_info = {"workdir": settings.classifier_workdir,
                           "num_steps": int(c_config.training.num_steps)}
    models = [load_model(w) for w in workdirs]
    functions = [Functions(m) for m in models]
    labels = short_labels(models)
    notes: list[str] = []
    if predict is None:
        notes.append("No classifier (--classifier_workdir): the classifier's verdict is "
                      "skipped; train one with launch/train_classifier.py "
                      "--dataset=synthetic_faces.")
    seconds = {}
    t0 = time.perf_counter()
    edits, blocks = edit_scores(models, functions, labels, settings, variant, names, n,
                                 settings.show_progress, predict, notes)
    seconds["edits"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probes = probe_scores(models, functions, labels, settings, variant, settings.show_progress,
                          notes)
    seconds["probes"] = time.perf_counter() - t0
    results: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "dataset": "synthetic_faces", "variant": variant.name, "seed": variant.seed,
        "settings": settings.to_dict(), "machine": machine_description(),
        "classifier": classifier_info, "edits": edits, "probes": probes, "files": {},
        "notes": notes, "seconds": seconds,
    }
    missing = [a for a in settings.figure_attributes if a not in names]
    if missing:
        notes.append(f"Figure attributes {missing} are not among the attributes switched: "
                     "left out of the figure.")
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        files = results["files"]
        if blocks and edits["models"]:
            files["edit_figure"] = save_png(os.path.join(output_dir, EDIT_FIGURE_FILE),
                                            edit_figure(blocks))
        if probes["rows"]:
            files["probe_figure"] = save_png(os.path.join(output_dir, PROBE_FIGURE_FILE),
                                             probe_figure(probes["rows"], probes["factors"],
                                                          list(probes["kinds"].values())))
        seconds["total"] = time.perf_counter() - t_start
        files["json"] = os.path.join(output_dir, JSON_FILE)
        files["markdown"] = os.path.join(output_dir, MARKDOWN_FILE)
        files_lib.write_json(files["json"], json_safe(results))
        files_lib.write_text(files["markdown"], markdown_report(results))
    else:
        seconds["total"] = time.perf_counter() - t_start
    for note in notes:
        if settings.show_progress:
            print(f"note: {note}", file=sys.stderr, flush=True)
    return results
