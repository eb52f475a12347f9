"""The report as Markdown (`markdown`): across seeds, per seed, time, commands and settings."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from cmma_jax.evaluate import registry


# Formatting as evaluate/report.py: each number's digits from its estimator (nats to the unit,
# bits/dim to 4 decimals, accuracies and AUCs to 3); differences in nats to 1 with a sign.
def _digits(name: str) -> int:
    return registry.number_label(name)[1]


def _number(value, stderr=None, digits=0, sign=False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:{'+' if sign else ''},.{digits}f}"
    if stderr is not None and math.isfinite(stderr):
        text += f" ± {stderr:,.{digits}f}"
    return text


def _label(name: str) -> str:
    return registry.number_label(name)[0]


def _quantity(name: str) -> str:
    return _label(name).removesuffix(" (nats)")


def _columns(tables: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[str]:
    names = {n for t in tables for numbers in t.values() for n in numbers}
    return sorted(names, key=registry.number_order)


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
            cells = [_number(across[m][c]["mean"], across[m][c]["stderr"], _digits(c))
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
            cells = [_number(row[c]["value"], row[c]["stderr"], _digits(c))
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
