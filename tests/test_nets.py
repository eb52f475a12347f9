"""Tests for cmma_jax.nets: exact paper shapes (no compilation), layers against references."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmma_jax import nets

PAPER = nets.PRESETS["paper"]
A = 73  # LFW's attributes
_RNG = np.random.default_rng(0)


def _normal(*shape):
    # numpy, not jax.random: an eager jax.random call compiles its own program (seconds on CPU).
    return jnp.asarray(_RNG.standard_normal(shape), jnp.float32)


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def _abstract_params(module, *args):
    return jax.eval_shape(lambda k, *a: module.init({"params": k}, *a), jax.random.key(0),
                          *args)["params"]


def _random_params(module, *args):
    """Parameters with module.init's shapes, drawn with numpy (flax's init would compile one
    random-number program per parameter: tens of seconds on CPU)."""
    abstract = _abstract_params(module, *args)
    return jax.tree_util.tree_map(
        lambda a: _normal(*a.shape) / math.sqrt(math.prod(a.shape[:-1]) or 1), abstract)


def _images(b=2):
    return jax.ShapeDtypeStruct((b, 64, 64, 3), jnp.float32)


def _attributes(b=2, a=A):
    return jax.ShapeDtypeStruct((b, a), jnp.float32)


# ---------------------------------------------------------------------------------------------
# The paper's architecture (section 4.1), shapes only.


def test_paper_attribute_mlp_shapes():
    f = nets.AttributeMLP(PAPER["attribute_hidden"], PAPER["latent_dim"])
    params = _shapes(_abstract_params(f, _attributes()))
    assert params == {
        "hidden": {"kernel": (A, 800), "bias": (800,)},
        "heads": {
            "mean": {"kernel": (800, 500), "bias": (500,)},
            "log_var": {"kernel": (800, 500), "bias": (500,)},
        },
    }
    mean, log_var = jax.eval_shape(lambda p, y: f.apply(p, y),
                                   {"params": _abstract_params(f, _attributes())}, _attributes())
    assert mean.shape == log_var.shape == (2, 500)


def test_paper_encoder_shapes():
    h = nets.ImageEncoder(PAPER["encoder_features"], PAPER["latent_dim"])
    params = _shapes(_abstract_params(h, _images()))
    assert params["trunk"] == {
        "conv1": {"kernel": (5, 5, 3, 192), "bias": (192,)},
        "conv2": {"kernel": (5, 5, 192, 96), "bias": (96,)},
        "conv3": {"kernel": (4, 4, 96, 48), "bias": (48,)},
    }
    # 10 x 10 x 48 = 4800 flattened units -> two parallel 500-unit layers.
    assert params["heads"]["mean"]["kernel"] == (4800, 500)
    assert params["heads"]["log_var"]["kernel"] == (4800, 500)
    stages = jax.eval_shape(
        lambda x: nets.ConvTrunk(PAPER["encoder_features"]).init_with_output(
            jax.random.key(0), x)[0], _images())
    assert [s.shape for s in stages] == [(2, 30, 30, 192), (2, 13, 13, 96), (2, 10, 10, 48)]


def test_paper_encoder_with_attributes_shapes():
    h = nets.ImageEncoder(PAPER["encoder_features"], PAPER["latent_dim"], feed_attributes=True)
    params = _shapes(_abstract_params(h, _images(), _attributes()))
    assert params["heads"]["mean"]["kernel"] == (4800 + A, 500)


def test_paper_decoder_shapes():
    g = nets.ImageDecoder(PAPER["encoder_features"])
    z = jax.ShapeDtypeStruct((2, 500), jnp.float32)
    params = _shapes(_abstract_params(g, z))
    assert params == {
        "dense": {"kernel": (500, 4800), "bias": (4800,)},  # -> reshape 10 x 10 x 48
        "conv3": {"kernel": (4, 4, 48, 96), "bias": (96,)},  # 10 -> 13
        "conv2": {"kernel": (5, 5, 96, 192), "bias": (192,)},  # 26 -> 30
        "heads": {  # two parallel 192 -> 3 heads, 5x5 (erratum 6), 60 -> 64
            "mean": {"kernel": (5, 5, 192, 3), "bias": (3,)},
            "log_var": {"kernel": (5, 5, 192, 3), "bias": (3,)},
        },
    }


@pytest.mark.parametrize("preset", sorted(nets.PRESETS))
def test_decoder_output_is_64x64x3_for_every_preset(preset):
    sizes = nets.PRESETS[preset]
    g = nets.ImageDecoder(sizes["encoder_features"])
    z = jax.ShapeDtypeStruct((3, sizes["latent_dim"]), jnp.float32)
    mean, log_var = jax.eval_shape(lambda k, z: g.init_with_output(k, z)[0], jax.random.key(0), z)
    assert mean.shape == log_var.shape == (3, 64, 64, 3)
    assert mean.dtype == log_var.dtype == jnp.float32
    # The conditional decoder (CVAE) and the generator (CGAN, mean only).
    gen = nets.ImageDecoder(sizes["encoder_features"], log_var=False)
    mean, log_var = jax.eval_shape(lambda k, z, y: gen.init_with_output(k, z, y)[0],
                                   jax.random.key(0), z, _attributes(3))
    assert mean.shape == (3, 64, 64, 3) and log_var is None
    ladder = nets.LadderDecoder(sizes["encoder_features"], sizes["ladder_hidden"],
                                sizes["ladder_inject_features"])
    zs = [jax.ShapeDtypeStruct((3, d), jnp.float32) for d in sizes["ladder_latent_dims"]]
    mean, log_var = jax.eval_shape(lambda k, zs, y: ladder.init_with_output(k, zs, y)[0],
                                   jax.random.key(0), zs, _attributes(3))
    assert mean.shape == log_var.shape == (3, 64, 64, 3)


@pytest.mark.parametrize("preset", sorted(nets.PRESETS))
def test_ladder_encoder_and_discriminator_shapes(preset):
    sizes = nets.PRESETS[preset]
    enc = nets.LadderEncoder(sizes["encoder_features"], sizes["ladder_latent_dims"],
                             sizes["ladder_hidden"], sizes["ladder_head_features"])
    means, log_vars = jax.eval_shape(lambda k, x: enc.init_with_output(k, x)[0],
                                     jax.random.key(0), _images(3))
    assert [m.shape for m in means] == [(3, d) for d in sizes["ladder_latent_dims"]]
    assert [v.shape for v in log_vars] == [(3, d) for d in sizes["ladder_latent_dims"]]
    disc = nets.Discriminator(sizes["encoder_features"], sizes["discriminator_hidden"])
    logits = jax.eval_shape(lambda k, x, y: disc.init_with_output(k, x, y)[0],
                            jax.random.key(0), _images(3), _attributes(3))
    assert logits.shape == (3,) and logits.dtype == jnp.float32


def test_paper_cmma_parameter_count():
    f = nets.AttributeMLP(800, 500)
    h = nets.ImageEncoder(PAPER["encoder_features"], 500)
    g = nets.ImageDecoder(PAPER["encoder_features"])
    count = lambda p: sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(p))  # noqa: E731
    n_f = count(_abstract_params(f, _attributes()))
    n_h = count(_abstract_params(h, _images()))
    n_g = count(_abstract_params(g, jax.ShapeDtypeStruct((2, 500), jnp.float32)))
    assert n_f == (A * 800 + 800) + 2 * (800 * 500 + 500)
    assert n_h == ((75 * 192 + 192) + (25 * 192 * 96 + 96) + (16 * 96 * 48 + 48)
                   + 2 * (4800 * 500 + 500))
    assert n_g == ((500 * 4800 + 4800) + (16 * 48 * 96 + 96) + (25 * 96 * 192 + 192)
                   + 2 * (25 * 192 * 3 + 3))


# ---------------------------------------------------------------------------------------------
# Layers against references.


def test_max_pool_matches_flax():
    x = _normal(2, 6, 4, 3)
    np.testing.assert_array_equal(nets.max_pool_2x2(x),
                                  nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID"))
    with pytest.raises(ValueError, match="even"):
        nets.max_pool_2x2(jnp.zeros((1, 13, 13, 1)))


def test_max_pool_gradient_goes_to_the_first_maximum():
    """Without ties, the gradient of flax's max-pool (XLA's reduce-window); with ties, all of a
    window's gradient to its first maximum in row-major order, as PyTorch's max_pool2d, by
    hand; under jit, vmap and in bfloat16 alike."""
    x = _normal(2, 6, 4, 3)
    g = _normal(2, 3, 2, 3)
    grad = lambda pool, x: jax.vjp(pool, x)[1](g)[0]  # noqa: E731
    expected = grad(lambda a: nn.max_pool(a, (2, 2), strides=(2, 2), padding="VALID"), x)
    np.testing.assert_array_equal(jax.jit(functools.partial(grad, nets.max_pool_2x2))(x),
                                  expected)
    np.testing.assert_array_equal(
        jax.vmap(lambda a, b: jax.vjp(nets.max_pool_2x2, a[None])[1](b[None])[0][0])(x, g),
        expected)
    window = np.array([[[1.0, 3.0], [3.0, 2.0]], [[5.0, 5.0], [5.0, 5.0]],
                       [[0.0, -1.0], [-2.0, -3.0]], [[1.0, 2.0], [4.0, 4.0]]], np.float32)
    first = np.array([[[0, 1], [0, 0]], [[1, 0], [0, 0]],
                      [[1, 0], [0, 0]], [[0, 0], [1, 0]]], np.float32)
    x = jnp.asarray(window.transpose(1, 0, 2).reshape(1, 2, 8, 1))  # four windows side by side
    gy = jnp.asarray([2.0, 3.0, 4.0, 5.0]).reshape(1, 1, 4, 1)
    y, pull = jax.vjp(nets.max_pool_2x2, x)
    np.testing.assert_array_equal(np.asarray(y).ravel(), [3.0, 5.0, 0.0, 4.0])
    expected = (first * np.array([2.0, 3.0, 4.0, 5.0])[:, None, None]).transpose(1, 0, 2)
    np.testing.assert_array_equal(np.asarray(pull(gy)[0]).reshape(2, 8), expected.reshape(2, 8))
    y16, pull16 = jax.vjp(nets.max_pool_2x2, x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16 and pull16(gy.astype(jnp.bfloat16))[0].dtype == jnp.bfloat16


def test_upsample_matches_repeat():
    x = _normal(2, 3, 5, 4)
    expected = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(nets.upsample_nearest_2x(x), expected)


@pytest.mark.parametrize("padding", [0, 2, 4])
def test_conv_matches_direct_computation(padding):
    x, kernel, bias = _normal(2, 9, 9, 3), _normal(5, 5, 3, 4), _normal(4)
    y = jax.jit(nets.conv2d, static_argnums=3)(x, kernel, bias, padding)
    # Direct sum over the window (cross-correlation, as every deep learning library).
    xp = np.pad(np.asarray(x), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = 9 + 2 * padding - 4
    expected = np.zeros((2, out, out, 4), np.float64)
    for i in range(out):
        for j in range(out):
            patch = xp[:, i:i + 5, j:j + 5, :]
            expected[:, i, j, :] = np.einsum("bhwc,hwcf->bf", patch, np.asarray(kernel))
    expected += np.asarray(bias)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_conv_module_params_and_unknown_impl():
    conv = nets.Conv(4, 3, padding=2)
    x = jax.ShapeDtypeStruct((1, 5, 5, 2), jnp.float32)
    params = _abstract_params(conv, x)
    assert _shapes(params) == {"kernel": (3, 3, 2, 4), "bias": (4,)}
    out = jax.eval_shape(lambda p, x: conv.apply({"params": p}, x), params, x)
    assert out.shape == (1, 7, 7, 4)  # "full": grows by k - 1
    with pytest.raises(ValueError, match="convolution implementation"):
        _abstract_params(nets.Conv(4, 3, impl="nope"), x)


def test_fused_heads_equal_two_separate_convolutions():
    heads = nets.ImageHeads(log_var=True)
    h = _normal(2, 60, 60, 5)
    p = {"mean": {"kernel": _normal(5, 5, 5, 3), "bias": _normal(3)},
         "log_var": {"kernel": _normal(5, 5, 5, 3), "bias": _normal(3)}}

    @jax.jit
    def run(p, h):
        fused = heads.apply({"params": p}, h)
        separate = (jax.nn.sigmoid(nets.conv2d(h, p["mean"]["kernel"], p["mean"]["bias"], 4)),
                    nets.conv2d(h, p["log_var"]["kernel"], p["log_var"]["bias"], 4))
        return fused, separate

    (mean, log_var), (expected_mean, expected_log_var) = run(p, h)
    assert mean.shape == log_var.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_var, expected_log_var, rtol=1e-5, atol=1e-5)


def test_soft_clip():
    soft_clip = jax.jit(nets.soft_clip, static_argnums=(1, 2))
    x = jnp.asarray(np.linspace(-100.0, 100.0, 2001), jnp.float32)
    y = soft_clip(x, -10.0, 4.0)
    assert bool(jnp.all(y >= -10.0 - 1e-5)) and bool(jnp.all(y <= 4.0))
    assert bool(jnp.all(jnp.diff(y) >= 0))  # monotone
    inner = soft_clip(jnp.asarray(np.linspace(-20.0, 10.0, 301), jnp.float32), -10.0, 4.0)
    assert bool(jnp.all(jnp.diff(inner) > 0))  # strictly, away from float32 saturation
    middle = jnp.asarray(np.linspace(-6.0, 0.0, 13), jnp.float32)
    np.testing.assert_allclose(soft_clip(middle, -10.0, 4.0), middle, atol=0.05)


def test_resolve_sizes():
    sizes = nets.resolve_sizes({"preset": "small", "latent_dim": 7, "encoder_features": None})
    assert sizes["latent_dim"] == 7
    assert sizes["encoder_features"] == nets.PRESETS["small"]["encoder_features"]
    with pytest.raises(ValueError, match="preset"):
        nets.resolve_sizes({"preset": "huge"})
    with pytest.raises(ValueError, match="dtype"):
        nets.compute_dtype("float8")


def test_encoder_rejects_wrong_image_size():
    h = nets.ImageEncoder((2, 2, 2), 3)
    with pytest.raises(ValueError, match="64, 64, 3"):
        jax.eval_shape(lambda k, x: h.init(k, x), jax.random.key(0),
                       jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    sizes = nets.PRESETS["tiny"]
    h = nets.ImageEncoder(sizes["encoder_features"], 8, dtype=jnp.bfloat16)
    g = nets.ImageDecoder(sizes["encoder_features"], dtype=jnp.bfloat16)
    x = jnp.asarray(_RNG.uniform(size=(2, 64, 64, 3)), jnp.float32)

    vh = {"params": _random_params(h, _images())}
    vg = {"params": _random_params(g, jax.ShapeDtypeStruct((2, 8), jnp.float32))}

    @jax.jit
    def run(vh, vg, x):
        mean, log_var = h.apply(vh, x)
        return (mean, log_var) + g.apply(vg, mean)

    mean, log_var, image_mean, image_log_var = run(vh, vg, x)
    for leaf in jax.tree_util.tree_leaves((vh, vg)):
        assert leaf.dtype == jnp.float32
    for out in (mean, log_var, image_mean, image_log_var):
        assert out.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("variance,size", [("channel", 3), ("shared", 1)])
def test_decoder_variance_shared_over_pixels(variance, size):
    """"channel"/"shared": the mean head is the paper's; the log-variance is one learnt value per
    colour channel (or one in all), the same at every pixel of every face, soft-clipped like the
    head's; nothing of the per-pixel head is built."""
    heads = nets.ImageHeads(log_var=True, log_var_range=(-10.0, 4.0), variance=variance)
    h = _normal(2, 60, 60, 5)
    abstract = _abstract_params(heads, h)
    assert _shapes(abstract) == {"mean": {"kernel": (5, 5, 5, 3), "bias": (3,)},
                                 "log_var": {"bias": (size,)}}
    raw = np.array([-1.0, 0.5, -12.0][:size], np.float32)
    p = {"mean": {"kernel": _normal(5, 5, 5, 3), "bias": _normal(3)}, "log_var": {"bias": raw}}
    mean, log_var = jax.jit(heads.apply)({"params": p}, h)
    expected_mean = jax.nn.sigmoid(nets.conv2d(h, p["mean"]["kernel"], p["mean"]["bias"], 4))
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    assert log_var.shape == (2, 64, 64, 3)
    expected = np.broadcast_to(np.asarray(nets.soft_clip(
        jnp.asarray(raw + nets.networks.SHARED_LOG_VAR_INIT), -10.0, 4.0)),
                               (2, 64, 64, 3))
    np.testing.assert_allclose(log_var, expected, rtol=1e-6)


def test_decoder_variance_fixed_has_no_parameter():
    """"fixed": the mean head is the paper's; every pixel's log-variance is log(σ²) exactly (no
    parameter, no clip), so the likelihood is scipy's N(x; mean, σ²) at every pixel."""
    scipy_stats = pytest.importorskip("scipy.stats")
    sigma = 0.07
    heads = nets.ImageHeads(log_var=True, log_var_range=(-1.0, 0.0), variance="fixed",
                            sigma=sigma)
    h = _normal(2, 60, 60, 5)
    assert _shapes(_abstract_params(heads, h)) == {"mean": {"kernel": (5, 5, 5, 3),
                                                            "bias": (3,)}}
    p = {"mean": {"kernel": _normal(5, 5, 5, 3), "bias": _normal(3)}}
    mean, log_var = jax.jit(heads.apply)({"params": p}, h)
    expected_mean = jax.nn.sigmoid(nets.conv2d(h, p["mean"]["kernel"], p["mean"]["bias"], 4))
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    assert log_var.shape == (2, 64, 64, 3) and log_var.dtype == jnp.float32
    np.testing.assert_allclose(log_var, np.full((2, 64, 64, 3), 2 * math.log(sigma)), rtol=1e-6)
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), mean.shape))
    ours = -0.5 * (np.log(2 * np.pi) + log_var + (x - mean) ** 2 / np.exp(log_var))
    np.testing.assert_allclose(ours, scipy_stats.norm.logpdf(x, np.asarray(mean), sigma),
                               rtol=1e-4, atol=1e-3)
    for bad in (0.0, -0.1, float("inf")):
        with pytest.raises(ValueError, match="decoder_sigma"):
            _abstract_params(nets.ImageHeads(variance="fixed", sigma=bad), h)


def test_decoder_variance_unknown_is_refused():
    with pytest.raises(ValueError, match="decoder_variance"):
        _abstract_params(nets.ImageHeads(variance="per_face"), _normal(1, 60, 60, 2))
