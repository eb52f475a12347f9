"""The report of an evaluation: paired differences between models, the JSON-safe results, the
machine they came from, and the Markdown table."""

from __future__ import annotations

import math
import os
import platform
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from cmma_jax import stats
from cmma_jax.evaluate import common, registry


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
                        "stderr": common.nan_if_none(stats.standard_error(d)),
                        "num_images": int(len(d)),
                        "a_better_fraction": float(np.mean(d > 0))})
    return out


def json_safe(obj):
    """NaN and infinities as null (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return json_safe(obj.item())
    return obj


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown_report(results: Mapping[str, Any]) -> str:
    """The results as Markdown: a table with one row per model (and the real faces), the
    per-attribute fidelity, and the settings that produced them."""
    models = results["models"]
    s = results["settings"]
    # The registered estimators of the evaluation, in its order, each with its columns.
    estimators = [registry.get(e) for e in s.get("estimators", registry.ESTIMATORS)
                  if e in registry.ESTIMATORS]
    columns = [c for e in estimators for c in e.columns(models)]
    lines = [f"## Evaluation on {results['dataset']} ({results['split']} split)", ""]
    header = ["model", "step"] + [h for h, _ in columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for m in models:
        row = [f"{m['model']} (`{m['workdir']}`)", str(m["step"])] + [c(m) for _, c in columns]
        lines.append("| " + " | ".join(row) + " |")
    real = (results.get("real") or {}).get("fidelity")
    if real:
        row = ["real test faces (classifier ceiling)", "–"] + [c({"fidelity": real})
                                                              for _, c in columns]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Bounds and log-likelihoods: nats per image (mean ± standard error over the "
              "faces), log-densities of x in [0, 1]^12288, higher is better. bits/dim = "
              "-nats / (12288 ln 2), lower is better (negative when the density exceeds 1; "
              "not comparable with discrete 8-bit bits/dim)."]
    for e in estimators:
        if e.section is not None:
            lines += e.section(results)
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
    lines += ["", "### Settings", "",
              f"- dataset `{results['dataset']}`" + (f" from `{results['data_dir']}`"
                                                     if results.get("data_dir") else "")
              + f", split `{s['split']}`; σ chosen on `{s['validation_split']}`"]
    lines += [f"- {e.describe(s)}" for e in estimators]
    lines += [f"- seed {s['seed']}; {results['date']}",
              f"- machine: {results['machine']['processor']}, {results['machine']['cpu_count']} "
              f"CPUs, {results['machine']['platform']}, jax {results['machine']['jax']} "
              f"({results['machine']['backend']})"]
    times = [f"{m['model']}: " + ", ".join(f"{k} {v:.0f} s" for k, v in m["seconds"].items())
             for m in models]
    lines += ["- time: " + "; ".join(times), ""]
    return "\n".join(lines)
