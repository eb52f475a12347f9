"""The pictures of the ground truth: the edit figure (edits against the true counterfactuals) and
the probes' heat maps (drawn by `cmma_jax.images.heatmap`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from cmma_jax.images import heatmap, labelled_grid, vstack_images


def edit_figure(blocks: Sequence[Mapping[str, Any]]) -> Image.Image:
    """Edits against the truth, one block per attribute stacked vertically: rows "input", "true
    counterfactual", then each model's edit; columns the faces (`[n, 64, 64, 3]` in [0, 1]).

    Args:
      blocks: dicts with "attribute", "faces" (column labels), "rows" (row labels) and "images"
        (`[rows, n, 64, 64, 3]`).
    """
    panels = [labelled_grid(np.asarray(b["images"]), list(b["rows"]), list(b["faces"]),
                            title=f"switch {b['attribute']}") for b in blocks]
    if not panels:
        raise ValueError("No edit blocks to draw.")
    return vstack_images(panels, gap=12)


def probe_figure(rows: Sequence[Mapping[str, Any]], factors: Sequence[str],
                 kinds: Sequence[str]) -> Image.Image:
    """The probes as two heat maps stacked: latent rows × attributes (balanced accuracy, 0.5 to
    1) above latent rows × nuisance factors (R², 0 to 1)."""
    labels = [f"{r['label']} (d={r['dim']})" for r in rows]
    panels = []
    for kind, low, title in (("attribute", 0.5, "Attributes: held-out balanced accuracy of a "
                              "ridge probe (chance 0.5)"),
                             ("nuisance", 0.0, "Nuisance: held-out R^2 of a ridge probe "
                              "(chance 0)")):
        cols = [f for f, k in zip(factors, kinds) if k == kind]
        values = np.array([[r["scores"][f] if r["scores"][f] is not None else np.nan
                            for f in cols] for r in rows], np.float64)
        panels.append(heatmap(values, labels, cols, low=low, high=1.0, title=title))
    return vstack_images(panels, gap=16)
