"""cmma_jax: conditional generative models of faces in JAX.

The objectives researchers import (`cmma_jax.losses`, `cmma_jax.metrics`) are attributes of the
package as well, loaded on first use (`import cmma_jax; cmma_jax.losses.cmma_elbo`), so that
`import cmma_jax` itself stays cheap. The rest of the package (the models, the trainer, the data)
is imported by module (`from cmma_jax import train`).

Modules:
  losses: the objectives (likelihoods, KL, conditional ELBOs, IWAE, MMD, GAN losses).
  metrics: evaluation estimators (Parzen window, ROC AUC, accuracy).
"""

import importlib

# The one place the version is written: pyproject.toml reads it (tool.setuptools.dynamic).
__version__ = "0.6.0"

_LAZY = ("losses", "metrics")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", "losses", "metrics"]
