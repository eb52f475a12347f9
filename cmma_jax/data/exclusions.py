"""Attributes that exclude each other, read off the data, so that switching one attribute on keeps
an attribute vector the models have seen.

LFW's and CelebA's attributes come in groups of which a face has at most one (No_Eyewear /
Eyeglasses / Sunglasses; the hair colours and Bald; the three mouth states; the races; ...), and in
pairs that the data never shows together (a mustache and lipstick in LFW). An edit that switches
Eyeglasses on but leaves No_Eyewear on asks the prior p(z | y) about a vector it was never trained
on. Rather than declare the groups per dataset, `exclusions` finds them in the faces at hand: d is
excluded by c when, among the faces with c, d is (almost) never present although independence
would have put it on many of them. `switch_on` then sets c and clears what c excludes.

Pure numpy over raw attributes (positive = present), as the datasets give them; `on_off_values`
gives what "present" and "absent" are in a model's attribute encoding.
"""

from __future__ import annotations

import numpy as np

from cmma_jax.data.pipeline import encode_attributes

# d is excluded by c when at most this share of the faces with c have d...
MAX_SHARE = 0.01
# ...and independence would have put d on at least this many of them (so that a rare pair seen
# never, by chance, in a few faces is not taken for an exclusion).
MIN_EXPECTED = 10.0


def exclusions(raw_attributes: np.ndarray, *, max_share: float = MAX_SHARE,
               min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """`[A, A]` bool: `out[c, d]` when d is (almost) never present on the faces that have c.

    Args:
      raw_attributes: `[N, A]` raw attributes (positive = present) of the faces to read.
      max_share: the largest share of the faces with c that may have d.
      min_expected: the least number of faces with both that independence would give
        (n_c · n_d / N), below which a pair is too rare to judge.

    Returns:
      The matrix, False on its diagonal. Not symmetric in general: Male excludes lipstick in
      LFW (1 of 6,787 men), and lipstick excludes Male.
    """
    present = np.asarray(raw_attributes) > 0
    if present.ndim != 2 or len(present) == 0:
        raise ValueError(f"exclusions needs [N, A] attributes of at least one face, got shape "
                         f"{present.shape}.")
    counts = present.sum(0).astype(np.float64)
    both = present.T.astype(np.float64) @ present.astype(np.float64)
    expected = np.outer(counts, counts) / len(present)
    out = (both <= max_share * counts[:, None]) & (expected >= min_expected)
    np.fill_diagonal(out, False)
    return out


def on_off_values(raw_attributes: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """The values that mean "present" and "absent" for each attribute, in a model's encoding.

    The mean encoded value over the faces where the attribute is present (raw value > 0) and
    absent: 1 and 0 for "binary", +1 and -1 for "signed", typical positive and negative scores
    for LFW's "raw" scores. Without any face on one side, the encoding's nominal value.

    Args:
      raw_attributes: `[N, A]` raw values of some faces of the dataset.
      encoding: the model's attribute encoding.

    Returns:
      `(on, off)`, each `[A]` float32.
    """
    raw = np.asarray(raw_attributes, np.float32)
    encoded = encode_attributes(raw, encoding)
    present = raw > 0
    nominal_on = encode_attributes(np.ones((1, raw.shape[1]), np.float32), encoding)[0]
    nominal_off = encode_attributes(-np.ones((1, raw.shape[1]), np.float32), encoding)[0]
    n_on, n_off = present.sum(0), (~present).sum(0)
    on = np.where(n_on > 0, (encoded * present).sum(0) / np.maximum(n_on, 1), nominal_on)
    off = np.where(n_off > 0, (encoded * ~present).sum(0) / np.maximum(n_off, 1), nominal_off)
    return on.astype(np.float32), off.astype(np.float32)


def switch_on(encoded: np.ndarray, index: int, excluded: np.ndarray, on: np.ndarray,
              off: np.ndarray) -> np.ndarray:
    """Attribute vectors with attribute `index` set to its "on" value and every attribute that it
    excludes (`excluded[index]`, from `exclusions`) set to its "off" value.

    Args:
      encoded: `[..., A]` attribute vectors in a model's encoding (not changed).
      index: the attribute to switch on.
      excluded: `[A, A]` from `exclusions`.
      on, off: `[A]` the encoding's values for present and absent.
    """
    out = np.array(encoded, np.float32, copy=True)
    clear = np.asarray(excluded[index], bool)
    out[..., clear] = np.asarray(off, np.float32)[clear]
    out[..., index] = on[index]
    return out


__all__ = ["MAX_SHARE", "MIN_EXPECTED", "exclusions", "on_off_values", "switch_on"]
