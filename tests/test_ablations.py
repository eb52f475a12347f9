"""The ablations of the CMMA's learnt prior (issue #21), each a config option whose default is
the paper's model: a KL warm-up, a floor under the prior's variance, a slower attribute network.
Each is checked against what it must do to one step or one forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmma_jax import nets, presets, workdirs
from cmma_jax.configs import cmma as cmma_config
from cmma_jax.configs import cvae as cvae_config
from cmma_jax.models import MODELS

_RNG = np.random.default_rng(0)
BATCH = {"image": _RNG.uniform(size=(8, 64, 64, 3)).astype(np.float32),
         "attributes": (_RNG.uniform(size=(8, 5)) > 0.5).astype(np.float32)}


def _config(module=cmma_config, **changes):
    config = presets.resolve_config(module.get_config("tiny"))
    for dotted, value in changes.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


def _state(name, config, step=0):
    state = MODELS[name].init_state(jax.random.key(0), config, workdirs.example_batch(8, 5))
    return state.replace(step=jnp.asarray(step, jnp.int32))


@pytest.mark.parametrize("name,module", [("cmma", cmma_config), ("cvae", cvae_config)])
def test_kl_warmup_weighs_the_kl_from_zero_to_one(name, module):
    key = jax.random.key(3)
    model = MODELS[name]
    for step, beta in ((0, 0.0), (25, 0.25), (100, 1.0), (400, 1.0)):
        config = _config(module, **{"training.kl_warmup_steps": 100})
        _, metrics = jax.jit(lambda s, b, k: model.train_step(s, b, k, config=config))(
            _state(name, config, step), BATCH, key)
        # The loss weighs the KL by beta; the elbo metric stays the bound.
        np.testing.assert_allclose(metrics["loss"],
                                   -(metrics["log_likelihood"] - beta * metrics["kl"]),
                                   rtol=1e-5)
        np.testing.assert_allclose(metrics["elbo"], metrics["log_likelihood"] - metrics["kl"],
                                   rtol=1e-5)
    plain = _config(module)
    _, metrics = jax.jit(lambda s, b, k: model.train_step(s, b, k, config=plain))(
        _state(name, plain), BATCH, key)
    np.testing.assert_allclose(metrics["loss"], -metrics["elbo"], rtol=1e-6)


def test_a_floor_under_the_prior_variance_clips_f_sigma_alone():
    config = _config(**{"model.prior_log_var_range": (-2.0, 4.0)})
    model = MODELS["cmma"].get_model(config)
    params = _state("cmma", config).params
    # Push f_σ's head far below the floor: its bias at -50.
    params = jax.tree_util.tree_map(lambda x: x, params)  # a copy to change
    params["attribute_net"]["heads"]["log_var"]["bias"] = jnp.full_like(
        params["attribute_net"]["heads"]["log_var"]["bias"], -50.0)
    out = model.apply({"params": params}, BATCH["image"], BATCH["attributes"])
    # The floor is soft_clip's lower end: high - softplus(high - low), just under low.
    floor = float(nets.soft_clip(jnp.float32(-1e4), -2.0, 4.0))
    assert -2.01 < floor <= -2.0
    np.testing.assert_allclose(out.prior_log_var, floor, atol=1e-4)
    plain = _config()
    out = MODELS["cmma"].get_model(plain).apply({"params": params}, BATCH["image"],
                                                BATCH["attributes"])
    assert float(out.prior_log_var.min()) < -40.0  # the paper's f_σ is linear


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_a_slower_attribute_network_scales_its_updates_alone(scale):
    key = jax.random.key(1)
    plain, slow = _config(), _config(**{"optimizer.prior_lr_scale": scale})
    def step(state, config):
        return jax.jit(lambda s, b, k: MODELS["cmma"].train_step(s, b, k, config=config))(
            state, BATCH, key)[0].params

    before = _state("cmma", plain).params
    after_plain = step(_state("cmma", plain), plain)
    after_slow = step(_state("cmma", slow), slow)
    for part in before:
        delta_plain = jax.tree_util.tree_map(lambda a, b: b - a, before[part], after_plain[part])
        delta_slow = jax.tree_util.tree_map(lambda a, b: b - a, before[part], after_slow[part])
        factor = scale if part == "attribute_net" else 1.0
        for d_slow, d_plain, p in zip(jax.tree_util.tree_leaves(delta_slow),
                                      jax.tree_util.tree_leaves(delta_plain),
                                      jax.tree_util.tree_leaves(before[part]), strict=True):
            # A step is read as (new - old) in float32: exact up to one rounding of each.
            ulp = 2 * np.finfo(np.float32).eps * float(np.max(np.abs(p)) + 1e-30)
            np.testing.assert_allclose(d_slow, factor * d_plain, rtol=1e-4, atol=ulp)
