"""The numbers of the ground truth, in numpy: PSNR, per-face (masked) MSE, R², balanced
accuracy, closed-form ridge regression and the linear probes fitted with it."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


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
    # Constant: every value equal (the mean of n equal values can differ from them by rounding,
    # leaving a spurious ss_tot of ~1e-30 that would give any number).
    varies = np.any(t != t[:1], axis=0) & (ss_tot > 0)
    return np.where(varies, 1.0 - ss_res / np.where(varies, ss_tot, 1.0), np.nan)


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
