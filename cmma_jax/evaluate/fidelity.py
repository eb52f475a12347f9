"""Attribute fidelity: do generated faces show the attributes they were generated from, as an
attribute classifier (`cmma_jax.classifier`) sees them?"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from cmma_jax import metrics
from cmma_jax.data.reading import Chunk
from cmma_jax.evaluate.common import Array, ProgressFn, call_progress
from cmma_jax.evaluate.estimator import Context, Estimate, Estimator, fmt_number
from cmma_jax.evaluate.parzen import per_face_sampler


def attribute_fidelity(predict_fn: Callable[[np.ndarray], Array], chunks: Iterable[Chunk], *,
                       generate_fn: Callable[[Chunk], np.ndarray] | None = None,
                       attribute_names: Sequence[str] | None = None,
                       progress: ProgressFn | None = None,
                       total: int | None = None) -> dict[str, Any]:
    """Scores faces with an attribute classifier against the attributes they should show.

    Args:
      predict_fn: faces `[n, H, W, 3]` -> probabilities `[n, A]`.
      chunks: `Chunk`s of the split; their binary attributes (raw value > 0) are the labels.
      generate_fn: `chunk -> faces [n, H, W, 3]` generated from the chunk's attributes; None
        scores the chunk's real faces (the ceiling).
      attribute_names: for the per-attribute report.
      progress, total: as `conditional_bound`.

    Returns:
      A dict: "num_images"; "mean_accuracy"; "mean_auc" (over the attributes with an AUC);
      "undefined_auc" (the attributes whose labels are constant); "per_attribute" ({name:
      {"accuracy", "auc" (None where undefined), "positive_rate"}}).
    """
    probabilities, labels, done = [], [], 0
    for chunk in chunks:
        faces = chunk.images if generate_fn is None else generate_fn(chunk)
        p = np.asarray(predict_fn(faces), np.float64)[: chunk.num_valid]
        probabilities.append(p)
        labels.append(chunk.binary_attributes[: chunk.num_valid])
        done += chunk.num_valid
        call_progress(progress, done, total or done)
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    accuracy = metrics.attribute_accuracy(probabilities, labels)
    auc = metrics.attribute_auc(probabilities, labels)
    names = list(attribute_names) if attribute_names is not None else \
        [str(a) for a in range(labels.shape[1])]
    defined = np.isfinite(auc)
    return {
        "num_images": int(labels.shape[0]),
        "mean_accuracy": float(np.mean(accuracy)),
        "mean_auc": float(np.mean(auc[defined])) if defined.any() else None,
        "undefined_auc": [n for n, d in zip(names, defined) if not d],
        "per_attribute": {
            n: {"accuracy": float(a), "auc": float(u) if d else None,
                "positive_rate": float(r)}
            for n, a, u, d, r in zip(names, accuracy, auc, defined, labels.mean(axis=0))
        },
    }


# The registry's entry (cmma_jax.evaluate.registry)


def _fidelity_estimate(ctx: Context) -> Estimate:
    s, m = ctx.settings, ctx.model
    chunks = ctx.reader(s.split, s.num_test, s.batch_size)
    sampler = per_face_sampler(m.model_lib, m.config, float(s.fidelity_temperature))
    zero = np.zeros((1,), np.int32)

    def generate(chunk):
        out = sampler(m.params, chunk.attributes(m.encoding), chunk.indices, zero, ctx.key)
        return out[:, 0]

    assert ctx.predict_fn is not None  # needs_classifier
    summary = attribute_fidelity(ctx.predict_fn, chunks, generate_fn=generate,
                                 attribute_names=ctx.attribute_names,
                                 progress=ctx.progress("fidelity", chunks.num_examples),
                                 total=chunks.num_examples)
    summary["temperature"] = s.fidelity_temperature
    return Estimate(summary)


def _per_attribute_section(results: Mapping[str, Any]) -> list[str]:
    """The report's table of accuracy / AUC per attribute (real faces first, then each model)."""
    real = (results.get("real") or {}).get("fidelity")
    with_fid = [m for m in results["models"] if m.get("fidelity")]
    if not (with_fid or real):
        return []
    sources = ([real] if real else []) + [m["fidelity"] for m in with_fid]
    names = list(sources[0]["per_attribute"])
    undefined = sorted({n for f in sources for n in f["undefined_auc"]})
    cols = (["real faces"] if real else []) + [m["model"] for m in with_fid]
    lines = ["", "### Attribute fidelity per attribute (accuracy / AUC)", "",
             "| attribute | positive rate | " + " | ".join(cols) + " |",
             "|" + "---|" * (len(cols) + 2)]
    for n in names:
        rate = sources[0]["per_attribute"][n]["positive_rate"]
        cells = [f"{f['per_attribute'][n]['accuracy']:.2f} / "
                 f"{fmt_number(f['per_attribute'][n]['auc'], 2)}" for f in sources]
        lines.append(f"| {n} | {rate:.2f} | " + " | ".join(cells) + " |")
    if undefined:
        lines += ["", "AUC undefined (the attribute is constant over the faces scored; left "
                  "out of the mean AUC): " + ", ".join(undefined) + "."]
    return lines


FIDELITY = Estimator(
    name="fidelity", requires="sample", estimate=_fidelity_estimate, needs_classifier=True,
    columns=lambda _: [
        ("attribute accuracy", lambda m: fmt_number((m.get("fidelity") or {}).get(
            "mean_accuracy"))),
        ("attribute AUC", lambda m: fmt_number((m.get("fidelity") or {}).get("mean_auc")))],
    numbers=lambda f: {"fidelity_accuracy": (f.get("mean_accuracy"), None),
                       "fidelity_auc": (f.get("mean_auc"), None)},
    unpaired=("fidelity_accuracy", "fidelity_auc"), section=_per_attribute_section,
    label={"fidelity_accuracy": ("attribute accuracy", 3),
           "fidelity_auc": ("attribute AUC", 3)}.get,
    describe=lambda s: (f"fidelity: classifier `{s['classifier_workdir']}`, generated faces at "
                        f"temperature {s['fidelity_temperature']:g}"))
