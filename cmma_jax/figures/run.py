"""`generate_figures`: what `launch/generate.py` draws (`FigureSettings`), from workdirs to PNGs
(and the classifier's verdicts beside them)."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import ml_collections
import numpy as np

from cmma_jax import configs, data, files
from cmma_jax import verdicts as verdicts_lib
from cmma_jax.data.reading import SplitReader
from cmma_jax.figures.drawing import (BASES, FIGURE_DEFAULTS, FIGURES, _models_with,
                                      arithmetic_figure, arithmetic_triples, attribute_indices,
                                      edit_figure, faces_from_attributes_figure, figure_defaults,
                                      most_varied_dimensions, removal_figure, traversal_figure)
from cmma_jax.images import save_png
from cmma_jax.workdirs import load_model, read_workdir, split_option_differences


@dataclasses.dataclass(frozen=True)
class FigureSettings:
    """What `generate_figures` draws. Attribute names left as None take the dataset's defaults
    (`FIGURE_DEFAULTS`).

    Attributes:
      figures: any of `FIGURES`; a figure no model can make is skipped (and said so).
      split: the faces and attributes the figures start from.
      pool_size: faces of the split read (for the row bases, the faces with an attribute, the
        arithmetic triples).
      faces: indices into the split of the faces to edit and traverse (None: the first
        `num_faces`).
      num_faces: faces per edit/traversal figure when `faces` is None.
      rows, columns: Figure 4's two row attributes and its column attributes (None: the
        dataset's defaults).
      base: Figure 4's other attributes: the mode of the split, zeros or the mean
        (`attribute_grid_inputs`).
      temperature: Figure 4's noise scale (0: means only, as in the paper).
      edits: attributes switched in Figure 6 (None: the dataset's defaults).
      remove: the attribute removed in Figure 7 (None: Eyeglasses).
      traverse_values: low,high,count of the swept coordinate.
      traverse_dims: one dimension per ladder layer (None: the most varied,
        `most_varied_dimensions`).
      arithmetic: the two attributes that pick the triples (`arithmetic_triples`).
      arithmetic_faces: explicit (a, b, c) triples of split indices (overrides `arithmetic`).
      num_triples: rows of the arithmetic figure.
      seed: noise seed.
      data_dir, prepared_dir: where the raw folder and the prepared datasets are now, if they
        moved since training (None: as the models were trained).
      png_colors: quantise the PNGs to this many colours (smaller files; None: full colour).
      classifier_workdir: an attribute classifier (`launch/train_classifier.py`) of the models'
        attributes: its verdict on each column of Figure 4 and each edit of Figure 6
        (`cmma_jax.verdicts`) goes beside them (`*_verdicts.md`/`.json`) and into Figure 4's
        column labels. None: no verdict.
      verdict_faces: faces judged per model, attribute and side of the switch.
    """

    figures: tuple[str, ...] = FIGURES
    split: str = "test"
    pool_size: int = 500
    faces: tuple[int, ...] | None = dataclasses.field(default=None, metadata={"flag": "indices"})
    num_faces: int = 6
    rows: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    base: str = dataclasses.field(default="mode", metadata={"choices": BASES})
    temperature: float = 0.0
    edits: tuple[str, ...] | None = None
    remove: str | None = None
    traverse_values: tuple[float, float, int] = dataclasses.field(
        default=(-3.0, 3.0, 7), metadata={"flag": "floats", "count": 3})
    traverse_dims: tuple[int, ...] | None = dataclasses.field(default=None,
                                                              metadata={"flag": "indices"})
    arithmetic: tuple[str, ...] | None = None
    arithmetic_faces: tuple[tuple[int, int, int], ...] | None = dataclasses.field(
        default=None, metadata={"flag": "index_triples"})
    num_triples: int = 4
    seed: int = 0
    data_dir: str | None = None
    prepared_dir: str | None = None
    png_colors: int | None = None
    classifier_workdir: str | None = None
    verdict_faces: int = verdicts_lib.NUM_FACES

    def __post_init__(self):
        unknown = sorted(set(self.figures) - set(FIGURES))
        if unknown:
            raise ValueError(f"Unknown figure(s) {unknown}; choose from {FIGURES}.")
        low, high, count = self.traverse_values
        if not (float(count).is_integer() and count >= 2):
            raise ValueError(f"traverse_values=low,high,count: count must be an integer >= 2, "
                             f"got {count:g}.")
        # As given on the command line (three numbers): the count as an int.
        object.__setattr__(self, "traverse_values", (float(low), float(high), int(count)))


def generate_figures(workdirs: Sequence[str], output_dir: str,
                     settings: FigureSettings | None = None,
                     log: Callable[[str], None] = print) -> dict[str, str]:
    """Draws the papers' figures for trained models and writes them as PNG files.

    Files (in `output_dir`): `faces_from_attributes.png` (Figure 4, every model that samples, side
    by side), `edits.png` (Figure 6, every model that edits), `remove_<attribute>.png` (Figure 7),
    and for each ladder model `traversals_<name>.png` and `arithmetic_<name>.png` (<name>: the
    workdir's folder name).

    Args:
      workdirs: training workdirs, all of one dataset.
      output_dir: where the PNGs go.
      settings: `FigureSettings`.
      log: called with one line per figure written or skipped.

    Returns:
      `{figure name: path}` of the files written.

    Raises:
      ValueError: for an unknown attribute name (the message lists the dataset's attributes),
        models of different datasets, or face indices outside the faces read.
    """
    settings = settings or FigureSettings()
    files.ensure_writable_dir(output_dir, "--output_dir")  # before the work, not after it
    if not workdirs:
        raise ValueError("No workdirs to draw figures from.")
    # The names are checked before any model is loaded: a typo fails at once.
    first_config, names = read_workdir(workdirs[0])
    dataset = first_config.data.name
    defaults = figure_defaults(dataset) if dataset in FIGURE_DEFAULTS else {}

    def pick(field):
        value = getattr(settings, field)
        if value is None:
            if field not in defaults:
                raise ValueError(f"No default {field} for {dataset!r}: set it explicitly.")
            value = defaults[field]
        return value

    # Check every attribute name before any work.
    rows, columns, edits = tuple(pick("rows")), tuple(pick("columns")), tuple(pick("edits"))
    remove, arithmetic = pick("remove"), tuple(pick("arithmetic"))
    label = f"dataset {dataset!r}"
    attribute_indices(list(rows) + list(columns) + list(edits) + [remove] + list(arithmetic),
                      names, label)
    models = [load_model(w) for w in workdirs]
    section = ml_collections.ConfigDict(models[0].config.data.to_dict())
    for m in models[1:]:
        if ((m.config.data.name, m.attribute_names) != (section.name, models[0].attribute_names)
                or split_option_differences(section, m.config.data)):
            raise ValueError(f"{m.workdir} and {models[0].workdir} were trained on different "
                             "datasets, attributes or splits: draw figures of one dataset "
                             "together.")
    configs.base.set_folders(section, data_dir=settings.data_dir,
                             prepared_dir=settings.prepared_dir)

    needed = settings.pool_size
    if settings.faces:
        needed = max(needed, max(settings.faces) + 1)
    if settings.arithmetic_faces:
        needed = max(needed, max(max(t) for t in settings.arithmetic_faces) + 1)
    reader = SplitReader(section, settings.split, batch_size=64, limit=needed)
    chunks = list(reader)
    images = np.concatenate([c.images[: c.num_valid] for c in chunks])
    raw = np.concatenate([c.raw_attributes[: c.num_valid] for c in chunks])
    faces = list(settings.faces) if settings.faces else list(range(min(settings.num_faces,
                                                                           len(images))))
    bad = [f for f in faces if not 0 <= f < len(images)]
    if bad:
        raise ValueError(f"Face indices {bad} are outside the {len(images)} faces of the "
                         f"{settings.split!r} split.")
    face_labels = [f"face {f}" for f in faces]
    os.makedirs(output_dir, exist_ok=True)
    written: dict[str, str] = {}

    def save(name, image):
        written[name] = save_png(os.path.join(output_dir, f"{name}.png"), image,
                                 colors=settings.png_colors)
        log(f"wrote {written[name]}")

    predict_fn = None
    if settings.classifier_workdir:
        # Here, not at the top: drawing figures needs no trainer (the classifier's module loads
        # it); only the verdict needs a trained classifier.
        from cmma_jax import classifier as classifier_lib  # noqa: PLC0415

        predict_fn = classifier_lib.load_predict_fn(settings.classifier_workdir, names)[0]

    def judge(name, attributes, capability, title):
        if predict_fn is None:
            return None
        judged = verdicts_lib.switch_verdicts(
            models, images, raw, list(names), attributes, predict_fn, capability=capability,
            temperature=settings.temperature, seed=settings.seed,
            num_faces=settings.verdict_faces)
        written[f"{name}_verdicts"] = files.write_text(
            os.path.join(output_dir, f"{name}_verdicts.md"), verdicts_lib.markdown(judged, title))
        files.write_json(os.path.join(output_dir, f"{name}_verdicts.json"), judged)
        log(f"wrote {written[f'{name}_verdicts']}")
        return judged

    if "attributes" in settings.figures:
        judged = judge("faces_from_attributes", list(columns), "sample",
                       "Faces from attributes: is the switched attribute visible?")
        save("faces_from_attributes", faces_from_attributes_figure(
            models, raw, names, rows=rows, columns=columns, base=settings.base,
            temperature=settings.temperature, seed=settings.seed, dataset=label,
            verdicts=judged))
    editors = _models_with(models, "edit")
    if "edits" in settings.figures:
        if editors:
            judge("edits", list(edits), "edit", "Edits: is the switched attribute visible?")
            save("edits", edit_figure(editors, images[faces], raw[faces], names, edits=edits,
                                      face_labels=face_labels, on_off_from=raw, dataset=label))
        else:
            log("skipped edits: no model that can edit faces (cmma, cvae)")
    if "removal" in settings.figures:
        (r,) = attribute_indices([remove], names, label)
        with_attribute = np.flatnonzero(raw[:, r] > 0)[: len(faces)]
        if not editors:
            log("skipped removal: no model that can edit faces (cmma, cvae)")
        elif len(with_attribute) == 0:
            log(f"skipped removal: no face with {remove} among the {len(raw)} faces read")
        else:
            save(f"remove_{remove}", removal_figure(
                editors, images[with_attribute], raw[with_attribute], names, attribute=remove,
                face_labels=[f"face {f}" for f in with_attribute], on_off_from=raw,
                dataset=label))
    ladders = _models_with(models, "traverse")
    if ("traversals" in settings.figures or "arithmetic" in settings.figures) and not ladders:
        log("skipped traversals and arithmetic: no ladder model (vlae) among the workdirs")
    for m in ladders:
        tag = os.path.basename(os.path.normpath(m.workdir))
        y_all = data.encode_attributes(raw, m.encoding)
        if "traversals" in settings.figures:
            if settings.traverse_dims is not None:
                dims = list(settings.traverse_dims)
            else:
                means, _ = m.model_lib.encode(m.params, images[:256], y_all[:256], config=m.config)
                dims = most_varied_dimensions(means)
            low, high, count = settings.traverse_values
            values = np.linspace(float(low), float(high), int(count))
            save(f"traversals_{tag}", traversal_figure(
                m, images[faces[:3]], y_all[faces[:3]], values=values, dims=dims,
                face_labels=face_labels[:3]))
        if "arithmetic" in settings.figures:
            if settings.arithmetic_faces:
                triples = [tuple(int(i) for i in t) for t in settings.arithmetic_faces]
                labels = ["A", "B", "C", "A - B + C"]
            else:
                triples = arithmetic_triples(raw, names, arithmetic, settings.num_triples, label)
                a1, a2 = arithmetic
                labels = [f"A: {a1}, {a2}", f"B: {a1}", "C: neither", "A-B+C"]
            save(f"arithmetic_{tag}", arithmetic_figure(m, triples, images, y_all,
                                                        column_labels=labels))
    return written
