"""The figures themselves: attribute vectors of Figure 4, the figure functions of both papers
(labelled grids of `cmma_jax.images`), the datasets' default attributes."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from cmma_jax import data
from cmma_jax.data import exclusions
from cmma_jax.data import registry as data_registry
from cmma_jax.images import labelled_grid, tile_images


# =============================================================================================
# The papers' figures from trained models (`launch/generate.py`)
#
#   Faces from attributes (CMMA paper, Figure 4)     `faces_from_attributes_figure`
#   Changing a face's attributes (Figures 6-7)       `edit_figure`, `removal_figure`
#   Per-layer traversals (MMD-VLAE paper, Fig. 2-3)  `traversal_figure`
#   Face arithmetic A - B + C (MMD-VLAE, Figure 4)   `arithmetic_figure`
#
# `generate_figures(workdirs, output_dir, settings)` makes all of them for a set of trained models.

# Per dataset, the attributes the figures show by default: the data registry's
# `figure_defaults` (rows and columns of Figure 4, the edits of Figure 6, the attribute removed in
# Figure 7, the two that pick face-arithmetic triples).
FIGURE_DEFAULTS: dict[str, dict[str, Any]] = {
    name: dict(d.figure_defaults) for name, d in data_registry.REGISTRY.items()
    if d.figure_defaults is not None}

FIGURES = ("attributes", "edits", "removal", "traversals", "arithmetic")
BASES = ("mode", "zeros", "mean")  # Figure 4's other attributes (`attribute_grid_inputs`)


def figure_defaults(dataset: str) -> dict[str, Any]:
    """The default attribute names of the figures for a dataset (`FIGURE_DEFAULTS`)."""
    if dataset not in FIGURE_DEFAULTS:
        raise ValueError(f"No figure defaults for dataset {dataset!r}; known: "
                         f"{sorted(FIGURE_DEFAULTS)}. Pass the attribute names explicitly.")
    return dict(FIGURE_DEFAULTS[dataset])


def attribute_indices(requested: Sequence[str], available: Sequence[str],
                      dataset: str = "the dataset") -> list[int]:
    """The column of each requested attribute name.

    Raises:
      ValueError: naming the unknown names and listing the available ones.
    """
    available = list(available)
    unknown = [n for n in requested if n not in available]
    if unknown:
        raise ValueError(f"Unknown attribute(s) {unknown} for {dataset}; its attributes are: "
                         f"{', '.join(available)}.")
    return [available.index(n) for n in requested]


# The values that mean "present" and "absent" in a model's encoding (data layer).
on_off_values = exclusions.on_off_values


def attribute_grid_inputs(raw_attributes: np.ndarray, names: Sequence[str],
                          rows: Sequence[str], columns: Sequence[str], encoding: str,
                          base: str = "mode", dataset: str = "the dataset",
                          excluded: np.ndarray | None = None
                          ) -> tuple[np.ndarray, list[str], list[str]]:
    """The attribute vectors of Figure 4: rows set two attributes on/off, columns switch one more
    attribute on at a time.

    Rows, in the paper's order: (not r1, r2), (not r1, not r2), (r1, r2), (r1, not r2), e.g.
    'Female Asian', 'Female Not-Asian', 'Male Asian', 'Male Not-Asian'. The other attributes of a
    row (the paper does not say) come from `base`:
      "mode": each attribute's most common value among the faces with the row's two values (all
        faces if there are none): a typical face of that row;
      "zeros": every other attribute absent;
      "mean": the mean encoded value among the faces with the row's two values.
    Column 0 is the row as it is ("no change"); column c sets `columns[c-1]` to present and the
    attributes it excludes (`data.exclusions`: No_Eyewear for +Eyeglasses) to absent, so that
    every cell is an attribute vector the data has.

    Args:
      raw_attributes: `[N, A]` raw attributes of the faces the base is computed from.
      names: the A attribute names.
      rows: the two row attributes.
      columns: the column attributes.
      encoding: the model's attribute encoding.
      base: "mode", "zeros" or "mean".
      dataset: named in error messages.
      excluded: `[A, A]` exclusions (default: `data.exclusions.exclusions(raw_attributes)`).

    Returns:
      `(attributes [4, 1 + len(columns), A], row_labels, column_labels)`.
    """
    if len(rows) != 2:
        raise ValueError(f"Figure 4 takes two row attributes, got {list(rows)}.")
    if base not in BASES:
        raise ValueError(f"base must be 'mode', 'zeros' or 'mean', got {base!r}.")
    r1, r2 = attribute_indices(rows, names, dataset)
    cols = attribute_indices(columns, names, dataset)
    raw = np.asarray(raw_attributes, np.float32)
    on, off = on_off_values(raw, encoding)
    excluded = exclusions.exclusions(raw) if excluded is None else excluded
    present = raw > 0
    grid, row_labels = [], []
    for v1, v2 in ((False, True), (False, False), (True, True), (True, False)):
        mask = (present[:, r1] == v1) & (present[:, r2] == v2)
        subset = raw[mask] if mask.any() else raw
        if base == "mode":
            row = np.where((subset > 0).mean(0) > 0.5, on, off)
        elif base == "zeros":
            row = off.copy()
        else:
            row = data.encode_attributes(subset, encoding).mean(0)
        row = np.asarray(row, np.float32)
        row[r1] = on[r1] if v1 else off[r1]
        row[r2] = on[r2] if v2 else off[r2]
        cells = [row]
        for c in cols:
            cells.append(exclusions.switch_on(row, c, excluded, on, off))
        grid.append(np.stack(cells))
        row_labels.append(f"{'' if v1 else 'not '}{rows[0]}, {'' if v2 else 'not '}{rows[1]}")
    col_labels = ["no change"] + [f"+{c}" for c in columns]
    return np.stack(grid), row_labels, col_labels


def toggled_attributes(raw_attributes: np.ndarray, index: int, encoding: str,
                       on: np.ndarray, off: np.ndarray,
                       excluded: np.ndarray | None = None) -> np.ndarray:
    """Each face's attributes (in `encoding`) with attribute `index` switched: present -> absent,
    absent -> present, and then what it excludes absent (`data.exclusions.switch_on`; none when
    `excluded` is None). `[n, A]`."""
    raw = np.asarray(raw_attributes, np.float32)
    out = data.encode_attributes(raw, encoding).copy()
    has = raw[:, index] > 0
    if excluded is not None:
        out[~has] = exclusions.switch_on(out[~has], index, excluded, on, off)
    out[:, index] = np.where(has, off[index], on[index])
    return out


def _models_with(models, capability: str):
    """The models that can do `capability` (`cmma_jax.models.CAPABILITIES`)."""
    return [m for m in models if capability in m.capabilities]


def faces_from_attributes_figure(models, raw_attributes: np.ndarray, names: Sequence[str], *,
                                 rows: Sequence[str], columns: Sequence[str], base: str = "mode",
                                 temperature: float = 0.0, seed: int = 0,
                                 dataset: str = "the dataset",
                                 verdicts: dict[str, Any] | None = None) -> Image.Image:
    """Figure 4: one labelled grid per model (rows: two attributes on/off; columns: one more
    attribute switched on), tiled (`images.tile_images`).

    Args:
      models: `cmma_jax.workdirs.TrainedModel`s; those that cannot `sample` are left out.
      raw_attributes: `[N, A]` raw attributes of the faces the row bases come from.
      names: the attribute names.
      rows, columns, base: as `attribute_grid_inputs`.
      temperature: the prior noise scale (0: the paper's "variance set to 0", means only).
      seed: the noise seed (used when temperature > 0; the same noise in every cell).
      verdicts: `verdicts.switch_verdicts` of these columns: each column label then gives the
        classifier's share of faces showing the attribute without → with the switch.
    """
    panels = []
    for m in _models_with(models, "sample"):
        attrs, row_labels, col_labels = attribute_grid_inputs(
            raw_attributes, names, rows, columns, m.encoding, base, dataset)
        r, c, a = attrs.shape
        sample = jax.jit(functools.partial(m.model_lib.sample, config=m.config))
        # One noise draw shared by all cells (batch of one, tiled), so that only the attributes
        # change from cell to cell.
        flat = jnp.asarray(attrs.reshape(r * c, a))
        faces = jax.vmap(lambda y: sample(m.params, y[None], jax.random.key(seed),
                                          temperature)[0])(flat)
        judged = (verdicts or {}).get("models", {}).get(m.label)
        if judged:
            col_labels = [col_labels[0]] + [
                f"{label} {100 * judged[a]['off']:.0f}->{100 * judged[a]['on']:.0f}%"
                if a in judged else label for label, a in zip(col_labels[1:], columns)]
        panels.append(labelled_grid(np.asarray(faces).reshape(r, c, *faces.shape[1:]),
                                    row_labels, col_labels,
                                    title=f"{m.label}, T={temperature:g}"))
    if not panels:
        raise ValueError("No model that can generate faces from attributes.")
    return tile_images(panels)


def edit_figure(models, images: np.ndarray, raw_attributes: np.ndarray, names: Sequence[str], *,
                edits: Sequence[str], face_labels: Sequence[str],
                on_off_from: np.ndarray | None = None,
                dataset: str = "the dataset") -> Image.Image:
    """Figure 6: changing the attributes of existing faces, one grid per model with `edit`.

    Rows: the faces, "no change" (the edit with the faces' own attributes: a reconstruction),
    then one row per attribute in `edits`, switched relative to each face's own value (a face with
    glasses loses them, one without gets them). Columns: the faces. The CMMA edits with
    z = h_μ(x) + f_μ(y_new) - f_μ(y_orig), image g_μ(z) (section 4.5.2, erratum 8); the CVAE
    encodes with the old attributes and decodes with the new; means throughout.

    Args:
      models: `TrainedModel`s; those without `edit` (the CGAN) are left out.
      images: `[n, H, W, 3]` faces.
      raw_attributes: `[n, A]` their raw attributes.
      names: the attribute names.
      edits: the attributes to switch.
      face_labels: n column labels.
      on_off_from: `[N, A]` raw attributes the on/off values and the exclusions
        (`data.exclusions`: switching Eyeglasses on switches No_Eyewear off) come from (default:
        the faces').
    """
    idx = attribute_indices(edits, names, dataset)
    raw = np.asarray(raw_attributes, np.float32)
    excluded = exclusions.exclusions(raw if on_off_from is None else on_off_from)
    panels = []
    for m in _models_with(models, "edit"):
        on, off = on_off_values(raw if on_off_from is None else on_off_from, m.encoding)
        edit = jax.jit(functools.partial(m.model_lib.edit, config=m.config))
        y = data.encode_attributes(raw, m.encoding)
        rows = [np.asarray(images), np.asarray(edit(m.params, images, y, y))]
        labels = ["original", "no change"]
        for i, name in zip(idx, edits):
            rows.append(np.asarray(edit(m.params, images, y, toggled_attributes(
                raw, i, m.encoding, on, off, excluded))))
            labels.append(f"switch {name}")
        panels.append(labelled_grid(np.stack(rows), labels, list(face_labels), title=m.label))
    if not panels:
        raise ValueError("No model that can edit faces (cmma, cvae or a conditional vlae).")
    return tile_images(panels)


def removal_figure(models, images: np.ndarray, raw_attributes: np.ndarray, names: Sequence[str],
                   *, attribute: str, face_labels: Sequence[str],
                   on_off_from: np.ndarray | None = None,
                   dataset: str = "the dataset") -> Image.Image:
    """Figure 7: one attribute removed from faces that have it (e.g. spectacles), one row per
    model with `edit`, under the original faces."""
    (i,) = attribute_indices([attribute], names, dataset)
    raw = np.asarray(raw_attributes, np.float32)
    if not np.all(raw[:, i] > 0):
        raise ValueError(f"removal_figure: every face must have {attribute}.")
    rows, labels = [np.asarray(images)], ["original"]
    for m in _models_with(models, "edit"):
        on, off = on_off_values(raw if on_off_from is None else on_off_from, m.encoding)
        edit = jax.jit(functools.partial(m.model_lib.edit, config=m.config))
        y = data.encode_attributes(raw, m.encoding)
        rows.append(np.asarray(edit(m.params, images, y,
                                    toggled_attributes(raw, i, m.encoding, on, off))))
        labels.append(f"{m.name}: without {attribute}")
    if len(rows) == 1:
        raise ValueError("No model that can edit faces (cmma, cvae or a conditional vlae).")
    return labelled_grid(np.stack(rows), labels, list(face_labels),
                         title=f"Removing {attribute}")


def most_varied_dimensions(means: Sequence[np.ndarray]) -> list[int]:
    """For each latent layer (a list of `[N, d_l]` posterior means), the dimension whose mean
    varies most over the faces: the one the traversal moves by default."""
    return [int(np.argmax(np.var(np.asarray(mu), axis=0))) for mu in means]


def traversal_figure(model, images: np.ndarray, attributes: np.ndarray, *,
                     values: Sequence[float], dims: Sequence[int], face_labels: Sequence[str]
                     ) -> Image.Image:
    """Per-layer traversals of a ladder model (MMD-VLAE paper, Figures 2-3).

    For each layer l and each face, one row: the face's posterior means in every layer, except
    dimension `dims[l]` of layer l, which takes each of `values` (the columns; the paper sweeps
    [-3, 3], the prior's bulk).

    Args:
      model: a `TrainedModel` of the vlae.
      images: `[n, H, W, 3]` faces; attributes: `[n, A]` in the model's encoding.
      values: the values of the moving coordinate.
      dims: one dimension per layer.
      face_labels: n labels ("face 12").
    """
    vlae = model.model_lib
    means, _ = vlae.encode(model.params, images, attributes, config=model.config)
    means = [np.asarray(mu) for mu in means]
    if len(dims) != len(means):
        raise ValueError(f"traversal dims: one per layer ({len(means)}), got {list(dims)}.")
    decode = jax.jit(functools.partial(vlae.decode_latents, config=model.config))
    n, v = images.shape[0], len(values)
    rows, labels = [], []
    for layer, (mu, d) in enumerate(zip(means, dims)):
        if not 0 <= d < mu.shape[1]:
            raise ValueError(f"Layer {layer + 1} has {mu.shape[1]} dimensions; got dim {d}.")
        latents = [np.repeat(z[:, None], v, axis=1).reshape(n * v, -1) for z in means]
        moved = latents[layer].reshape(n, v, -1).copy()
        moved[:, :, d] = np.asarray(values, np.float32)[None, :]
        latents[layer] = moved.reshape(n * v, -1)
        y = np.repeat(np.asarray(attributes)[:, None], v, axis=1).reshape(n * v, -1)
        out = np.asarray(decode(model.params, latents, y)).reshape(n, v, *images.shape[1:])
        rows.extend(out)
        labels.extend(f"z{layer + 1}[{d}], {f}" for f in face_labels)
    return labelled_grid(np.stack(rows), labels, [f"{x:+.1f}" for x in values],
                         title=f"{model.label}: one layer's coordinate swept, the rest fixed")


def arithmetic_figure(model, triples: Sequence[tuple[int, int, int]], images: np.ndarray,
                      attributes: np.ndarray, *, column_labels: Sequence[str]) -> Image.Image:
    """Face arithmetic A - B + C in every layer's latent space (MMD-VLAE paper, Figure 4).

    Args:
      model: a `TrainedModel` of the vlae.
      triples: (a, b, c) indices into `images`, one row each.
      images: `[N, H, W, 3]` faces; attributes: `[N, A]` in the model's encoding.
      column_labels: 4 labels (A, B, C, result).
    """
    a, b, c = (np.asarray(t) for t in zip(*triples))
    result = model.model_lib.face_arithmetic(model.params, images[a], images[b], images[c],
                                          attributes[a], attributes[b], attributes[c],
                                          config=model.config)
    grid = np.stack([images[a], images[b], images[c], np.asarray(result)], axis=1)
    return labelled_grid(grid, [f"{i}, {j}, {k}" for i, j, k in triples], list(column_labels),
                         title=f"{model.label}: A - B + C")


def arithmetic_triples(raw_attributes: np.ndarray, names: Sequence[str],
                       attributes: Sequence[str], count: int,
                       dataset: str = "the dataset") -> list[tuple[int, int, int]]:
    """Face-arithmetic triples from the attributes, after the paper's example ("men with pale skin
    - men with dark skin + women with dark skin = women with pale skin"): A has both attributes, B
    the first only, C neither; the result should have the second only.

    Raises:
      ValueError: if a group has no face.
    """
    i, j = attribute_indices(attributes, names, dataset)
    present = np.asarray(raw_attributes) > 0
    groups = [np.flatnonzero(present[:, i] & present[:, j]),
              np.flatnonzero(present[:, i] & ~present[:, j]),
              np.flatnonzero(~present[:, i] & ~present[:, j])]
    what = [f"{attributes[0]} and {attributes[1]}", f"{attributes[0]} without {attributes[1]}",
            f"neither {attributes[0]} nor {attributes[1]}"]
    for g, w in zip(groups, what):
        if len(g) == 0:
            raise ValueError(f"No face with {w} among the {len(present)} faces read; pass "
                             "explicit triples (--arithmetic_faces=a,b,c) or other attributes.")
    n = min(count, *(len(g) for g in groups))
    return [(int(groups[0][k]), int(groups[1][k]), int(groups[2][k])) for k in range(n)]
