"""The estimators an evaluation can run, by name: the one list the evaluation, its settings, its
report, its flags and the reproduction read. A new estimator is a module that defines an
`estimator.Estimator` and one line below (docs/design.md, "a new estimator")."""

from __future__ import annotations

from cmma_jax.evaluate import bounds, fidelity, parzen, sharpness
from cmma_jax.evaluate.estimator import Estimator

ESTIMATORS: dict[str, Estimator] = {
    "bound": bounds.BOUND,
    "iwae": bounds.IWAE,
    "parzen": parzen.PARZEN,
    "fidelity": fidelity.FIDELITY,
    "sharpness": sharpness.SHARPNESS,
}


def get(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"Unknown estimator {name!r}; choose from {sorted(ESTIMATORS)}.") \
            from None


def number_label(name: str) -> tuple[str, int]:
    """(label, digits) of a number of `Estimator.numbers`, from the estimator it belongs to
    (a number no estimator claims: its own name, to the unit)."""
    for estimator in ESTIMATORS.values():
        found = estimator.label(name)
        if found is not None:
            return found
    return name, 0


def number_order(name: str) -> tuple:
    """Sort key of the numbers: by estimator in registry order, then by name, K's as numbers."""
    rank = next((i for i, e in enumerate(ESTIMATORS.values()) if e.label(name) is not None),
                len(ESTIMATORS))
    stem = name.rstrip("0123456789")
    return rank, stem, int(name[len(stem):]) if len(stem) < len(name) else -1


def register(estimator: Estimator) -> Estimator:
    """Adds an estimator at run time (e.g. a user's own, before building `EvalSettings`)."""
    if estimator.name in ESTIMATORS:
        raise ValueError(f"An estimator named {estimator.name!r} is already registered.")
    ESTIMATORS[estimator.name] = estimator
    return estimator
