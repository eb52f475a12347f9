"""The ground truth's results as Markdown (`markdown_report`)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from cmma_jax.evaluate.ground_truth.settings import OUTPUTS


def _fmt(value, digits=3, scale=1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


def markdown_report(results: Mapping[str, Any]) -> str:
    """The results as Markdown: edits against the truth (overall, per attribute), the
    classifier's verdict, the probes (factors × latent layers), the definitions and settings."""
    s = results["settings"]
    edits = results["edits"]
    lines = [f"## Ground truth on synthetic_faces (`{results['variant']}`)", ""]
    lines += [f"{edits['num_faces']} faces of the `{s['split']}` split, each with every one of "
              f"{len(edits['attributes'])} attributes switched (both directions: faces without "
              "it get it, faces with it lose it), against the true counterfactual rendered from "
              "the face's spec. Pixels in [0, 1], model outputs clipped to [0, 1]. MSE: mean "
              "over faces of the per-face mean squared error (×10⁻³); "
              "PSNR = 10·log10(1 / MSE) in dB from that mean (higher is better). "
              "Changed-pixel MSE: on the pixels the true edit changes. Reconstruction: doing "
              "nothing (the model's reconstruction of the unedited face). Regeneration: the "
              "face generated from the new attributes alone at temperature 0. A good edit "
              "beats both.", ""]
    models = edits["models"]
    if models:
        lines += ["### Edits, all attributes pooled", "",
                  "| model | MSE ×10⁻³ edit / reconstruction / regeneration | PSNR (dB) edit / "
                  "reconstruction / regeneration | changed-pixel MSE ×10⁻³ edit / "
                  "reconstruction / regeneration | edit beats reconstruction | edit beats "
                  "regeneration |", "|---|---|---|---|---|---|"]
        for m in models:
            o = m["overall"]
            lines.append(
                f"| {m['label']} (`{m['workdir']}`, step {m['step']}) | "
                + " / ".join(_fmt(o[k]["mse"], 2, 1e3) for k in OUTPUTS) + " | "
                + " / ".join(_fmt(o[k]["psnr"], 2) for k in OUTPUTS) + " | "
                + " / ".join(_fmt(o[k]["mse_changed"], 1, 1e3) for k in OUTPUTS) + " | "
                + f"{_fmt(o['beats_reconstruction'], 0, 100)}% | "
                + f"{_fmt(o['beats_regeneration'], 0, 100)}% |")
        lines += ["", "### Edits per attribute: PSNR (dB) edit / reconstruction / regeneration",
                  "", "| attribute | faces to on / off | true change: MSE ×10⁻³, pixels "
                  "changed | " + " | ".join(m["label"] for m in models) + " |",
                  "|" + "---|" * (3 + len(models))]
        for a in edits["attributes"]:
            cf = edits["counterfactuals"]["per_attribute"][a]
            cells = [" / ".join(_fmt(m["per_attribute"][a][k]["psnr"], 1) for k in OUTPUTS)
                     for m in models]
            lines.append(f"| {a} | {cf['num_to_on']} / {cf['num_to_off']} | "
                         f"{_fmt(cf['change_mse'], 2, 1e3)}, "
                         f"{_fmt(cf['changed_pixels'], 1, 100)}% | " + " | ".join(cells) + " |")
    if results.get("classifier"):
        lines += ["", "### The classifier's verdict (accuracy against the counterfactual's "
                  "attributes)", "",
                  "Target: on the switched attribute (does the face show the new value?); "
                  "others: on the other attributes (do they keep their values?). The true "
                  "counterfactual through the classifier is the ceiling.", "",
                  "| faces | target | target, to on | target, to off | others |",
                  "|---|---|---|---|---|"]
        ceiling = edits["counterfactuals"]["overall"]["classifier"]
        lines.append("| true counterfactual (ceiling) | " + " | ".join(
            _fmt(ceiling[k]) for k in ("target", "target_to_on", "target_to_off", "others"))
            + " |")
        for m in models:
            for k in OUTPUTS:
                c = m["overall"]["classifier"][k]
                lines.append(f"| {m['label']} {k} | " + " | ".join(
                    _fmt(c[q]) for q in ("target", "target_to_on", "target_to_off", "others"))
                    + " |")
        lines += ["", "Per attribute, target accuracy (others in brackets): ceiling, then "
                  "each model's edit / reconstruction / regeneration.", "",
                  "| attribute | ceiling | " + " | ".join(m["label"] for m in models) + " |",
                  "|" + "---|" * (2 + len(models))]
        for a in edits["attributes"]:
            c = edits["counterfactuals"]["per_attribute"][a]["classifier"]
            cells = [" / ".join(f"{_fmt(m['per_attribute'][a]['classifier'][k]['target'], 2)}"
                                f" ({_fmt(m['per_attribute'][a]['classifier'][k]['others'], 2)})"
                                for k in OUTPUTS) for m in models]
            lines.append(f"| {a} | {_fmt(c['target'], 2)} ({_fmt(c['others'], 2)}) | "
                         + " | ".join(cells) + " |")
    probes = results["probes"]
    if probes["rows"]:
        p = probes
        lines += ["", "### What each latent layer knows: linear probes", "",
                  f"Ridge probes fitted on {p['num_train']} faces of `{p['train']['split']}` "
                  f"(faces {p['train']['start']}–{p['train']['stop'] - 1}), scored on "
                  f"{p['num_test']} held-out faces of `{p['test']['split']}` (faces "
                  f"{p['test']['start']}–{p['test']['stop'] - 1}). Attributes: balanced "
                  "accuracy of the probe thresholded at 0.5 (chance 0.5); nuisance: R² "
                  "(chance 0). The ridge penalty is chosen per factor on the last "
                  f"{100 * s['probe_select_fraction']:.0f}% of the training faces.", "",
                  "| factor | " + " | ".join(f"{r['label']} (d={r['dim']})" for r in p["rows"])
                  + " |", "|" + "---|" * (1 + len(p["rows"]))]
        for f in p["factors"]:
            lines.append(f"| {f} | " + " | ".join(_fmt(r["scores"][f], 2) for r in p["rows"])
                         + " |")
    if results.get("notes"):
        lines += [""] + [f"Note: {n}" for n in results["notes"]]
    machine = results["machine"]
    lines += ["", "### Settings", "",
              f"- dataset `synthetic_faces/{results['variant']}` (seed {results['seed']}); "
              f"edits of faces 0–{edits['num_faces'] - 1} of `{s['split']}`",
              f"- classifier: `{(results.get('classifier') or {}).get('workdir')}`",
              f"- ridge α grid {', '.join(f'{a:g}' for a in s['ridge_alphas'])} (λ = α·n on "
              "standardised features)",
              f"- {results['date']}; {machine['processor']}, {machine['cpu_count']} CPUs, jax "
              f"{machine['jax']} ({machine['backend']}); "
              + ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items()), ""]
    return "\n".join(lines)
