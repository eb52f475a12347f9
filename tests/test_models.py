"""Tests for cmma_jax.models and cmma_jax.configs: the model contract, with the tiny preset.

Every model is compiled a few times only: one module-scoped fixture per model holds its tiny
config, its initial state, its jitted train step (guarded against retracing) and one jitted bundle
of its evaluation functions; the tests share them. The paper preset is checked with
`jax.eval_shape` only (traced, never compiled).
"""

import functools
import inspect
import math
import pickle

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmma_jax import losses, models, nets
from cmma_jax.configs import CONFIGS, base
from cmma_jax.models import MODELS, cgan, cmma, common, cvae, gaussian, vlae

B = 8  # examples per test batch
A = 5  # attributes
NAMES = ("cmma", "cvae", "cgan", "vlae")
ENCODER_MODELS = ("cmma", "cvae", "vlae")
BOUND_MODELS = ("cmma", "cvae")

EXPECTED_METRICS = {
    "cmma": {"loss", "elbo", "log_likelihood", "kl", "grad_norm", "param_norm"},
    "cvae": {"loss", "elbo", "log_likelihood", "kl", "grad_norm", "param_norm"},
    "cgan": {"loss", "d_loss", "g_loss", "d_real", "d_fake", "grad_norm", "param_norm",
             "g_grad_norm", "d_grad_norm", "g_param_norm", "d_param_norm"},
    "vlae": {"loss", "log_likelihood", "mmd", "mmd_0", "mmd_1", "mmd_2", "mmd_3", "grad_norm",
             "param_norm"},
}


def make_batch(seed: int, b: int = B, a: int = A) -> dict[str, np.ndarray]:
    """Toy "faces" whose look depends on the attributes: an ellipse on a background, plus noise."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(b, a)) > 0.5).astype(np.float32)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) / 63.0
    images = np.empty((b, 64, 64, 3), np.float32)
    for i in range(b):
        radius = 0.25 + 0.1 * y[i, 3 % a]
        inside = ((xx - 0.5) ** 2 / radius ** 2 + (yy - 0.5) ** 2 / (1.3 * radius) ** 2) < 1.0
        face = np.array([0.8, 0.6 + 0.2 * y[i, 0], 0.5 + 0.3 * y[i, 1 % a]], np.float32)
        background = np.array([0.2, 0.3, 0.2 + 0.5 * y[i, 2 % a]], np.float32)
        images[i] = np.where(inside[..., None], face, background)
    images += 0.03 * rng.standard_normal(images.shape).astype(np.float32)
    return {"image": np.clip(images, 0.0, 1.0), "attributes": y}


def tiny_config(name: str, **model_overrides):
    config = CONFIGS[name].get_config("tiny")
    # A larger step than the presets' so that 40 steps on one batch show clear learning.
    config.optimizer.learning_rate = 3e-3
    if name == "cgan":
        config.optimizer.generator_lr = config.optimizer.discriminator_lr = 1e-3
    for key, value in model_overrides.items():
        config.model[key] = value
    return config


def guarded_step(name: str, config, tag: str = ""):
    """The model's train step bound to its config, jitted, raising if it is ever traced twice."""
    module = MODELS[name]

    def train_step(state, batch, key):
        return module.train_step(state, batch, key, config=config)

    # chex identifies a function by its source and name: a distinct name per model and variant.
    train_step.__name__ = f"{name}{tag}_train_step"
    return jax.jit(chex.assert_max_traces(train_step, n=1))


def eval_bundle(name: str, config):
    """One jitted function computing every evaluation entry point of a model (one compile)."""
    module = MODELS[name]

    def bundle(params, batch, key, other_key, attrs_to):
        image, y = batch["image"], batch["attributes"]
        out = {
            "sample_t0": module.sample(params, y, key, 0.0, config=config),
            "sample_t0_other_key": module.sample(params, y, other_key, 0.0, config=config),
            "sample_t1": module.sample(params, y, key, 1.0, config=config),
            "sample_t1_other_key": module.sample(params, y, other_key, 1.0, config=config),
        }
        if name in ENCODER_MODELS:
            out["encode"] = module.encode(params, image, y, config=config)
            out["reconstruct"] = module.reconstruct(params, image, y, config=config)
            out["edit_same"] = module.edit(params, image, y, y, config=config)
            out["edit_other"] = module.edit(params, image, y, attrs_to, config=config)
        if name in BOUND_MODELS:
            out["bound"] = module.bound(params, batch, key, config=config)
            out["iwae"] = module.iwae(params, batch, key, config=config, num_samples=3)
        return out

    return jax.jit(bundle)


@pytest.fixture(scope="module", params=NAMES)
def setup(request):
    name = request.param
    config = tiny_config(name)
    batch = make_batch(0)
    state = MODELS[name].init_state(jax.random.key(0), config, batch)
    step = guarded_step(name, config)
    return {"name": name, "config": config, "batch": batch, "state": state, "step": step,
            "module": MODELS[name]}


STEP_KEY = 2  # the key of the first step, and of `bound` in the evaluation bundle


@pytest.fixture(scope="module")
def after_one_step(setup):
    state, metrics = setup["step"](setup["state"], setup["batch"], jax.random.key(STEP_KEY))
    return state, metrics


@pytest.fixture(scope="module")
def evaluated(setup):
    name = setup["name"]
    attrs_to = 1.0 - setup["batch"]["attributes"]
    out = eval_bundle(name, setup["config"])(setup["state"].params, setup["batch"],
                                             jax.random.key(STEP_KEY), jax.random.key(3), attrs_to)
    return jax.device_get(out)


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree_util.tree_leaves(tree))


# ---------------------------------------------------------------------------------------------
# Registry and configs


def test_registry_and_configs_cover_the_same_models():
    assert set(MODELS) == set(CONFIGS) == set(NAMES)
    assert (MODELS["cmma"], MODELS["cvae"], MODELS["cgan"], MODELS["vlae"]) == (
        cmma, cvae, cgan, vlae)
    for name in NAMES:
        for preset in (None, "paper", "small", "tiny"):
            config = CONFIGS[name].get_config(preset)
            assert config.model.name == name
            # No preset: "auto", resolved by the trainer ("small" on a CPU, "paper" otherwise).
            assert config.model.preset == (preset or "auto")
            assert config.model.dtype == "float32"
            assert config.data.name == "synthetic_faces"
            assert config.data.attribute_encoding == "binary"
            assert config.data.num_attributes is None
            assert config.training.parallelism == "mesh"
            for field in ("batch_size", "num_steps", "log_every", "sample_every",
                          "checkpoint_every"):  # None with "auto": from the resolved preset
                assert isinstance(config.training[field], int) or preset is None, field
            assert isinstance(config.training.seed, int)
            assert isinstance(config.training.keep_checkpoints, int)
            for field in ("learning_rate", "b1", "b2"):
                assert isinstance(config.optimizer[field], float), field
            nets.resolve_sizes(config.model)  # the preset resolves ("auto" too)
    assert CONFIGS["cgan"].get_config().optimizer.generator_lr > 0
    assert CONFIGS["cgan"].get_config().optimizer.discriminator_lr > 0
    assert CONFIGS["cmma"].get_config().model.feed_attributes_to_encoder is False
    assert CONFIGS["cvae"].get_config().model.feed_attributes_to_encoder is True
    config = base.tiny_overrides(CONFIGS["cmma"].get_config())
    assert config.model.preset == "tiny" and config.training.batch_size == 8
    with pytest.raises(ValueError, match="preset"):
        CONFIGS["cmma"].get_config("huge")


# The function of a model module that each capability names.
CAPABILITY_FUNCTIONS = {"sample": "sample", "encode": "encode", "reconstruct": "reconstruct",
                        "edit": "edit", "bound": "bound", "iwae": "iwae", "traverse": "traverse",
                        "arithmetic": "face_arithmetic"}


def test_capabilities_match_the_functions_each_model_defines():
    assert set(CAPABILITY_FUNCTIONS) == set(models.CAPABILITIES)
    for name in NAMES:
        module = MODELS[name]
        config = CONFIGS[name].get_config("tiny")
        caps = models.capabilities(config)
        assert isinstance(caps, frozenset) and caps == module.capabilities(config)
        for capability, function in CAPABILITY_FUNCTIONS.items():
            assert (capability in caps) == hasattr(module, function), (name, capability)
        # The progress line shows metrics the train step returns.
        assert isinstance(module.PROGRESS_METRICS, tuple) and "loss" in module.PROGRESS_METRICS
        assert set(module.PROGRESS_METRICS) <= EXPECTED_METRICS[name], name
    by_capability = {c: {n for n in NAMES if c in models.capabilities(CONFIGS[n].get_config())}
                     for c in ("encode", "bound")}
    assert by_capability == {"encode": set(ENCODER_MODELS), "bound": set(BOUND_MODELS)}
    # An unconditional VLAE cannot edit (vlae.edit raises, test_unconditional_vlae).
    config = CONFIGS["vlae"].get_config("tiny")
    config.model.conditional = False
    assert models.capabilities(config) == (
        models.capabilities(CONFIGS["vlae"].get_config("tiny")) - {"edit"})
    config.model.name = "vae"
    with pytest.raises(ValueError, match="vae"):
        models.capabilities(config)


CONTRACT_SIGNATURES = {  # the model contract of docs/design.md: the parameters as written there
    "init_state": "key, config, example_batch",
    "bound": "params, batch, key, *, config, num_samples=1, axis_name=None",
    "iwae": "params, batch, key, *, config, num_samples",
    "train_step": "state, batch, key, *, config, axis_name=None",
    "sample": "params, attributes, key, temperature=1.0, *, config",
    "encode": "params, image, attributes, *, config",
    "reconstruct": "params, image, attributes, *, config",
    "edit": "params, image, attrs_from, attrs_to, *, config",
    "capabilities": "config",
}


@pytest.mark.parametrize("name", BOUND_MODELS)
def test_gaussian_models_bind_the_entry_points_as_their_own_functions(name):
    """`gaussian.entry_points` writes the contract's functions once; each model module binds them
    by unpacking, which must give every name its own function, with the contract's signature."""
    module = MODELS[name]
    assert set(gaussian.EntryPoints._fields) == set(CONTRACT_SIGNATURES)
    for field, signature in CONTRACT_SIGNATURES.items():
        fn = getattr(module, field)
        assert fn.__name__ == fn.__qualname__ == field, (name, field, fn.__name__)
        assert fn.__module__ == module.__name__ and fn.__doc__, (name, field)
        assert pickle.loads(pickle.dumps(fn)) is fn
        params = inspect.signature(fn).parameters.values()
        written = []
        for p in params:
            if p.kind is p.KEYWORD_ONLY and "*" not in written:
                written.append("*")
            written.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
        assert ", ".join(written) == signature, (name, field)
        assert fn is not getattr(MODELS["cvae" if name == "cmma" else "cmma"], field)


@pytest.mark.parametrize("name", NAMES)
def test_forward_passes_return_named_structures(name):
    """Every model's forward pass (`init`'s) returns a flax.struct dataclass, traced only."""
    config = CONFIGS[name].get_config("tiny")
    model = MODELS[name].get_model(config)
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((2, A), jnp.float32)
    out = jax.eval_shape(lambda k, x, y: model.init_with_output(k, x, y)[0],
                         jax.random.key(0), x, y)
    expected = {"cmma": gaussian.GaussianVAEOutput, "cvae": gaussian.GaussianVAEOutput,
                "cgan": cgan.CGANOutput, "vlae": vlae.VLAEOutput}[name]
    assert type(out) is expected
    image_mean = out.generated if name == "cgan" else out.image_mean
    assert image_mean.shape == (2, 64, 64, 3)


# ---------------------------------------------------------------------------------------------
# Every model, tiny preset


def test_init_state(setup):
    state = setup["state"]
    assert state.step.shape == () and state.step.dtype == jnp.int32 and int(state.step) == 0
    for leaf in jax.tree_util.tree_leaves(state.params):
        assert leaf.dtype == jnp.float32
    for leaf in jax.tree_util.tree_leaves(state.opt_state):
        assert leaf.dtype in (jnp.float32, jnp.int32)
    if setup["name"] == "cgan":
        assert set(state.params) == set(state.opt_state) == {"generator", "discriminator"}


def test_one_step(setup, after_one_step):
    state, metrics = after_one_step
    assert set(metrics) == EXPECTED_METRICS[setup["name"]]
    for key, value in metrics.items():
        assert value.shape == () and value.dtype == jnp.float32, key
        assert np.isfinite(np.asarray(value)), key
    assert int(state.step) == 1
    for leaf in jax.tree_util.tree_leaves(state.params):
        assert leaf.dtype == jnp.float32
    # numpy, not jnp: eager jnp ops compile one small program per leaf shape.
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)),
                                     jax.device_get(state.params),
                                     jax.device_get(setup["state"].params))
    if setup["name"] == "cgan":
        assert any(jax.tree_util.tree_leaves(changed["generator"]))
        assert any(jax.tree_util.tree_leaves(changed["discriminator"]))
    else:
        assert any(jax.tree_util.tree_leaves(changed))
    if setup["name"] in BOUND_MODELS:
        assert float(metrics["loss"]) == pytest.approx(-float(metrics["elbo"]), rel=1e-6)
        assert float(metrics["elbo"]) == pytest.approx(
            float(metrics["log_likelihood"]) - float(metrics["kl"]), rel=1e-5, abs=1e-2)


def test_short_run_learns(setup):
    """40 steps on one fixed batch: the loss (the CGAN's discriminator loss) falls clearly."""
    step, state, batch = setup["step"], setup["state"], setup["batch"]
    history = []
    for i in range(40):
        state, metrics = step(state, batch, jax.random.fold_in(jax.random.key(7), i))
        history.append(jax.device_get(metrics))
    key = "d_loss" if setup["name"] == "cgan" else "loss"
    values = np.array([h[key] for h in history])
    assert np.all(np.isfinite(values))
    first, last = values[:3].mean(), values[-3:].mean()
    if setup["name"] == "cgan":
        assert last < first - 0.1, values
    else:
        # Losses are in nats per image (~10^4 at the start): fall by a clear margin.
        assert last < first - 0.1 * abs(first), values


def test_step_traces_once(setup, after_one_step):
    """The guarded step (already traced by the other tests) runs again with new data, numpy or
    jax arrays, and keys made like the trainer's, without retracing."""
    state = after_one_step[0]
    base_key = jax.random.key(11)
    for i in range(3):
        batch = make_batch(100 + i)
        if i == 1:
            batch = jax.tree_util.tree_map(jnp.asarray, batch)
        state, metrics = setup["step"](state, batch, jax.random.fold_in(base_key, state.step))
    assert int(state.step) == 4
    assert _finite(metrics)


def test_sample(setup, evaluated):
    out = evaluated
    assert out["sample_t0"].shape == (B, 64, 64, 3)
    assert out["sample_t0"].dtype == np.float32
    assert np.all((out["sample_t0"] >= 0) & (out["sample_t0"] <= 1))
    # Temperature 0 is deterministic and independent of the key; temperature 1 is not.
    np.testing.assert_array_equal(out["sample_t0"], out["sample_t0_other_key"])
    assert not np.array_equal(out["sample_t1"], out["sample_t1_other_key"])


def test_encoder_entry_points(setup, evaluated):
    name = setup["name"]
    if name not in ENCODER_MODELS:
        pytest.skip("no encoder")
    out = evaluated
    mean, log_var = out["encode"]
    sizes = nets.resolve_sizes(setup["config"].model)
    if name == "vlae":
        assert [m.shape for m in mean] == [(B, d) for d in sizes["ladder_latent_dims"]]
        assert [v.shape for v in log_var] == [(B, d) for d in sizes["ladder_latent_dims"]]
    else:
        assert mean.shape == log_var.shape == (B, sizes["latent_dim"])
    assert out["reconstruct"].shape == out["edit_other"].shape == (B, 64, 64, 3)
    # Editing to the same attributes is the reconstruction from the posterior mean (for the
    # CMMA: h_μ(x) + f_μ(y) - f_μ(y) = h_μ(x), up to float rounding).
    np.testing.assert_allclose(out["edit_same"], out["reconstruct"], atol=1e-5)
    assert not np.allclose(out["edit_other"], out["reconstruct"], atol=1e-6)


def test_bound_matches_training_loss(setup, after_one_step, evaluated):
    """bound() on the same key and parameters gives exactly the terms train_step minimised."""
    name = setup["name"]
    if name not in BOUND_MODELS:
        pytest.skip("no bound")
    terms = evaluated["bound"]
    assert isinstance(terms, losses.ElboTerms)
    for term in losses.ELBO_TERMS:  # the per-example terms (the other fields hold z and the
        assert getattr(terms, term).shape == (B,)  # distributions they came from)
    # The first train step ran from the same parameters, batch and key.
    metrics = after_one_step[1]
    np.testing.assert_allclose(-np.mean(terms.elbo), metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(np.mean(terms.kl), metrics["kl"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.mean(terms.log_likelihood), metrics["log_likelihood"],
                               rtol=1e-5)
    np.testing.assert_allclose(terms.elbo, terms.log_likelihood - terms.kl, rtol=1e-5, atol=1e-2)
    iwae = evaluated["iwae"]
    assert iwae.shape == (B,) and np.all(np.isfinite(iwae))


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_compute(name):
    """bfloat16 computation, float32 parameters, optimizer state, loss and metrics. The CMMA's
    step is compiled and run; the others are traced only (each compile costs seconds)."""
    config = tiny_config(name, dtype="bfloat16")
    batch = make_batch(1, b=4)
    init = functools.partial(MODELS[name].init_state, config=config, example_batch=batch)
    step = guarded_step(name, config, "_bf16")
    if name == "cmma":
        state = init(jax.random.key(0))
        state, metrics = step(state, batch, jax.random.key(1))
        assert _finite(metrics)
        assert int(state.step) == 1
    else:
        state = jax.eval_shape(init, jax.random.key(0))
        state, metrics = jax.eval_shape(step, state, batch, jax.random.key(1))
    for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state)):
        assert leaf.dtype in (jnp.float32, jnp.int32)
    for value in metrics.values():
        assert value.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# The paper preset, traced only


def _paper_batch(a=73):
    return {"image": jax.ShapeDtypeStruct((16, 64, 64, 3), jnp.float32),
            "attributes": jax.ShapeDtypeStruct((16, a), jnp.float32)}


def _abstract_state(name, config, batch):
    # The example batch only gives shapes: trace init_state on zeros of those shapes.
    zeros = {k: np.zeros(v.shape, np.float32) for k, v in batch.items()}
    return jax.eval_shape(lambda k: MODELS[name].init_state(k, config, zeros), jax.random.key(0))


@pytest.mark.parametrize("name", NAMES)
def test_paper_preset_shapes(name):
    config = CONFIGS[name].get_config("paper")
    batch = _paper_batch()
    state = _abstract_state(name, config, batch)
    p = jax.tree_util.tree_map(lambda a: tuple(a.shape), state.params)
    if name == "cmma":
        assert p["attribute_net"]["hidden"]["kernel"] == (73, 800)
        assert p["attribute_net"]["heads"]["mean"]["kernel"] == (800, 500)
        assert p["encoder"]["heads"]["log_var"]["kernel"] == (4800, 500)
        assert p["decoder"]["dense"]["kernel"] == (500, 4800)
        assert p["decoder"]["heads"]["mean"]["kernel"] == (5, 5, 192, 3)
    elif name == "cvae":
        assert p["encoder"]["heads"]["mean"]["kernel"] == (4800 + 73, 500)  # q(z | x, y)
        assert p["decoder"]["dense"]["kernel"] == (500 + 73, 4800)  # p(x | z, y)
    elif name == "cgan":
        assert p["generator"]["dense"]["kernel"] == (500 + 73, 4800)
        assert set(p["generator"]["heads"]) == {"mean"}
        assert p["discriminator"]["trunk"]["conv1"]["kernel"] == (5, 5, 3, 192)
        assert p["discriminator"]["hidden"]["kernel"] == (4800 + 73, 500)
        assert p["discriminator"]["logit"]["kernel"] == (500, 1)
    else:
        assert p["encoder"]["trunk"]["conv2"]["kernel"] == (5, 5, 192, 96)
        assert p["decoder"]["hidden"]["kernel"] == (32 + 73, 500)  # conditional: [z_4; y]
        assert p["decoder"]["heads"]["log_var"]["kernel"] == (5, 5, 192 + 8, 3)
    # The train step traces at the paper's sizes (no compilation) and gives scalar metrics.
    _, metrics = jax.eval_shape(
        functools.partial(MODELS[name].train_step, config=config), state, batch,
        jax.random.key(1))
    assert set(metrics) == EXPECTED_METRICS[name]
    assert all(m.shape == () and m.dtype == jnp.float32 for m in metrics.values())
    images = jax.eval_shape(
        lambda params, y, k: MODELS[name].sample(params, y, k, 1.0, config=config),
        state.params, batch["attributes"], jax.random.key(2))
    assert images.shape == (16, 64, 64, 3)


def test_unconditional_vlae():
    config = CONFIGS["vlae"].get_config("paper")
    config.model.conditional = False
    state = _abstract_state("vlae", config, _paper_batch())
    assert state.params["decoder"]["hidden"]["kernel"].shape == (32, 500)  # z_4 only
    with pytest.raises(ValueError, match="conditional"):
        vlae.edit(state.params, np.zeros((1, 64, 64, 3)), np.zeros((1, 73)), np.ones((1, 73)),
                  config=config)


def test_cvae_with_an_unconditioned_decoder_ignores_the_attributes_when_generating():
    config = tiny_config("cvae", condition_decoder=False)
    state = cvae.init_state(jax.random.key(0), config, make_batch(0))
    plain = cvae.init_state(jax.random.key(0), tiny_config("cvae"), make_batch(0))
    latent = config.model.latent_dim or nets.resolve_sizes(config.model)["latent_dim"]
    # The decoder's first layer takes z alone (the CMMA's g), not [z; y].
    assert state.params["decoder"]["dense"]["kernel"].shape[0] == latent
    assert plain.params["decoder"]["dense"]["kernel"].shape[0] == latent + A
    y0, y1 = np.zeros((B, A), np.float32), np.ones((B, A), np.float32)
    key = jax.random.key(1)
    np.testing.assert_array_equal(cvae.sample(state.params, y0, key, config=config),
                                  cvae.sample(state.params, y1, key, config=config))
    assert not np.array_equal(cvae.sample(plain.params, y0, key, config=tiny_config("cvae")),
                              cvae.sample(plain.params, y1, key, config=tiny_config("cvae")))
    terms = cvae.bound(state.params, make_batch(2), key, config=config)
    assert terms.elbo.shape == (B,) and np.all(np.isfinite(terms.elbo))


# ---------------------------------------------------------------------------------------------
# Model-specific pieces


def test_vlae_kernel_conventions():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((6, 8))
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    config = tiny_config("vlae")
    np.testing.assert_allclose(vlae.mmd_kernel(config, 8)(a, b), np.exp(-d2 / 8), rtol=1e-5)
    config.model.mmd_scales = (1.0, 2.0)
    np.testing.assert_allclose(vlae.mmd_kernel(config, 8)(a, b),
                               np.exp(-d2 / 8) + np.exp(-d2 / 16), rtol=1e-5)
    config.model.mmd_kernel = "imq"
    config.model.mmd_scales = (1.0,)
    np.testing.assert_allclose(vlae.mmd_kernel(config, 8)(a, b), 16 / (16 + d2), rtol=1e-5)
    config.model.mmd_kernel = "laplace"
    with pytest.raises(ValueError, match="kernel"):
        vlae.mmd_kernel(config, 8)
    assert vlae.mmd_weights(config) == (config.model.mmd_weight,) * 4
    config.model.mmd_layer_weights = (1.0, 2.0, 3.0, 4.0)
    assert vlae.mmd_weights(config) == (1.0, 2.0, 3.0, 4.0)


def test_vlae_figures_helpers():
    config = tiny_config("vlae")
    batch = make_batch(3, b=2)
    state = vlae.init_state(jax.random.key(0), config, batch)
    dims = vlae.latent_dims(config)
    values = np.array([-3.0, 2.0], np.float32)

    @jax.jit
    def run(params, batch, key):
        x, y = batch["image"], batch["attributes"]
        traversal = vlae.traverse(params, y, 2, 1, values, key, config=config)
        # The same thing by hand: other layers from the same prior draw, layer 2 = v * e_1.
        base_latents = vlae.sample_latents(key, 2, config=config)
        by_hand = []
        for v in values:
            latents = list(base_latents)
            latents[2] = jnp.zeros((2, dims[2])).at[:, 1].set(v)
            by_hand.append(vlae.decode_latents(params, latents, y, config=config))
        # A - A + C = C in latent space: the reconstruction of C.
        arithmetic = vlae.face_arithmetic(params, x, x, x[::-1], y, y, y[::-1], config=config)
        reconstruction = vlae.reconstruct(params, x[::-1], y[::-1], config=config)
        return traversal, jnp.stack(by_hand), arithmetic, reconstruction

    traversal, by_hand, arithmetic, reconstruction = run(state.params, batch, jax.random.key(4))
    assert traversal.shape == (2, 2, 64, 64, 3)
    np.testing.assert_allclose(traversal, by_hand, atol=1e-6)
    np.testing.assert_allclose(arithmetic, reconstruction, atol=1e-5)


def test_init_params_matches_flax_init_in_distribution():
    config = CONFIGS["cmma"].get_config("tiny")
    model = cmma.get_model(config)
    x = np.zeros((2, 64, 64, 3), np.float32)
    y = np.zeros((2, 40), np.float32)
    params = jax.device_get(
        jax.jit(lambda k: common.init_params(model, k, x, y))(jax.random.key(0)))
    reference = jax.eval_shape(lambda k: model.init({"params": k}, x, y), jax.random.key(0))
    assert (jax.tree_util.tree_structure(params)
            == jax.tree_util.tree_structure(reference["params"]))
    for (path, leaf) in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = path[-1].key
        if name == "bias":
            assert not np.any(np.asarray(leaf))
        elif leaf.size >= 400:  # lecun normal: variance 1 / fan_in, truncated at 2 sigma
            fan_in = math.prod(leaf.shape[:-1])
            assert float(np.std(leaf)) == pytest.approx(1 / math.sqrt(fan_in), rel=0.1), path
            assert float(np.max(np.abs(leaf))) <= 2.0 / math.sqrt(fan_in) / 0.8796 + 1e-6
    # Different keys, different kernels.
    other = jax.jit(lambda k: common.init_params(model, k, x, y))(jax.random.key(1))
    assert not np.array_equal(params["decoder"]["dense"]["kernel"],
                              other["decoder"]["dense"]["kernel"])


def test_make_optimizer_options():
    config = CONFIGS["cmma"].get_config("tiny")
    config.optimizer.grad_clip_norm = 1.0
    config.optimizer.warmup_steps = 10
    tx = common.make_optimizer(config.optimizer)
    params = {"w": jnp.ones((3,), jnp.float32)}

    @jax.jit
    def first_update(params):
        updates, _ = tx.update({"w": jnp.full((3,), 100.0)}, tx.init(params), params)
        return updates

    updates = first_update(params)
    # Warm-up: the first update is made at learning rate 0.
    assert float(optax.tree.norm(updates)) == 0.0
    txs = cgan.make_optimizers(CONFIGS["cgan"].get_config("tiny"))
    assert set(txs) == {"generator", "discriminator"}
    with pytest.raises(ValueError, match="adam"):
        config.optimizer.name = "sgd"
        common.make_optimizer(config.optimizer)
