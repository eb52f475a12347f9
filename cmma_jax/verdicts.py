"""The attribute classifier's verdict on the figures' columns: does switching an attribute on
make it visible?

For each model and each attribute c of a figure, faces are generated (or edited) from the
attribute vectors of real faces that do not have c, once as they are and once with c switched on
(`data.exclusions.switch_on`: what c excludes is switched off). The classifier
(`cmma_jax.classifier`) says which faces show c (probability > 0.5); the verdict is the share of
faces that show it, without and with the switch. A switch that works moves the share from about
the "off" level to about the share of real faces with c that the classifier recognises (its
recall, given beside). Faces from attributes use the figure's temperature, so the faces judged
are those drawn.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from cmma_jax import data
from cmma_jax.data import exclusions

# Faces generated (or edited) per attribute, per model and per side of the switch.
NUM_FACES = 100


def _shares(predict_fn: Callable, faces: np.ndarray, index: int, batch: int = 50) -> float:
    probs = np.concatenate([np.asarray(predict_fn(faces[i:i + batch]))[:, index]
                            for i in range(0, len(faces), batch)])
    return float(np.mean(probs > 0.5))


def switch_verdicts(models, images: np.ndarray, raw_attributes: np.ndarray,
                    names: Sequence[str], attributes: Sequence[str], predict_fn: Callable, *,
                    capability: str = "sample", temperature: float = 0.0, seed: int = 0,
                    num_faces: int = NUM_FACES) -> dict[str, Any]:
    """The classifier's share of faces showing each attribute, without and with it switched on.

    Args:
      models: `TrainedModel`s; those without `capability` are left out.
      images, raw_attributes: `[N, ...]` real faces of a split and their raw attributes (the
        pool the attribute vectors, the exclusions and the faces to edit come from).
      names: the attribute names.
      attributes: the attributes to judge (the figure's columns).
      predict_fn: `images [B, 64, 64, 3] -> probabilities [B, A]` (the classifier).
      capability: "sample" (faces from attributes, Figure 4) or "edit" (Figure 6: the real faces
        edited).
      temperature, seed: of the generated faces ("sample").
      num_faces: faces per side of the switch (the first real faces without the attribute).

    Returns:
      `{"attributes": [...], "real": {attr: share of real faces with it that the classifier
      recognises}, "models": {label: {attr: {"off": share, "on": share, "n": faces}}}}`.
    """
    raw = np.asarray(raw_attributes, np.float32)
    index = {a: names.index(a) for a in attributes}
    excluded = exclusions.exclusions(raw)
    real = {}
    for a, i in index.items():
        has = raw[:, i] > 0
        real[a] = _shares(predict_fn, images[has][:num_faces], i) if has.any() else float("nan")
    out: dict[str, Any] = {"attributes": list(attributes), "real": real, "models": {},
                           "capability": capability, "temperature": temperature}
    for m in models:
        if capability not in m.capabilities:
            continue
        on, off = exclusions.on_off_values(raw, m.encoding)
        encoded = data.encode_attributes(raw, m.encoding)
        if capability == "sample":
            sample = jax.jit(functools.partial(m.model_lib.sample, config=m.config),
                             static_argnames=("temperature",))
            make = lambda y, x: sample(m.params, y, jax.random.key(seed),  # noqa: E731
                                       temperature=temperature)
        else:
            edit = jax.jit(functools.partial(m.model_lib.edit, config=m.config))
            make = lambda y, x, y0: edit(m.params, x, y0, y)  # noqa: E731
        per_attribute = {}
        for a, i in index.items():
            rows = np.flatnonzero(raw[:, i] <= 0)[:num_faces]
            if len(rows) == 0:
                continue
            y_off = encoded[rows]
            y_on = exclusions.switch_on(y_off, i, excluded, on, off)
            if capability == "sample":
                faces_off, faces_on = (np.asarray(make(y, None)) for y in (y_off, y_on))
            else:
                x = images[rows]
                faces_off = np.asarray(make(y_off, x, y_off))
                faces_on = np.asarray(make(y_on, x, y_off))
            per_attribute[a] = {"off": _shares(predict_fn, faces_off, i),
                                "on": _shares(predict_fn, faces_on, i), "n": int(len(rows))}
        out["models"][m.label] = per_attribute
    return out


def markdown(verdicts: dict[str, Any], title: str) -> str:
    """A table: one row per model, one column per attribute, "off → on" shares in percent, and
    the real faces' row (the classifier's recall on real faces with the attribute)."""
    attrs = verdicts["attributes"]
    lines = [f"### {title}", "",
             "Share of faces the attribute classifier says show the attribute (P > 0.5), "
             f"{'generated at T=' + format(verdicts['temperature'], 'g') if verdicts['capability'] == 'sample' else 'edited'}"
             " from real faces' attributes without it (off) and with it switched on (on).", "",
             "| model | " + " | ".join(attrs) + " |",
             "| --- |" + " ---: |" * len(attrs)]
    for label, row in verdicts["models"].items():
        cells = [f"{100 * row[a]['off']:.0f}% → **{100 * row[a]['on']:.0f}%**" if a in row
                 else "–" for a in attrs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| real faces with it (classifier recall) | "
                 + " | ".join(f"{100 * verdicts['real'][a]:.0f}%" for a in attrs) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["NUM_FACES", "switch_verdicts", "markdown"]
