"""The edits against the true counterfactuals: every editing model's edit, its reconstruction and
its regeneration scored against the rendered counterfactual, with the classifier's verdict, and
the blocks of the edit figure."""

from __future__ import annotations

from typing import Any

import numpy as np

from cmma_jax import stats
from cmma_jax.data import pipeline, synthetic_faces
from cmma_jax.evaluate.ground_truth.models import batched
from cmma_jax.evaluate.ground_truth.settings import ATTRIBUTE_NAMES, OUTPUTS
from cmma_jax.evaluate.ground_truth.statistics import per_face_masked_mse, per_face_mse, psnr
from cmma_jax.progress import Progress


def _mse_summary(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    n = int(v.size)
    if n == 0:
        return {"mse": None, "mse_stderr": None, "psnr": None, "num_faces": 0}
    mse = float(v.mean())
    return {"mse": mse, "mse_stderr": stats.standard_error(v),
            "psnr": psnr(mse), "num_faces": n}


def _output_summary(mse: np.ndarray, mse_changed: np.ndarray, to_on: np.ndarray
                    ) -> dict[str, Any]:
    """Pooled and per-direction MSE/PSNR of per-face values (any shape, flattened alike)."""
    mse, mse_changed, to_on = (np.ravel(a) for a in (mse, mse_changed, to_on))
    out = _mse_summary(mse)
    out["mse_changed"] = float(np.nanmean(mse_changed)) if np.isfinite(mse_changed).any() \
        else None
    out["to_on"] = _mse_summary(mse[to_on])
    out["to_off"] = _mse_summary(mse[~to_on])
    return out


def _classifier_summary(correct_target: np.ndarray, correct_others: np.ndarray,
                        to_on: np.ndarray) -> dict[str, Any]:
    t, o, on = (np.ravel(a) for a in (correct_target, correct_others, to_on))

    def mean(a):
        return float(np.mean(a)) if a.size else None

    return {"target": mean(t), "target_to_on": mean(t[on]), "target_to_off": mean(t[~on]),
            "others": mean(o)}


def _figure_columns(present: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` faces: half without the attribute (switched on), half with it."""
    off, on = np.flatnonzero(~present), np.flatnonzero(present)
    k_off = min(len(off), max(count - min(len(on), count // 2), 0))
    k_on = min(len(on), count - k_off)
    return np.concatenate([off[:k_off], on[:k_on]]).astype(int)


def edit_scores(models, functions, labels, settings, config, names, n, progress_enabled,
                predict, notes):
    """The edit part of `ground_truth`: (edits dict, figure blocks)."""
    originals_u8, raw = synthetic_faces.render_split(config, settings.split, 0, n)
    originals = originals_u8.astype(np.float32) * np.float32(1.0 / 255.0)
    editors = [(m, f, l) for m, f, l in zip(models, functions, labels) if "edit" in m.capabilities]
    for m in models:
        if "edit" not in m.capabilities:
            notes.append(f"{m.workdir} ({m.name}) cannot edit faces (no 'edit' capability): "
                         "left out of the edits.")
    bs = settings.batch_size
    per_model = []
    for m, f, _ in editors:
        y = pipeline.encode_attributes(raw, m.encoding)
        recon = batched(f.reconstruct, [originals, y], bs)
        per_model.append({"y": y, "reconstructed": recon,
                          **{k: {q: [] for q in ("mse", "mse_changed", "target", "others")}
                             for k in OUTPUTS}})
    counterfactuals: dict[str, Any] = {"per_attribute": {}}
    cf_store = {q: [] for q in ("target", "others")}
    to_on_all, blocks = [], []
    progress = Progress("[ground truth] edits", len(names), enabled=progress_enabled)
    for j, name in enumerate(names):
        col = ATTRIBUTE_NAMES.index(name)
        cf_u8, cf_raw = synthetic_faces.render_counterfactuals(config, settings.split, 0, n, name)
        cf = cf_u8.astype(np.float32) * np.float32(1.0 / 255.0)
        changed = np.any(cf_u8 != originals_u8, axis=-1)
        to_on = cf_raw[:, col] > 0
        to_on_all.append(to_on)
        labels_cf = cf_raw > 0
        entry: dict[str, Any] = {
            "num_to_on": int(to_on.sum()), "num_to_off": int((~to_on).sum()),
            "change_mse": float(per_face_mse(originals, cf).mean()),
            "changed_pixels": float(changed.mean()),
        }
        others_mask = np.ones(len(ATTRIBUTE_NAMES), bool)
        others_mask[col] = False

        def verdict(images):
            predicted = batched(predict, [images], bs) > 0.5
            return (predicted[:, col] == labels_cf[:, col],
                    (predicted[:, others_mask] == labels_cf[:, others_mask]).mean(axis=1))

        if predict is not None:
            t, o = verdict(cf)
            cf_store["target"].append(t)
            cf_store["others"].append(o)
            entry["classifier"] = _classifier_summary(t, o, to_on)
        counterfactuals["per_attribute"][name] = entry
        chosen = _figure_columns(~to_on, settings.figure_faces) \
            if name in settings.figure_attributes else None
        figure_rows = [originals[chosen], cf[chosen]] if chosen is not None else None
        for (m, f, _), store in zip(editors, per_model):
            y_to = pipeline.encode_attributes(cf_raw, m.encoding)
            outputs = {"edit": batched(f.edit, [originals, store["y"], y_to], bs),
                       "reconstruction": store["reconstructed"],
                       "regeneration": batched(f.regenerate, [y_to], bs)}
            for k, images in outputs.items():
                store[k]["mse"].append(per_face_mse(images, cf))
                store[k]["mse_changed"].append(per_face_masked_mse(images, cf, changed))
                if predict is not None:
                    t, o = verdict(images)
                    store[k]["target"].append(t)
                    store[k]["others"].append(o)
            if figure_rows is not None:
                figure_rows.append(outputs["edit"][chosen])
        if figure_rows is not None:
            blocks.append({"attribute": name, "images": np.stack(figure_rows),
                           "rows": ["input", "true counterfactual"]
                           + [f"{l} edit" for _, _, l in editors],
                           "faces": [f"face {i} to {'on' if to_on[i] else 'off'}" for i in chosen]})
        progress.update(j + 1, attribute=name)
    progress.close()
    blocks.sort(key=lambda b: settings.figure_attributes.index(b["attribute"]))
    to_on_all = np.stack(to_on_all)
    if predict is not None:
        counterfactuals["overall"] = {"classifier": _classifier_summary(
            np.stack(cf_store["target"]), np.stack(cf_store["others"]), to_on_all)}
    else:
        counterfactuals["overall"] = {}
    counterfactuals["overall"].update({
        "change_mse": float(np.mean([e["change_mse"] for e in
                                     counterfactuals["per_attribute"].values()])),
        "changed_pixels": float(np.mean([e["changed_pixels"] for e in
                                         counterfactuals["per_attribute"].values()]))})
    model_results = []
    for (m, _, label), store in zip(editors, per_model):
        arrays = {k: {q: np.stack(v) for q, v in store[k].items() if v} for k in OUTPUTS}
        per_attribute = {}
        for j, name in enumerate(names):
            entry = {k: _output_summary(arrays[k]["mse"][j], arrays[k]["mse_changed"][j],
                                        to_on_all[j]) for k in OUTPUTS}
            for ref in ("reconstruction", "regeneration"):
                entry[f"beats_{ref}"] = float(np.mean(arrays["edit"]["mse"][j]
                                                      < arrays[ref]["mse"][j]))
            if predict is not None:
                entry["classifier"] = {k: _classifier_summary(
                    arrays[k]["target"][j], arrays[k]["others"][j], to_on_all[j])
                    for k in OUTPUTS}
            per_attribute[name] = entry
        overall = {k: _output_summary(arrays[k]["mse"], arrays[k]["mse_changed"], to_on_all)
                   for k in OUTPUTS}
        for ref in ("reconstruction", "regeneration"):
            overall[f"beats_{ref}"] = float(np.mean(arrays["edit"]["mse"] < arrays[ref]["mse"]))
        if predict is not None:
            overall["classifier"] = {k: _classifier_summary(
                arrays[k]["target"], arrays[k]["others"], to_on_all) for k in OUTPUTS}
        model_results.append({"workdir": m.workdir, "model": m.name, "label": label,
                              "step": m.step, "attribute_encoding": m.encoding,
                              "per_attribute": per_attribute, "overall": overall})
    return {"num_faces": n, "attributes": list(names), "models": model_results,
            "counterfactuals": counterfactuals}, blocks
