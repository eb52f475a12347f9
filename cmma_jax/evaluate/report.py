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
from cmma_jax.evaluate import common


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
              f"- dataset `{results['dataset']}`" + (f" from `{results['data_dir']}`"
                                                     if results.get("data_dir") else "")
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
