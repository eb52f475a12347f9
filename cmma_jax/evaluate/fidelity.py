"""Attribute fidelity: do generated faces show the attributes they were generated from, as an
attribute classifier (`cmma_jax.classifier`) sees them?"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from cmma_jax import metrics
from cmma_jax.data.reading import Chunk
from cmma_jax.evaluate.common import Array, ProgressFn, call_progress


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
