"""The report's numbers: per model and seed (`model_numbers`), the paired differences of one
seed (`seed_differences`), and mean ± standard error across seeds (`summarize_seeds`)."""

from __future__ import annotations

from typing import Any, Mapping

from cmma_jax import stats
from cmma_jax.evaluate import registry

mean_stderr = stats.mean_stderr


def model_numbers(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The numbers of one model's evaluation: {name: {"value", "stderr" (over faces, or None)}},
    each estimator's `numbers` in registry order (`cmma_jax.evaluate.registry`).

    The built-in ones: "bound" (nats), "bound_bits_per_dim", "iwae_<K>" (nats), "parzen" (nats),
    "parzen_sigma", "fidelity_accuracy", "fidelity_auc" (means over attributes)."""
    out: dict[str, dict[str, Any]] = {}
    for name, estimator in registry.ESTIMATORS.items():
        summary = result.get(name)
        if not summary:
            continue
        for number, (value, stderr) in estimator.numbers(summary).items():
            if value is not None:
                out[number] = {"value": float(value),
                               "stderr": None if stderr is None else float(stderr)}
    return out


def seed_differences(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The first model minus each other one in one seed's results: the paired per-face
    differences of the evaluation ("comparisons": bound, IWAE, Parzen, with their per-face
    standard errors) and the differences of the mean attribute accuracy and AUC (no per-face
    standard error)."""
    out = [{"a": c["a"], "b": c["b"], "quantity": c["estimator"], "difference": c["difference"],
            "stderr": c.get("stderr"), "num_images": c.get("num_images"),
            "a_better_fraction": c.get("a_better_fraction")}
           for c in results.get("comparisons") or []]
    models = results["models"]
    if models:
        first = model_numbers(models[0])
        for other in models[1:]:
            numbers = model_numbers(other)
            for q in (q for e in registry.ESTIMATORS.values() for q in e.unpaired):
                if q in first and q in numbers:
                    out.append({"a": models[0]["model"], "b": other["model"], "quantity": q,
                                "difference": first[q]["value"] - numbers[q]["value"],
                                "stderr": None, "num_images": None, "a_better_fraction": None})
    return out


def summarize_seeds(results_by_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per seed and across seeds, from each seed's `evaluate_workdirs` results.

    Returns:
      {"seeds", "models" (in order of first appearance), "per_seed": {seed: {model: numbers}}
      (`model_numbers`), "across_seeds": {model: {number: mean_stderr of the seeds' values}},
      "differences": {"per_seed": {seed: [...]} (`seed_differences`), "across_seeds": [{"a",
      "b", "quantity", "mean", "stderr", "n", "values"}]}, "real": the classifier on the real
      faces {"fidelity_accuracy", "fidelity_auc"} across seeds}. Seeds are keyed by str.
      Standard errors across seeds: std (ddof=1) / sqrt(number of seeds).
    """
    seeds = sorted(int(s) for s in results_by_seed)
    models: list[str] = []
    per_seed, diffs, real = {}, {}, {"fidelity_accuracy": [], "fidelity_auc": []}
    for seed in seeds:
        results = results_by_seed[seed]
        per_seed[str(seed)] = {m["model"]: model_numbers(m) for m in results["models"]}
        models += [m["model"] for m in results["models"] if m["model"] not in models]
        diffs[str(seed)] = seed_differences(results)
        fid = (results.get("real") or {}).get("fidelity")
        if fid:
            real["fidelity_accuracy"].append(fid.get("mean_accuracy"))
            real["fidelity_auc"].append(fid.get("mean_auc"))
    across = {}
    for model in models:
        names = list(dict.fromkeys(n for s in per_seed.values() for n in s.get(model, {})))
        across[model] = {n: {**mean_stderr([s[model][n]["value"] for s in per_seed.values()
                                            if n in s.get(model, {})])} for n in names}
    keys = list(dict.fromkeys((d["a"], d["b"], d["quantity"]) for s in diffs.values()
                              for d in s))
    across_diffs = []
    for a, b, q in keys:
        values = [d["difference"] for s in seeds for d in diffs[str(s)]
                  if (d["a"], d["b"], d["quantity"]) == (a, b, q)]
        across_diffs.append({"a": a, "b": b, "quantity": q, **mean_stderr(values),
                             "values": values})
    return {"seeds": seeds, "models": models, "per_seed": per_seed, "across_seeds": across,
            "differences": {"per_seed": diffs, "across_seeds": across_diffs},
            "real": {k: mean_stderr(v) for k, v in real.items() if v}}
