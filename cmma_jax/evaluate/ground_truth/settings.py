"""What `ground_truth` computes (`GroundTruthSettings`), what it refuses (`InputError`), and the
names of what it writes."""

from __future__ import annotations

import dataclasses
from typing import Any

from cmma_jax.data import synthetic_faces

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
    ridge_alphas: tuple[float, ...] = dataclasses.field(
        default=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0), metadata={"flag": "positive_floats"})
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
