"""Ground truth for edits and layers (issue #15): models trained on `synthetic_faces` judged
against what their faces were rendered from.

    settings = GroundTruthSettings(num_faces=200, classifier_workdir="workdirs/classifier")
    results = ground_truth(["workdirs/cmma", "workdirs/cvae", "workdirs/vlae"], settings, "gt/")
    # gt/ground_truth.json, gt/ground_truth.md, gt/edits.png, gt/probes.png

Every synthetic face is rendered from a `FaceSpec` (`cmma_jax.data.synthetic_faces`), so the
true counterfactual of a face, the same face with one attribute switched and everything else
unchanged, is known exactly (`render_counterfactuals`; the hair colours switch together, so a
hair colour switched off gives red hair, the colour drawn when none is set).

Edits. For the first `num_faces` faces of a split and each attribute, every model that can edit
(the "edit" capability: cmma, cvae, a conditional vlae) edits the face from its attributes y to
the counterfactual's y' (both in the model's `config.data.attribute_encoding`), and the edit is
compared with the true counterfactual. Both directions are edited: a face without the attribute
gets it switched on ("to_on"), a face with it gets it switched off ("to_off"); every number is
reported pooled over the two and for each. Two references every good edit must beat:
  reconstruction: doing nothing, the model's reconstruction of the unedited face
    (`reconstruct(x, y)`; the same for every attribute);
  regeneration: the face generated from y' alone at temperature 0 (`sample(y', T=0)`), which
    shows the attributes but not the face.
Scores, with pixels in [0, 1] and the model's outputs clipped to [0, 1]:
  mse: the mean over faces of the per-face mean squared error over the 64·64·3 values;
  psnr: 10·log10(1 / mse) in dB, from that mean (not a mean of per-face PSNRs); higher is better;
  mse_changed: the mean over faces of the squared error on the pixels the true edit changes (a
    pixel changes when any of its channels does), the part of the image the edit is about;
  beats_reconstruction, beats_regeneration: the fraction of faces whose edit has a lower MSE.
The overall numbers pool every (face, attribute) pair (each attribute has the same faces, so
they are also the means over the attributes).

With an attribute classifier (`cmma_jax.classifier`, labels "probability > 0.5"), its verdict on
edits, both references and the true counterfactual (the ceiling), against the counterfactual's
attributes: "target", the accuracy on the switched attribute (does the face show y'?), also per
direction; "others", the accuracy on the other attributes (do they keep their values? for a hair
colour switched on, the face's former colour, switched off with it, counts among the others,
judged by its new value).

Probes. Each model that can encode (`encode`; the vlae's four layers each on their own, the
cmma's and cvae's single latent; the cvae's encoder is given the faces' true attributes) encodes
`probe_num_train` faces of `probe_train_split` and `probe_num_test` faces of `probe_test_split`
(the posterior means), and a ridge regression (`ridge_regression`, closed form, features
standardised on the training faces, an intercept) is fitted from the latent to every factor the
faces were drawn from: the 20 attributes (targets 0/1) and every nuisance parameter, the two
periodic angles (`PERIODIC_NUISANCE`) as their cosine and sine. The ridge penalty λ = α·n for α
in `ridge_alphas` is chosen per factor by the squared error on the last `probe_select_fraction` of
the training faces (fitted on the rest), then the probe is refitted on all training faces and
scored on the held-out faces: attributes by the balanced accuracy (the mean of the true-positive
and true-negative rates; chance 0.5) of the probe thresholded at 0.5 (plain accuracy also
reported), nuisance by R² = 1 - SS_res / SS_tot (chance 0, negative when worse than the
held-out mean). When the two splits are the same, the held-out faces follow the training faces.
Some nuisance parameters show on some faces only (glasses_colour with Eyeglasses, skin_tone
without Pale_Skin); they are probed over all faces alike, which bounds their R².
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from cmma_jax import files as files_lib
from cmma_jax import stats
from cmma_jax import classifier as classifier_lib
from cmma_jax.data import pipeline
from cmma_jax.data import synthetic_faces
from cmma_jax.evaluate import report
from cmma_jax.images import heatmap, labelled_grid, save_png, vstack_images
from cmma_jax.models import MODELS
from cmma_jax.progress import Progress
from cmma_jax.workdirs import TrainedModel, load_model, read_workdir

ATTRIBUTE_NAMES = synthetic_faces.ATTRIBUTE_NAMES
OUTPUTS = ("edit", "reconstruction", "regeneration")
DEFAULT_FIGURE_ATTRIBUTES = ("Eyeglasses", "Smiling", "Mustache", "Blond_Hair", "Male")
JSON_FILE, MARKDOWN_FILE = "ground_truth.json", "ground_truth.md"
EDIT_FIGURE_FILE, PROBE_FIGURE_FILE = "edits.png", "probes.png"


class InputError(ValueError):
    """Inputs `ground_truth` cannot score (a model of another dataset, models of different seeds,
    a classifier of other attributes, too few faces); the message says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class GroundTruthSettings:
    """What `ground_truth` computes, and how. The defaults suit a 2-core CPU (a few minutes for
    small-preset models).

    Attributes:
      split: the split whose faces are edited ("test").
      num_faces: its first faces edited, for every attribute (fewer if the split is smaller).
      attributes: the attributes switched (None: all 20).
      batch_size: faces per call of a model or the classifier.
      classifier_workdir: an attribute classifier trained on synthetic_faces
        (`launch/train_classifier.py`); None skips the classifier's verdict.
      probe_train_split, probe_num_train: the faces the probes are fitted on (the first ones).
      probe_test_split, probe_num_test: the held-out faces they are scored on (the first ones, or
        those after the training faces when the two splits are the same).
      ridge_alphas: the grid of α (λ = α · number of fitting faces, on standardised features).
      probe_select_fraction: the share of the training faces on which α is chosen.
      figure_attributes: the attributes of the edit figure (one block each).
      figure_faces: faces per block (half switched on, half switched off where there are).
      show_progress: progress lines on stderr.
    """

    split: str = "test"
    num_faces: int = 200
    attributes: tuple[str, ...] | None = None
    batch_size: int = 50
    classifier_workdir: str | None = None
    probe_train_split: str = "validation"
    probe_num_train: int = 1000
    probe_test_split: str = "test"
    probe_num_test: int = 1000
    ridge_alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    probe_select_fraction: float = 0.2
    figure_attributes: tuple[str, ...] = DEFAULT_FIGURE_ATTRIBUTES
    figure_faces: int = 6
    show_progress: bool = True

    def __post_init__(self):
        for name in ("split", "probe_train_split", "probe_test_split"):
            if getattr(self, name) not in synthetic_faces.SPLITS:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of "
                                 f"{synthetic_faces.SPLITS}.")
        for name in ("num_faces", "batch_size", "figure_faces"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if int(self.probe_num_train) < 10 or int(self.probe_num_test) < 2:
            raise ValueError(f"The probes need at least 10 training and 2 held-out faces; got "
                             f"probe_num_train={self.probe_num_train}, "
                             f"probe_num_test={self.probe_num_test}.")
        if not 0.0 < float(self.probe_select_fraction) < 1.0:
            raise ValueError(f"probe_select_fraction must be in (0, 1), got "
                             f"{self.probe_select_fraction}.")
        if not self.ridge_alphas or min(self.ridge_alphas) <= 0:
            raise ValueError(f"ridge_alphas must be positive numbers, got {self.ridge_alphas}.")
        for field in ("attributes", "figure_attributes"):
            names = getattr(self, field)
            unknown = [n for n in (names or ()) if n not in ATTRIBUTE_NAMES]
            if unknown:
                raise ValueError(f"{field}: unknown attribute(s) {unknown}; synthetic_faces has "
                                 f"{', '.join(ATTRIBUTE_NAMES)}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# =============================================================================================
# Scores (numpy)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error of pixels in [0, 1]:
    10·log10(1 / mse) (infinite for 0)."""
    return float("inf") if mse <= 0 else float(10.0 * math.log10(1.0 / mse))


def per_face_mse(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`[N]`: each face's mean squared error over all its values (float64)."""
    d = np.asarray(images, np.float64) - np.asarray(targets, np.float64)
    return np.mean(d.reshape(len(d), -1) ** 2, axis=1)


def per_face_masked_mse(images: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`[N]`: each face's mean squared error over the pixels of `mask` (`[N, H, W]`; all
    channels of a pixel in it); NaN for a face with an empty mask."""
    d = (np.asarray(images, np.float64) - np.asarray(targets, np.float64)) ** 2
    m = np.asarray(mask, bool)
    total = (d.sum(axis=-1) * m).reshape(len(d), -1).sum(axis=1)
    count = m.reshape(len(m), -1).sum(axis=1) * d.shape[-1]
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def r_squared(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`[T]`: 1 - Σ(t - p)² / Σ(t - mean t)² per column of `[N, T]` arrays; NaN for a constant
    target."""
    p, t = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    ss_res = np.sum((t - p) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`[T]`: the mean over the classes present of each class's recall, per column of `[N, T]`
    boolean arrays (the mean of the true-positive and true-negative rates when both classes
    occur; the accuracy on the one class otherwise)."""
    p, y = np.asarray(predicted, bool), np.asarray(labels, bool)
    pos, neg = y.sum(axis=0), (~y).sum(axis=0)
    tpr = np.where(pos > 0, (p & y).sum(axis=0) / np.maximum(pos, 1), np.nan)
    tnr = np.where(neg > 0, (~p & ~y).sum(axis=0) / np.maximum(neg, 1), np.nan)
    return np.nanmean(np.stack([tpr, tnr]), axis=0)


def _standardise(train_x: np.ndarray):
    x = np.asarray(train_x, np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def ridge_regression(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                     alpha: float) -> np.ndarray:
    """The predictions of a ridge regression at `test_x`, in closed form.

    Features are standardised with the training faces' mean and standard deviation, targets
    centred (an unpenalised intercept), and the weights are
    w = (XᵀX + λ I)⁻¹ Xᵀ (y - ȳ) with λ = α · n (n training rows).

    Args:
      train_x: `[n, d]`; train_y: `[n, T]` (or `[n]`); test_x: `[m, d]`; alpha: > 0.

    Returns:
      `[m, T]` (or `[m]`), float64.
    """
    return _ridge_path(train_x, train_y, test_x, (alpha,))[0]


def _ridge_path(train_x, train_y, test_x, alphas) -> np.ndarray:
    """`ridge_regression` for every α at once (one SVD): `[len(alphas), m, T]`."""
    mean, std = _standardise(train_x)
    x = (np.asarray(train_x, np.float64) - mean) / std
    z = (np.asarray(test_x, np.float64) - mean) / std
    y = np.asarray(train_y, np.float64)
    y_mean = y.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ (y - y_mean)
    out = []
    for alpha in alphas:
        lam = float(alpha) * x.shape[0]
        shrink = s / (s**2 + lam)
        w = vt.T @ (shrink.reshape((-1,) + (1,) * (uty.ndim - 1)) * uty)
        out.append(z @ w + y_mean)
    return np.stack(out)


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
          kinds: Sequence[str], *, alphas: Sequence[float],
          select_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """Linear probes from features to factors, scored on held-out rows.

    For each factor (column of `train_y`), α is chosen from `alphas` by the mean squared error on
    the last `select_fraction` of the training rows of a ridge fitted on the others; the probe is
    then refitted with that α on every training row and scored on the test rows.

    Args:
      train_x, test_x: features `[n, d]`, `[m, d]`.
      train_y, test_y: factors `[n, F]`, `[m, F]`; attributes as 0/1.
      kinds: per factor, "attribute" (scored by the balanced accuracy of `prediction > 0.5`)
        or "nuisance" (scored by R²).
      alphas: the α grid (`ridge_regression`).
      select_fraction: the share of training rows on which α is chosen.

    Returns:
      {"score": `[F]` (balanced accuracy or R², by kind), "accuracy": `[F]` (plain accuracy of
      attributes, NaN for nuisance), "r2": `[F]` (R² of every factor's prediction), "alpha":
      `[F]` the α chosen}.
    """
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y, test_y = np.asarray(train_y, np.float64), np.asarray(test_y, np.float64)
    n = len(train_x)
    n_select = max(1, int(round(select_fraction * n)))
    if n - n_select < 2:
        raise ValueError(f"{n} training rows are too few to choose the ridge penalty on "
                         f"{n_select} of them.")
    path = _ridge_path(train_x[:-n_select], train_y[:-n_select], train_x[-n_select:], alphas)
    errors = np.mean((path - train_y[-n_select:][None]) ** 2, axis=1)  # [alphas, F]
    best = np.argmin(errors, axis=0)
    chosen = np.asarray(alphas, np.float64)[best]
    full = _ridge_path(train_x, train_y, test_x, alphas)  # [alphas, m, F]
    predictions = np.take_along_axis(full, best[None, None, :], axis=0)[0]
    is_attribute = np.array([k == "attribute" for k in kinds])
    labels = test_y > 0.5
    predicted = predictions > 0.5
    r2 = r_squared(predictions, test_y)
    accuracy = np.where(is_attribute, (predicted == labels).mean(axis=0), np.nan)
    balanced = balanced_accuracy(predicted, labels)
    return {"score": np.where(is_attribute, balanced, r2), "accuracy": accuracy, "r2": r2,
            "alpha": chosen}


def factor_table(specs: Sequence[synthetic_faces.FaceSpec]
                 ) -> tuple[list[str], list[str], np.ndarray]:
    """The factors faces were drawn from: `(names, kinds, values [N, F])`.

    The 20 attributes (0/1, kind "attribute") in `ATTRIBUTE_NAMES` order, then every nuisance
    parameter (kind "nuisance") in the order `sample_nuisance` draws them, the periodic angles
    (`PERIODIC_NUISANCE`) as `<name>_cos` and `<name>_sin`.
    """
    if not specs:
        raise ValueError("No faces to tabulate.")
    names = list(ATTRIBUTE_NAMES)
    kinds = ["attribute"] * len(names)
    columns = [[1.0 if s.attributes[n] else 0.0 for s in specs] for n in ATTRIBUTE_NAMES]
    for key in specs[0].nuisance:
        values = np.array([s.nuisance[key] for s in specs], np.float64)
        if key in synthetic_faces.PERIODIC_NUISANCE:
            names += [f"{key}_cos", f"{key}_sin"]
            columns += [np.cos(values), np.sin(values)]
            kinds += ["nuisance", "nuisance"]
        else:
            names.append(key)
            columns.append(values)
            kinds.append("nuisance")
    return names, kinds, np.stack([np.asarray(c, np.float64) for c in columns], axis=1)


def _mse_summary(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    n = int(v.size)
    if n == 0:
        return {"mse": None, "mse_stderr": None, "psnr": None, "num_faces": 0}
    mse = float(v.mean())
    return {"mse": mse, "mse_stderr": stats.standard_error(v),
            "psnr": psnr(mse), "num_faces": n}


def _output_summary(mse: np.ndarray, mse_changed: np.ndarray, to_on: np.ndarray
                    ) -> dict[str, Any]:
    """Pooled and per-direction MSE/PSNR of per-face values (any shape, flattened alike)."""
    mse, mse_changed, to_on = (np.ravel(a) for a in (mse, mse_changed, to_on))
    out = _mse_summary(mse)
    out["mse_changed"] = float(np.nanmean(mse_changed)) if np.isfinite(mse_changed).any() \
        else None
    out["to_on"] = _mse_summary(mse[to_on])
    out["to_off"] = _mse_summary(mse[~to_on])
    return out


def _classifier_summary(correct_target: np.ndarray, correct_others: np.ndarray,
                        to_on: np.ndarray) -> dict[str, Any]:
    t, o, on = (np.ravel(a) for a in (correct_target, correct_others, to_on))

    def mean(a):
        return float(np.mean(a)) if a.size else None

    return {"target": mean(t), "target_to_on": mean(t[on]), "target_to_off": mean(t[~on]),
            "others": mean(o)}


# =============================================================================================
# Models


def _check_synthetic(workdir: str):
    """The workdir's config, if it was trained on synthetic_faces (nothing loaded yet)."""
    config, names = read_workdir(workdir)
    model = config.model.get("name")
    if model not in MODELS:
        hint = (" (an attribute classifier goes to --classifier_workdir)"
                if model == "attribute_classifier" else "")
        raise InputError(f"{workdir} holds a {model!r}, not one of the generative models "
                         f"{sorted(MODELS)}{hint}.")
    dataset = config.data.get("name")
    if dataset != "synthetic_faces":
        raise InputError(
            f"{workdir} was trained on {dataset!r}, not on synthetic_faces: ground truth exists "
            "only for synthetic_faces, whose faces are rendered from known specs. Pass workdirs "
            "of models trained with launch/train.py --dataset=synthetic_faces.")
    if tuple(names) != tuple(ATTRIBUTE_NAMES):
        raise InputError(f"{workdir} has other attributes ({len(names)}) than synthetic_faces "
                         f"({len(ATTRIBUTE_NAMES)}); it was trained on another version of the "
                         "dataset. Retrain it.")
    return config


def _variant(config) -> synthetic_faces.SyntheticFacesConfig:
    return synthetic_faces.config_from_options(config.data.get("options"))


def _batched(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int
             ) -> np.ndarray:
    """`fn` over rows of `arrays` in batches of one size (the last padded by repeating its last
    row, so a jitted `fn` compiles once), concatenated as numpy."""
    n = len(arrays[0])
    size = min(batch_size, n)
    out = []
    for start in range(0, n, size):
        parts = [np.asarray(a[start:start + size]) for a in arrays]
        valid = len(parts[0])
        if valid < size:
            parts = [np.concatenate([p, np.repeat(p[-1:], size - valid, axis=0)]) for p in parts]
        result = fn(*parts)
        out.append(jax.tree_util.tree_map(lambda r: np.asarray(r)[:valid], result))
    if isinstance(out[0], (list, tuple)):
        return [np.concatenate([o[k] for o in out]) for k in range(len(out[0]))]
    return np.concatenate(out)


class _Functions:
    """A model's jitted entry points on float32 numpy inputs, outputs clipped to [0, 1]."""

    def __init__(self, model: TrainedModel):
        lib, config = model.model_lib, model.config
        self.params = jax.device_put(model.params)
        self._edit = jax.jit(functools.partial(lib.edit, config=config)) \
            if "edit" in model.capabilities else None
        self._reconstruct = jax.jit(functools.partial(lib.reconstruct, config=config)) \
            if "reconstruct" in model.capabilities else None
        self._sample = jax.jit(functools.partial(lib.sample, config=config))
        self._encode = jax.jit(functools.partial(lib.encode, config=config)) \
            if "encode" in model.capabilities else None
        self._key = jax.random.key(0)  # temperature 0: the noise is multiplied by 0

    def edit(self, x, y_from, y_to):
        return np.clip(np.asarray(self._edit(self.params, x, y_from, y_to)), 0.0, 1.0)

    def reconstruct(self, x, y):
        return np.clip(np.asarray(self._reconstruct(self.params, x, y)), 0.0, 1.0)

    def regenerate(self, y):
        return np.clip(np.asarray(self._sample(self.params, y, self._key, 0.0)), 0.0, 1.0)

    def encode_means(self, x, y) -> list[np.ndarray]:
        means = self._encode(self.params, x, y)[0]
        return [np.asarray(m) for m in means] if isinstance(means, (list, tuple)) \
            else [np.asarray(means)]


def _short_labels(models: Sequence[TrainedModel]) -> list[str]:
    """The model names, with the workdir's folder where two models share a name."""
    names = [m.name for m in models]
    return [m.name if names.count(m.name) == 1 else
            f"{m.name} ({os.path.basename(os.path.normpath(m.workdir))})" for m in models]


# =============================================================================================
# Figures (Pillow)


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


# =============================================================================================
# The report


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


# =============================================================================================
# The whole thing


def _load_classifier(workdir: str):
    try:
        predict, c_config = classifier_lib.load_predict_fn(workdir, ATTRIBUTE_NAMES)
    except ValueError as e:  # another model's workdir, or other attributes
        raise InputError(f"{e} Pass a workdir of launch/train_classifier.py "
                         "--dataset=synthetic_faces as --classifier_workdir.") from None
    return (lambda x: np.asarray(predict(x))), c_config


def _figure_columns(present: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` faces: half without the attribute (switched on), half with it."""
    off, on = np.flatnonzero(~present), np.flatnonzero(present)
    k_off = min(len(off), max(count - min(len(on), count // 2), 0))
    k_on = min(len(on), count - k_off)
    return np.concatenate([off[:k_off], on[:k_on]]).astype(int)


def _edit_scores(models, functions, labels, settings, config, names, n, progress_enabled,
                 predict, notes):
    """The edit part of `ground_truth`: (edits dict, figure blocks)."""
    originals_u8, raw = synthetic_faces.render_split(config, settings.split, 0, n)
    originals = originals_u8.astype(np.float32) * np.float32(1.0 / 255.0)
    editors = [(m, f, l) for m, f, l in zip(models, functions, labels) if "edit" in m.capabilities]
    for m in models:
        if "edit" not in m.capabilities:
            notes.append(f"{m.workdir} ({m.name}) cannot edit faces (no 'edit' capability): "
                         "left out of the edits.")
    bs = settings.batch_size
    per_model = []
    for m, f, _ in editors:
        y = pipeline.encode_attributes(raw, m.encoding)
        recon = _batched(f.reconstruct, [originals, y], bs)
        per_model.append({"y": y, "reconstructed": recon,
                          **{k: {q: [] for q in ("mse", "mse_changed", "target", "others")}
                             for k in OUTPUTS}})
    counterfactuals: dict[str, Any] = {"per_attribute": {}}
    cf_store = {q: [] for q in ("target", "others")}
    to_on_all, blocks = [], []
    progress = Progress("[ground truth] edits", len(names), enabled=progress_enabled)
    for j, name in enumerate(names):
        col = ATTRIBUTE_NAMES.index(name)
        cf_u8, cf_raw = synthetic_faces.render_counterfactuals(config, settings.split, 0, n, name)
        cf = cf_u8.astype(np.float32) * np.float32(1.0 / 255.0)
        changed = np.any(cf_u8 != originals_u8, axis=-1)
        to_on = cf_raw[:, col] > 0
        to_on_all.append(to_on)
        labels_cf = cf_raw > 0
        entry: dict[str, Any] = {
            "num_to_on": int(to_on.sum()), "num_to_off": int((~to_on).sum()),
            "change_mse": float(per_face_mse(originals, cf).mean()),
            "changed_pixels": float(changed.mean()),
        }
        others_mask = np.ones(len(ATTRIBUTE_NAMES), bool)
        others_mask[col] = False

        def verdict(images):
            predicted = _batched(predict, [images], bs) > 0.5
            return (predicted[:, col] == labels_cf[:, col],
                    (predicted[:, others_mask] == labels_cf[:, others_mask]).mean(axis=1))

        if predict is not None:
            t, o = verdict(cf)
            cf_store["target"].append(t)
            cf_store["others"].append(o)
            entry["classifier"] = _classifier_summary(t, o, to_on)
        counterfactuals["per_attribute"][name] = entry
        chosen = _figure_columns(~to_on, settings.figure_faces) \
            if name in settings.figure_attributes else None
        figure_rows = [originals[chosen], cf[chosen]] if chosen is not None else None
        for (m, f, _), store in zip(editors, per_model):
            y_to = pipeline.encode_attributes(cf_raw, m.encoding)
            outputs = {"edit": _batched(f.edit, [originals, store["y"], y_to], bs),
                       "reconstruction": store["reconstructed"],
                       "regeneration": _batched(f.regenerate, [y_to], bs)}
            for k, images in outputs.items():
                store[k]["mse"].append(per_face_mse(images, cf))
                store[k]["mse_changed"].append(per_face_masked_mse(images, cf, changed))
                if predict is not None:
                    t, o = verdict(images)
                    store[k]["target"].append(t)
                    store[k]["others"].append(o)
            if figure_rows is not None:
                figure_rows.append(outputs["edit"][chosen])
        if figure_rows is not None:
            blocks.append({"attribute": name, "images": np.stack(figure_rows),
                           "rows": ["input", "true counterfactual"]
                           + [f"{l} edit" for _, _, l in editors],
                           "faces": [f"face {i} to {'on' if to_on[i] else 'off'}" for i in chosen]})
        progress.update(j + 1, attribute=name)
    progress.close()
    blocks.sort(key=lambda b: settings.figure_attributes.index(b["attribute"]))
    to_on_all = np.stack(to_on_all)
    if predict is not None:
        counterfactuals["overall"] = {"classifier": _classifier_summary(
            np.stack(cf_store["target"]), np.stack(cf_store["others"]), to_on_all)}
    else:
        counterfactuals["overall"] = {}
    counterfactuals["overall"].update({
        "change_mse": float(np.mean([e["change_mse"] for e in
                                     counterfactuals["per_attribute"].values()])),
        "changed_pixels": float(np.mean([e["changed_pixels"] for e in
                                         counterfactuals["per_attribute"].values()]))})
    model_results = []
    for (m, _, label), store in zip(editors, per_model):
        arrays = {k: {q: np.stack(v) for q, v in store[k].items() if v} for k in OUTPUTS}
        per_attribute = {}
        for j, name in enumerate(names):
            entry = {k: _output_summary(arrays[k]["mse"][j], arrays[k]["mse_changed"][j],
                                        to_on_all[j]) for k in OUTPUTS}
            for ref in ("reconstruction", "regeneration"):
                entry[f"beats_{ref}"] = float(np.mean(arrays["edit"]["mse"][j]
                                                      < arrays[ref]["mse"][j]))
            if predict is not None:
                entry["classifier"] = {k: _classifier_summary(
                    arrays[k]["target"][j], arrays[k]["others"][j], to_on_all[j])
                    for k in OUTPUTS}
            per_attribute[name] = entry
        overall = {k: _output_summary(arrays[k]["mse"], arrays[k]["mse_changed"], to_on_all)
                   for k in OUTPUTS}
        for ref in ("reconstruction", "regeneration"):
            overall[f"beats_{ref}"] = float(np.mean(arrays["edit"]["mse"] < arrays[ref]["mse"]))
        if predict is not None:
            overall["classifier"] = {k: _classifier_summary(
                arrays[k]["target"], arrays[k]["others"], to_on_all) for k in OUTPUTS}
        model_results.append({"workdir": m.workdir, "model": m.name, "label": label,
                              "step": m.step, "attribute_encoding": m.encoding,
                              "per_attribute": per_attribute, "overall": overall})
    return {"num_faces": n, "attributes": list(names), "models": model_results,
            "counterfactuals": counterfactuals}, blocks


def _split_range(config, split: str, start: int, count: int) -> tuple[int, int]:
    size = config.split_sizes()[split]
    stop = min(start + int(count), size)
    return start, stop


def _probes(models, functions, labels, settings, config, progress_enabled, notes):
    """The probe part of `ground_truth`."""
    train_start, train_stop = _split_range(config, settings.probe_train_split, 0,
                                           settings.probe_num_train)
    test_start = train_stop if settings.probe_test_split == settings.probe_train_split else 0
    test_start, test_stop = _split_range(config, settings.probe_test_split, test_start,
                                         settings.probe_num_test)
    n_train, n_test = train_stop - train_start, test_stop - test_start
    if n_train < 10 or n_test < 2:
        raise InputError(
            f"The probes need at least 10 training and 2 held-out faces; "
            f"synthetic_faces/{config.name} gives {n_train} of {settings.probe_train_split!r} "
            f"and {n_test} of {settings.probe_test_split!r}. Use larger splits or other "
            "--probe_train_split / --probe_test_split.")
    out: dict[str, Any] = {
        "train": {"split": settings.probe_train_split, "start": train_start, "stop": train_stop},
        "test": {"split": settings.probe_test_split, "start": test_start, "stop": test_stop},
        "num_train": n_train, "num_test": n_test, "rows": [],
    }
    sets = {}
    for part, (split, start, stop) in (("train", (settings.probe_train_split, train_start,
                                                  train_stop)),
                                       ("test", (settings.probe_test_split, test_start,
                                                 test_stop))):
        specs = synthetic_faces.split_specs(config, split, start, stop)
        images, raw = synthetic_faces.render_split(config, split, start, stop)
        factor_names, kinds, factors = factor_table(specs)
        sets[part] = (images.astype(np.float32) * np.float32(1.0 / 255.0), raw, factors)
    out["factors"], out["kinds"] = factor_names, dict(zip(factor_names, kinds))
    encoders = [(m, f, l) for m, f, l in zip(models, functions, labels)
                if "encode" in m.capabilities]
    for m in models:
        if "encode" not in m.capabilities:
            notes.append(f"{m.workdir} ({m.name}) cannot encode faces: no probe row.")
    progress = Progress("[ground truth] probes", len(encoders), enabled=progress_enabled)
    for k, (m, f, label) in enumerate(encoders):
        features = {}
        for part, (images, raw, _) in sets.items():
            y = pipeline.encode_attributes(raw, m.encoding)
            features[part] = _batched(f.encode_means, [images, y], settings.batch_size)
        layers = len(features["train"])
        for layer in range(layers):
            scores = probe(features["train"][layer], sets["train"][2], features["test"][layer],
                           sets["test"][2], kinds, alphas=settings.ridge_alphas,
                           select_fraction=settings.probe_select_fraction)
            latent = f"z_{layer + 1}" if layers > 1 else "z"
            out["rows"].append({
                "label": f"{label} {latent}", "model": m.name, "workdir": m.workdir,
                "latent": latent, "dim": int(features["train"][layer].shape[1]),
                "scores": dict(zip(factor_names, scores["score"].tolist())),
                "accuracy": {a: float(v) for a, v, kind in
                             zip(factor_names, scores["accuracy"], kinds) if kind == "attribute"},
                "r2": dict(zip(factor_names, scores["r2"].tolist())),
                "alphas": dict(zip(factor_names, scores["alpha"].tolist())),
            })
        progress.update(k + 1)
    progress.close()
    return out


def ground_truth(workdirs: Sequence[str], settings: GroundTruthSettings | None = None,
                 output_dir: str | None = None) -> dict[str, Any]:
    """Scores trained models against the ground truth of synthetic_faces (see the module
    docstring): edits against the true counterfactuals, with both references and the
    classifier's verdict, and linear probes of every latent layer for every factor.

    Args:
      workdirs: training workdirs of models trained on synthetic_faces (any of cmma, cvae, cgan,
        vlae; those that cannot edit or encode are left out of that part, with a note), all of
        one seed of the dataset.
      settings: `GroundTruthSettings`.
      output_dir: where `ground_truth.json`, `ground_truth.md`, `edits.png` (the edit figure)
        and `probes.png` (the probes' heat map) go (None: nothing is written).

    Returns:
      {"date", "variant", "seed", "settings", "machine", "classifier", "edits": {"num_faces",
      "attributes", "models": [per model: "per_attribute" {name: {"edit", "reconstruction",
      "regeneration": {"mse", "mse_stderr", "psnr", "mse_changed", "num_faces", "to_on",
      "to_off"}, "beats_reconstruction", "beats_regeneration", "classifier"?}}, "overall"],
      "counterfactuals": {"per_attribute": {name: {"num_to_on", "num_to_off", "change_mse",
      "changed_pixels", "classifier"?}}, "overall"}}, "probes": {"factors", "kinds", "train",
      "test", "num_train", "num_test", "rows": [per latent: "label", "dim", "scores", "accuracy",
      "r2", "alphas"]}, "files", "notes", "seconds"}.

    Raises:
      InputError (a ValueError): for a workdir not trained on synthetic_faces, models of
        different seeds of it, a classifier of other attributes, or too few faces for the probes.
      FileNotFoundError: for a workdir without a config or checkpoint.
    """
    settings = settings or GroundTruthSettings()
    if output_dir is not None:  # before the work, not after it
        files_lib.ensure_writable_dir(output_dir, "--output_dir")
    if not workdirs:
        raise InputError("No workdirs: pass trained models (--workdirs=...).")
    t_start = time.perf_counter()
    # Every workdir is checked before anything is loaded: a wrong one fails at once.
    configs = [_check_synthetic(w) for w in workdirs]
    variants = [_variant(c) for c in configs]
    seeds = sorted({v.seed for v in variants})
    if len(seeds) > 1:
        raise InputError(
            "The models were trained on different seeds of synthetic_faces ("
            + ", ".join(f"{w}: seed {v.seed}" for w, v in zip(workdirs, variants))
            + "), so their test faces differ: score models of one seed together.")
    # Same seed: example i of a split is the same face in every variant; use the smallest split.
    variant = min(variants, key=lambda v: v.split_sizes()[settings.split])
    names = list(settings.attributes or ATTRIBUTE_NAMES)
    n = min(int(settings.num_faces), variant.split_sizes()[settings.split])
    if n < 1:
        raise InputError(f"The {settings.split!r} split of synthetic_faces/{variant.name} has no "
                         "faces; use another --split.")
    predict, classifier_info = None, None
    if settings.classifier_workdir:
        predict, c_config = _load_classifier(settings.classifier_workdir)
        classifier_info = {"workdir": settings.classifier_workdir,
                           "num_steps": int(c_config.training.num_steps)}
    models = [load_model(w) for w in workdirs]
    functions = [_Functions(m) for m in models]
    labels = _short_labels(models)
    notes: list[str] = []
    if predict is None:
        notes.append("No classifier (--classifier_workdir): the classifier's verdict is "
                      "skipped; train one with launch/train_classifier.py "
                      "--dataset=synthetic_faces.")
    seconds = {}
    t0 = time.perf_counter()
    edits, blocks = _edit_scores(models, functions, labels, settings, variant, names, n,
                                 settings.show_progress, predict, notes)
    seconds["edits"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probes = _probes(models, functions, labels, settings, variant, settings.show_progress, notes)
    seconds["probes"] = time.perf_counter() - t0
    results: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "dataset": "synthetic_faces", "variant": variant.name, "seed": variant.seed,
        "settings": settings.to_dict(), "machine": report.machine_description(),
        "classifier": classifier_info, "edits": edits, "probes": probes, "files": {},
        "notes": notes, "seconds": seconds,
    }
    missing = [a for a in settings.figure_attributes if a not in names]
    if missing:
        notes.append(f"Figure attributes {missing} are not among the attributes switched: "
                     "left out of the figure.")
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        files = results["files"]
        if blocks and edits["models"]:
            files["edit_figure"] = save_png(os.path.join(output_dir, EDIT_FIGURE_FILE),
                                            edit_figure(blocks))
        if probes["rows"]:
            files["probe_figure"] = save_png(os.path.join(output_dir, PROBE_FIGURE_FILE),
                                             probe_figure(probes["rows"], probes["factors"],
                                                          list(probes["kinds"].values())))
        seconds["total"] = time.perf_counter() - t_start
        files["json"] = os.path.join(output_dir, JSON_FILE)
        files["markdown"] = os.path.join(output_dir, MARKDOWN_FILE)
        files_lib.write_json(files["json"], report.json_safe(results))
        files_lib.write_text(files["markdown"], markdown_report(results))
    else:
        seconds["total"] = time.perf_counter() - t_start
    for note in notes:
        if settings.show_progress:
            print(f"note: {note}", file=sys.stderr, flush=True)
    return results
