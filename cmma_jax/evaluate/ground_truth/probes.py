"""The probes of every latent layer: the factors the faces were drawn from (`factor_table`), each
encoding model's posterior means of training and held-out faces, and a ridge probe per factor."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cmma_jax.data import pipeline, synthetic_faces
from cmma_jax.evaluate.ground_truth.models import batched
from cmma_jax.evaluate.ground_truth.settings import ATTRIBUTE_NAMES, InputError
from cmma_jax.evaluate.ground_truth.statistics import probe
from cmma_jax.progress import Progress


def factor_table(specs: Sequence[synthetic_faces.FaceSpec]
                 ) -> tuple[list[str], list[str], np.ndarray]:
    """The factors faces were drawn from: `(names, kinds, values [N, F])`.

    The 20 attributes (0/1, kind "attribute") in `ATTRIBUTE_NAMES` order, then every nuisance
    parameter (kind "nuisance") in the order `sample_nuisance` draws them, the periodic angles
    (`PERIODIC_NUISANCE`) as `<name>_cos` and `<name>_sin`.
    """
    if not specs:
        raise ValueError("No faces to tabulate.")
    names = list(ATTRIBUTE_NAMES)
    kinds = ["attribute"] * len(names)
    columns = [[1.0 if s.attributes[n] else 0.0 for s in specs] for n in ATTRIBUTE_NAMES]
    for key in specs[0].nuisance:
        values = np.array([s.nuisance[key] for s in specs], np.float64)
        if key in synthetic_faces.PERIODIC_NUISANCE:
            names += [f"{key}_cos", f"{key}_sin"]
            columns += [np.cos(values), np.sin(values)]
            kinds += ["nuisance", "nuisance"]
        else:
            names.append(key)
            columns.append(values)
            kinds.append("nuisance")
    return names, kinds, np.stack([np.asarray(c, np.float64) for c in columns], axis=1)


def _split_range(config, split: str, start: int, count: int) -> tuple[int, int]:
    size = config.split_sizes()[split]
    stop = min(start + int(count), size)
    return start, stop


def probe_scores(models, functions, labels, settings, config, progress_enabled, notes):
    """The probe part of `ground_truth`."""
    train_start, train_stop = _split_range(config, settings.probe_train_split, 0,
                                           settings.probe_num_train)
    test_start = train_stop if settings.probe_test_split == settings.probe_train_split else 0
    test_start, test_stop = _split_range(config, settings.probe_test_split, test_start,
                                         settings.probe_num_test)
    n_train, n_test = train_stop - train_start, test_stop - test_start
    if n_train < 10 or n_test < 2:
        raise InputError(
            f"The probes need at least 10 training and 2 held-out faces; "
            f"synthetic_faces/{config.name} gives {n_train} of {settings.probe_train_split!r} "
            f"and {n_test} of {settings.probe_test_split!r}. Use larger splits or other "
            "--probe_train_split / --probe_test_split.")
    out: dict[str, Any] = {
        "train": {"split": settings.probe_train_split, "start": train_start, "stop": train_stop},
        "test": {"split": settings.probe_test_split, "start": test_start, "stop": test_stop},
        "num_train": n_train, "num_test": n_test, "rows": [],
    }
    sets = {}
    for part, (split, start, stop) in (("train", (settings.probe_train_split, train_start,
                                                  train_stop)),
                                       ("test", (settings.probe_test_split, test_start,
                                                 test_stop))):
        specs = synthetic_faces.split_specs(config, split, start, stop)
        images, raw = synthetic_faces.render_split(config, split, start, stop)
        factor_names, kinds, factors = factor_table(specs)
        sets[part] = (images.astype(np.float32) * np.float32(1.0 / 255.0), raw, factors)
    out["factors"], out["kinds"] = factor_names, dict(zip(factor_names, kinds))
    encoders = [(m, f, l) for m, f, l in zip(models, functions, labels)
                if "encode" in m.capabilities]
    for m in models:
        if "encode" not in m.capabilities:
            notes.append(f"{m.workdir} ({m.name}) cannot encode faces: no probe row.")
    progress = Progress("[ground truth] probes", len(encoders), enabled=progress_enabled)
    for k, (m, f, label) in enumerate(encoders):
        features = {}
        for part, (images, raw, _) in sets.items():
            y = pipeline.encode_attributes(raw, m.encoding)
            features[part] = batched(f.encode_means, [images, y], settings.batch_size)
        layers = len(features["train"])
        for layer in range(layers):
            scores = probe(features["train"][layer], sets["train"][2], features["test"][layer],
                           sets["test"][2], kinds, alphas=settings.ridge_alphas,
                           select_fraction=settings.probe_select_fraction)
            latent = f"z_{layer + 1}" if layers > 1 else "z"
            out["rows"].append({
                "label": f"{label} {latent}", "model": m.name, "workdir": m.workdir,
                "latent": latent, "dim": int(features["train"][layer].shape[1]),
                "scores": dict(zip(factor_names, scores["score"].tolist())),
                "accuracy": {a: float(v) for a, v, kind in
                             zip(factor_names, scores["accuracy"], kinds) if kind == "attribute"},
                "r2": dict(zip(factor_names, scores["r2"].tolist())),
                "alphas": dict(zip(factor_names, scores["alpha"].tolist())),
            })
        progress.update(k + 1)
    progress.close()
    return out
