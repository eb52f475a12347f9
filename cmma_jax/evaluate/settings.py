"""What an evaluation computes, and how (`EvalSettings`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cmma_jax.evaluate import registry

ESTIMATORS = tuple(registry.ESTIMATORS)  # the built-in estimators' names


def _registered() -> tuple[str, ...]:
    return tuple(registry.ESTIMATORS)


def _default_sigmas() -> tuple[float, ...]:
    # Log-spaced from 0.02 to 0.8 (pixel values are in [0, 1]), ~0.1 decade apart.
    return tuple(float(s) for s in np.round(np.geomspace(0.02, 0.8, 17), 5))


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What `evaluate_workdirs` computes, and how. The defaults suit a 2-core CPU.

    Attributes:
      split: the split scored ("test").
      validation_split: the split on which the Parzen σ is chosen ("validation").
      estimators: names in `registry.ESTIMATORS` (default: all of them).
      num_test: faces of `split` for the bound, IWAE and fidelity (None: all of them).
      batch_size: faces per call for the bound, IWAE and fidelity.
      bound_samples: Monte Carlo samples of z per face for the variational bound (the paper: 1).
      iwae_samples: the K's of the importance-weighted bound; they share the first K samples.
      iwae_sample_chunk: importance samples per call (memory: batch_size × this many images).
      parzen_num_test: faces of `split` scored by Parzen (None: all).
      parzen_num_validation: faces of `validation_split` used to choose σ (None: all).
      parzen_samples: S, faces generated per test face.
      parzen_sigmas: the σ grid (default: 17 values from 0.02 to 0.8, log-spaced).
      parzen_temperature: scale of the prior noise for the generated faces (1: the model).
      parzen_batch: test faces per call (memory: parzen_batch × parzen_sample_chunk images).
      parzen_sample_chunk: generated faces per test face per call.
      classifier_workdir: a trained attribute classifier (`launch/train_classifier.py`); without
        one the fidelity is skipped.
      fidelity_temperature: temperature of the faces the classifier scores.
      seed: the base random seed.
      data_dir: the raw folder of celeba/lfw (None: as the models were trained).
      prepared_dir: where prepared datasets live (None: as the models were trained).
      show_progress: print progress lines (to stderr) during long estimators.
    """

    split: str = "test"
    validation_split: str = "validation"
    estimators: tuple[str, ...] = dataclasses.field(default_factory=_registered)
    num_test: int | None = None
    batch_size: int = 32
    bound_samples: int = 1
    iwae_samples: tuple[int, ...] = dataclasses.field(default=(1, 10, 100),
                                                      metadata={"flag": "positive_ints"})
    iwae_sample_chunk: int = 10
    parzen_num_test: int | None = 100
    parzen_num_validation: int | None = 100
    parzen_samples: int = 200
    parzen_sigmas: tuple[float, ...] = dataclasses.field(default_factory=_default_sigmas,
                                                         metadata={"flag": "positive_floats"})
    parzen_temperature: float = 1.0
    parzen_batch: int = 10
    parzen_sample_chunk: int = 50
    classifier_workdir: str | None = None
    fidelity_temperature: float = 1.0
    seed: int = 0
    data_dir: str | None = None
    prepared_dir: str | None = None
    show_progress: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.estimators) - set(registry.ESTIMATORS))
        if unknown:
            raise ValueError(f"Unknown estimator(s) {unknown}; choose from "
                             f"{tuple(registry.ESTIMATORS)}.")
        positive = ("batch_size", "bound_samples", "iwae_sample_chunk", "parzen_samples",
                    "parzen_batch", "parzen_sample_chunk")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("num_test", "parzen_num_test", "parzen_num_validation"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be positive or None (all), got {value}.")
        if not self.iwae_samples or any(int(k) < 1 for k in self.iwae_samples):
            raise ValueError(f"iwae_samples must be positive ints, got {self.iwae_samples}.")
        if not self.parzen_sigmas or any(float(s) <= 0 for s in self.parzen_sigmas):
            raise ValueError(f"parzen_sigmas must be positive, got {self.parzen_sigmas}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}
