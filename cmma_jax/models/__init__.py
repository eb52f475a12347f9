"""The four models, their registry, and what each can do.

Each module implements the model contract of docs/design.md: `get_model`, `init_state`,
`train_step`, `sample`, `capabilities(config)` and `PROGRESS_METRICS` (the metric names a progress
line shows), and the functions its capabilities name: `encode`, `reconstruct` (cmma, cvae, vlae),
`edit` (cmma, cvae, a conditional vlae), `bound`, `iwae` (cmma, cvae), `traverse`,
`face_arithmetic` (vlae). The trainer picks a module with `MODELS[config.model.name]`.

  common.py    helpers every model uses (optimizers, train states, entry points, pmap helpers).
  gaussian.py  what the Gaussian latent-variable models (cmma, cvae) share.
"""

from cmma_jax.models import cgan, cmma, cvae, vlae
from cmma_jax.models.common import CAPABILITIES

MODELS = {
    "cmma": cmma,
    "cvae": cvae,
    "cgan": cgan,
    "vlae": vlae,
}


def capabilities(config) -> frozenset[str]:
    """What the model of `config` (`config.model.name`) can do: a subset of `CAPABILITIES`."""
    name = config.model.name
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    caps = MODELS[name].capabilities(config)
    unknown = caps - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"Model {name!r} declares unknown capabilities {sorted(unknown)}.")
    return caps


__all__ = ["MODELS", "CAPABILITIES", "capabilities", "cmma", "cvae", "cgan", "vlae"]
