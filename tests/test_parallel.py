"""Data parallelism on 4 CPU host devices: the mesh step and the pmap step give the parameters of
the single-device step for the same global batch, one step a call or both in one
(`training.steps_per_call`, the trainer's `StepFunctions.run`).

The device count of a process is fixed when JAX starts, so the comparison runs in a subprocess
with `--xla_force_host_platform_device_count=4`.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cmma_jax import parallel

from conftest import run_command

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r'''
import functools, sys
import jax, jax.numpy as jnp, numpy as np
from cmma_jax import configs, parallel
from cmma_jax.models import MODELS


assert jax.device_count() == 4, jax.devices()
def check(name):
  config = configs.CONFIGS[name].get_config("tiny")
  model = MODELS[name]
  rng = np.random.default_rng(0)
  batches = [{"image": rng.uniform(size=(8, 64, 64, 3)).astype(np.float32),
              "attributes": (rng.uniform(size=(8, 5)) < 0.5).astype(np.float32)}
             for _ in range(2)]
  base_key = jax.random.key(1)
  init = model.init_state(jax.random.key(0), config, batches[0])

  def run_mesh(devices):
      mesh = parallel.make_mesh(devices)
      repl = parallel.replicated(mesh)
      step = jax.jit(functools.partial(model.train_step, config=config),
                     in_shardings=(repl, parallel.batch_sharding(mesh), repl),
                     out_shardings=(repl, repl))
      state = parallel.replicate(init, mesh)
      for i, b in enumerate(batches):
          state, metrics = step(state, parallel.shard_batch(b, mesh), jax.random.fold_in(base_key, i))
          jax.block_until_ready(metrics)
      return jax.device_get(state.params if hasattr(state, "params") else state), metrics

  def run_pmap():
      step = jax.pmap(functools.partial(model.train_step, config=config,
                                        axis_name=parallel.PMAP_AXIS),
                      axis_name=parallel.PMAP_AXIS, in_axes=(0, 0, None))
      state = parallel.pmap_replicate(init)
      for i, b in enumerate(batches):
          state, metrics = step(state, parallel.pmap_split_batch(b, 4),
                                jax.random.fold_in(base_key, i))
          jax.block_until_ready(metrics)
      return jax.device_get(parallel.pmap_unreplicate(state).params), \
          jax.tree_util.tree_map(lambda x: x[0], metrics)

  def run_trainer_steps(parallelism):
      # The trainer's step functions with both steps in one call (training.steps_per_call).
      from cmma_jax import steps
      c = configs.CONFIGS[name].get_config("tiny")
      c.training.update(parallelism=parallelism, steps_per_call=2)
      fns = steps.make_step(model.train_step, c)
      state = fns.place_state(jax.tree_util.tree_map(jnp.copy, init))  # donated below
      state, metrics = fns.run(state, [fns.place_batch(b) for b in batches],
                               [jax.random.fold_in(base_key, i) for i in range(2)])
      assert len(metrics) == 2
      state = fns.unplace_state(state)
      return jax.device_get(state.params if hasattr(state, "params") else state), \
          fns.unplace_metrics(metrics[-1])

  single, m1 = run_mesh(jax.devices()[:1])
  mesh4, m4 = run_mesh(jax.devices())
  pmap4, mp = run_pmap()
  mesh4_2, m42 = run_trainer_steps("mesh")
  pmap4_2, mp2 = run_trainer_steps("pmap")
  worst = 0.0
  for label, other in (("mesh", mesh4), ("pmap", pmap4), ("mesh, 2 steps a call", mesh4_2),
                       ("pmap, 2 steps a call", pmap4_2)):
      for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(other),
                      strict=True):
          np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5, err_msg=label)
          worst = max(worst, float(np.max(np.abs(a - b))))
  for k in m1:
      for other in (m4, mp, m42, mp2):
          np.testing.assert_allclose(float(other[k]), float(m1[k]), rtol=1e-4, err_msg=k)
  # The steps did change the parameters: the comparison is not between three copies of init.
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(jax.device_get(init.params))))
  assert moved > 1e-4, moved
  print(f"OK {name}: max |difference| {worst:.2e}, parameters moved by up to {moved:.2e}")

for name in sys.argv[1:]:
  check(name)
'''


def test_mesh_and_pmap_steps_match_one_device():
    # cvae takes the same path as cmma (gaussian.elbo_train_step with a globalized bound).
    models = ["cmma", "cgan", "vlae"]
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    # One subprocess for the four models: JAX starts once.
    result = run_command([sys.executable, "-c", SCRIPT, *models], env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for model in models:
        assert f"OK {model}" in result.stdout


def test_batch_split_helpers():
    batch = {"image": np.arange(8 * 2).reshape(8, 2)}
    split = parallel.pmap_split_batch(batch, 4)
    assert split["image"].shape == (4, 2, 2)
    np.testing.assert_array_equal(split["image"].reshape(8, 2), batch["image"])
    with pytest.raises(ValueError, match="does not split over 3 devices"):
        parallel.pmap_split_batch(batch, 3)
