"""cmma_jax: conditional generative models of faces in JAX.

Modules:
  losses: the objectives (likelihoods, KL, conditional ELBOs, IWAE, MMD, GAN losses).
  metrics: evaluation estimators (Parzen window).
"""

__version__ = "0.1.0"
