"""Test-wide settings.

Rank promotion raises, so that a silently broadcast shape is an error in every test. Tests run on
CPU in float32 unless a test asks for float64 explicitly (`jax.experimental.enable_x64`).
"""

import os

# Keep XLA from grabbing every core for its own thread pool on small CI machines; tests are tiny.
os.environ.setdefault("XLA_FLAGS", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
