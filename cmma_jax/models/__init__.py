"""The four models and their registry.

Each module implements the model contract of DESIGN.md: `get_model`, `init_state`, `train_step`,
`sample`, and, where the model has them, `encode`, `reconstruct`, `edit` (cmma, cvae, vlae) and
`bound`, `iwae` (cmma, cvae). The trainer picks a module with `MODELS[config.model.name]`.
"""

from cmma_jax.models import cgan, cmma, cvae, vlae

MODELS = {
    "cmma": cmma,
    "cvae": cvae,
    "cgan": cgan,
    "vlae": vlae,
}

__all__ = ["MODELS", "cmma", "cvae", "cgan", "vlae"]
