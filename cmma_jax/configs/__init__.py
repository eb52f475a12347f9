"""Configs: one `get_config(arg=None)` per model (`arg`: the preset, "paper", "small" or "tiny").

`CONFIGS` maps a model name to its config module, e.g. `CONFIGS["cmma"].get_config("small")`.
"""

from cmma_jax.configs import base, cgan, cmma, cvae, vlae

CONFIGS = {"cmma": cmma, "cvae": cvae, "cgan": cgan, "vlae": vlae}

__all__ = ["CONFIGS", "base", "cmma", "cvae", "cgan", "vlae"]
