"""The fast CPU convolution (`cmma_jax.fast_conv`) against the plain XLA one.

Outputs and gradients (with respect to the input, the kernel and the bias) must equal those of a
`lax.conv_general_dilated`-based convolution to float32 accuracy, for every method the fast path
can pick (each forced in turn), for VALID and "full" padding, odd sizes and several channel
counts; and the CMMA bound must have the same value and parameter gradients, and a whole train
step the same metrics, with `model.conv_impl` "fast_cpu" as with "xla".
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cmma_jax import fast_conv, nets
from cmma_jax.configs import cmma as cmma_config
from cmma_jax.models import cmma


def reference_conv(x, kernel, bias, padding):
    """Zero padding on each side, then a VALID convolution, plus bias (independent of nets)."""
    y = lax.conv_general_dilated(x, kernel, (1, 1), ((padding, padding), (padding, padding)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 precision=lax.Precision.HIGHEST)
    return y + bias[None, None, None, :]


def _inputs(shape_x, k, c_out, out_hw=None, seed=0):
    """x, kernel, bias and an output cotangent g (numpy draws: no RNG compilations)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape_x, np.float32)
    kernel = rng.standard_normal((k, k, shape_x[-1], c_out), np.float32) / np.sqrt(
        k * k * shape_x[-1])
    bias = rng.standard_normal((c_out,), np.float32)
    g = None if out_hw is None else rng.standard_normal(shape_x[:-3] + out_hw + (c_out,),
                                                        np.float32)
    return jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias), g


def _value_and_grads(conv, x, kernel, bias, padding, g):
    def f(x, kernel, bias):
        return jnp.vdot(conv(x, kernel, bias, padding), g)
    y = conv(x, kernel, bias, padding)
    return y, jax.grad(f, argnums=(0, 1, 2))(x, kernel, bias)


def _assert_close(actual, expected, what):
    scale = float(jnp.max(jnp.abs(expected))) + 1e-6
    err = float(jnp.max(jnp.abs(actual - expected)))
    assert err <= 2e-5 * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


# (batch, height, width, c_in), kernel size, c_out, padding: VALID and full, odd sizes, channel
# counts on both sides of the thresholds at which the fast path changes method.
CASES = [
    ((3, 9, 11, 3), 5, 7, 0),
    ((2, 10, 10, 5), 4, 6, 3),
    ((4, 7, 9, 130), 3, 5, 2),
    ((2, 8, 8, 6), 5, 130, 4),
    ((6, 6, 5, 129), 3, 2, 0),
    ((2, 5, 7, 4), 1, 3, 0),
]

# Forced methods (plain_below=0: the custom-VJP path even for small kernels), each on a VALID
# and a padded case: every forward, input-gradient and weight-gradient method, chunked or not.
FORCED = [
    {"fwd": "xla", "dx": "xla", "dw": "xla"},
    {"fwd": "im2col", "dx": "im2col", "dw": "xpatches"},
    {"fwd": "col2im", "dx": "col2im", "dw": "dypatches"},
    {"chunks": 2, "fwd": "col2im", "dx": "im2col", "dw": "dypatches"},
    {"chunk_bytes": 1, "fwd": "im2col", "dx": "col2im", "dw": "xpatches"},
    {"xla_batch": 2, "fwd": "xla", "dx": "xla", "dw": "xla"},  # XLA's, in unrolled chunks
    {"chunks": 2, "fwd": "im2col", "dx": "im2col", "dw": "xpatches", "bias_after": True},
]

PARAMS = ([(case, {"plain_below": 0}) for case in CASES]  # the automatic choice of methods
          + [(CASES[0], {}), (CASES[3], {})]  # fully automatic (the plain path for small ones)
          + [(CASES[0], {"xla_batch": 1})]  # the plain path, one example at a time
          + [(case, {"plain_below": 0, **m}) for m in FORCED for case in (CASES[4], CASES[1])]
          # By FFT (fft_conv), forward and gradients: every case (VALID, full, odd and
          # non-square sizes, transform lengths rounded up to 2-3-5-smooth ones, 1x1).
          + [(case, {"plain_below": 0, "fft": True}) for case in CASES])


@pytest.fixture
def override():
    """Forces fast_conv's methods for one test, restoring the automatic choice afterwards."""
    def set_(methods):
        fast_conv.OVERRIDE.clear()
        fast_conv.OVERRIDE.update(methods)
    yield set_
    fast_conv.OVERRIDE.clear()


# The reference, jitted once (cached across tests of the same shapes).
_reference = jax.jit(functools.partial(_value_and_grads, reference_conv), static_argnums=3)


@pytest.mark.parametrize("case,methods", PARAMS, ids=[
    f"x{c[0]}k{c[1]}o{c[2]}p{c[3]}-" + (",".join(f"{k}={v}" for k, v in m.items()) or "auto")
    for c, m in PARAMS])
def test_output_and_gradients_match_plain_conv(case, methods, override):
    shape_x, k, c_out, padding = case
    out_hw = (shape_x[1] + 2 * padding - k + 1, shape_x[2] + 2 * padding - k + 1)
    x, kernel, bias, g = _inputs(shape_x, k, c_out, out_hw)
    y_ref, grads_ref = _reference(x, kernel, bias, padding, g)
    override(methods)  # read while tracing: a fresh jit below
    y, grads = jax.jit(functools.partial(_value_and_grads, fast_conv.conv2d),
                       static_argnums=3)(x, kernel, bias, padding, g)
    assert y.shape == y_ref.shape
    _assert_close(y, y_ref, "output")
    for name, a, b in zip(("dx", "dkernel", "dbias"), grads, grads_ref):
        assert a.shape == b.shape
        _assert_close(a, b, name)


def test_nets_conv2d_dispatch():
    x, kernel, bias, _ = _inputs((2, 8, 8, 3), 3, 4)
    plain = nets.conv2d(x, kernel, bias, 2, "xla")
    for impl in ("fast_cpu", "auto"):
        _assert_close(nets.conv2d(x, kernel, bias, 2, impl), plain, impl)
    assert nets.resolve_conv_impl("auto") == ("fast_cpu" if jax.default_backend() == "cpu"
                                              else "xla")
    with pytest.raises(ValueError, match="Unknown convolution implementation"):
        nets.conv2d(x, kernel, bias, 0, "cudnn")


def test_vmapped(override):
    """Under vmap (as the decoder runs inside the bound) the fast conv matches the plain one."""
    override({"plain_below": 0})
    x, kernel, bias, _ = _inputs((3, 2, 9, 9, 4), 5, 6)
    f = lambda conv: jax.vmap(lambda a: conv(a, kernel, bias, 4))(x)  # noqa: E731
    _assert_close(jax.jit(lambda: f(fast_conv.conv2d))(), jax.jit(lambda: f(reference_conv))(),
                  "vmapped output")
    gk = lambda conv: jax.grad(lambda w: jnp.sum(jax.vmap(  # noqa: E731
        lambda a: conv(a, w, bias, 4))(x) ** 2))(kernel)
    _assert_close(jax.jit(lambda: gk(fast_conv.conv2d))(), jax.jit(lambda: gk(reference_conv))(),
                  "vmapped kernel gradient")


def test_cmma_train_step_same_with_fast_conv(override):
    """A CMMA train step (tiny preset) with conv_impl "fast_cpu" vs "xla": the same metrics
    (loss, elbo, log-likelihood, KL, gradient and parameter norms) and the same gradient of the
    step's loss for every parameter. (The new parameters are not compared: after one Adam step an
    entry whose gradient is ~0 up to rounding can move by ±lr either way.)"""
    override({"plain_below": 0})  # the tiny preset's kernels would otherwise take the plain path
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(size=(4, 64, 64, 3)).astype(np.float32),
             "attributes": (rng.uniform(size=(4, 5)) > 0.5).astype(np.float32)}
    key = jax.random.key(1)
    results, state = {}, None
    for impl in ("xla", "fast_cpu"):
        config = cmma_config.get_config("tiny")
        config.model.conv_impl = impl
        if state is None:
            state = cmma.init_state(jax.random.key(0), config, batch)

        def step_and_grads(state, batch, key, config=config):
            # The step's loss is -mean(bound) with the step's key (gaussian.elbo_train_step).
            loss = lambda p: -jnp.mean(cmma.bound(p, batch, key, config=config).elbo)  # noqa
            return cmma.train_step(state, batch, key, config=config)[1], jax.grad(loss)(
                state.params)

        results[impl] = jax.jit(step_and_grads)(state, batch, key)
    (m_x, g_x), (m_f, g_f) = results["xla"], results["fast_cpu"]
    assert set(m_f) == set(m_x)
    for name in m_x:
        np.testing.assert_allclose(m_f[name], m_x[name], rtol=2e-5, atol=1e-4, err_msg=name)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_f),
                            jax.tree_util.tree_leaves(g_x)):
        scale = float(np.max(np.abs(b))) + 1e-6
        assert float(np.max(np.abs(a - b))) <= 1e-4 * scale, jax.tree_util.keystr(path)


def reference_upsample_conv(x, kernel, bias, padding):
    """Nearest-neighbour 2x upsampling by `np.repeat`-style indexing, then `reference_conv`."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return reference_conv(up, kernel, bias, padding)


# (batch, height, width, c_in), kernel size, c_out, padding: the decoder's 5x5 "full" layers,
# an even kernel (odd output sizes: the phases are cropped), VALID, 1x1 and a non-square input.
UPSAMPLE_CASES = [
    ((2, 6, 6, 5), 5, 7, 4),
    ((2, 5, 7, 3), 4, 5, 3),
    ((3, 9, 8, 4), 5, 3, 0),
    ((2, 4, 4, 2), 1, 3, 0),
    ((2, 6, 6, 3), 3, 130, 1),
    ((2, 6, 5, 4), 5, 3, 2),
]


@pytest.mark.parametrize("plain_below", [0, 10**9], ids=["custom_vjp", "plain"])
@pytest.mark.parametrize("case", UPSAMPLE_CASES, ids=lambda c: f"x{c[0]}k{c[1]}o{c[2]}p{c[3]}")
def test_upsample_conv_matches_upsample_then_conv(case, plain_below, override):
    """The polyphase form (no upsampled map) is the same function, with the same gradients, as
    upsampling then convolving, whichever inner convolution it uses."""
    shape_x, k, c_out, padding = case
    out_hw = (2 * shape_x[1] + 2 * padding - k + 1, 2 * shape_x[2] + 2 * padding - k + 1)
    x, kernel, bias, g = _inputs(shape_x, k, c_out, out_hw, seed=3)
    y_ref, grads_ref = jax.jit(functools.partial(_value_and_grads, reference_upsample_conv),
                               static_argnums=3)(x, kernel, bias, padding, g)
    override({"plain_below": plain_below})
    up = functools.partial(fast_conv.conv2d, upsample=True)
    y, grads = jax.jit(functools.partial(_value_and_grads, up), static_argnums=3)(
        x, kernel, bias, padding, g)
    assert y.shape == y_ref.shape
    _assert_close(y, y_ref, "output")
    for name, a, b in zip(("dx", "dkernel", "dbias"), grads, grads_ref):
        _assert_close(a, b, name)


def test_phase_taps_cover_every_tap_once():
    for k, padding in [(5, 4), (4, 3), (5, 0), (3, 1), (1, 0)]:
        m, d_min, d_max = fast_conv._phase_taps(k, padding)
        np.testing.assert_array_equal(m.sum(axis=1), np.ones((2, k)))  # each tap in one place
        for r in (0, 1):
            for i in range(k):
                assert m[r, (r + i - padding) // 2 - d_min, i] == 1


def test_upsample_conv_rejects_a_kernel_that_does_not_fit():
    x, kernel, bias, _ = _inputs((1, 2, 2, 1), 5, 1)
    with pytest.raises(ValueError, match="does not fit"):
        fast_conv.upsample_conv2d(x, kernel, bias, 0)


def test_nets_conv_upsample_same_for_both_impls():
    x, kernel, bias, _ = _inputs((2, 6, 6, 3), 5, 4)
    plain = nets.conv2d(x, kernel, bias, 4, "xla", upsample=True)
    assert plain.shape == (2, 16, 16, 4)
    _assert_close(nets.conv2d(x, kernel, bias, 4, "fast_cpu", upsample=True), plain, "fast_cpu")


def test_weight_gradient_choice_by_width():
    """XLA's weight gradient for narrow layers at any batch (the CPU preset: measured faster, in
    chunks of `XLA_CHUNK` examples); the patch matmuls for wide layers, as before."""
    for batch in (16, 64):
        assert fast_conv._choose_dw((batch, 30, 30, 16), (batch, 26, 26, 32), 5, 0) == "xla"
    # The paper's encoder conv2 (192 -> 96) keeps the patches at any batch.
    for batch in (16, 64):
        assert fast_conv._choose_dw((batch, 30, 30, 192), (batch, 26, 26, 96), 5, 0) \
            == "dypatches"


@pytest.mark.parametrize("batch, most, chunks", [(64, 8, 8), (16, 8, 2), (12, 8, 2), (7, 8, 1),
                                                 (9, 8, 3), (5, 4, 5), (3, 1, 3)])
def test_split_into_fewest_equal_chunks(batch, most, chunks):
    assert fast_conv._split(batch, most) == chunks
    assert batch % chunks == 0 and batch // chunks <= most


def reference_conv_pool(x, kernel, bias, padding):
    """`reference_conv`, then 2x2 max-pooling as a reshape and a max (JAX's own gradient: equal
    to the first-maximum rule wherever a window has no ties, as with random inputs)."""
    y = reference_conv(x, kernel, bias, padding)
    b, h, w, c = y.shape
    return y.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# (batch, height, width, c_in), kernel size, c_out, padding (even outputs), forced methods, and
# whether the pooling then runs inside the convolution's loop.
POOL_CASES = [
    (((3, 10, 12, 3), 5, 7, 0), {"plain_below": 0, "fwd": "im2col"}, True),  # dw: xpatches
    (((3, 10, 12, 3), 5, 7, 0), {"plain_below": 0, "fwd": "im2col", "chunks": 3}, True),
    (((2, 9, 9, 5), 4, 6, 1), {"plain_below": 0, "fwd": "col2im", "dw": "dypatches",
                               "chunks": 2}, True),
    (((2, 9, 9, 5), 4, 6, 1), {"plain_below": 0, "fwd": "im2col", "dw": "xla"}, True),
    (((4, 9, 9, 5), 4, 6, 1), {"xla_batch": 2}, True),  # XLA's, in two unrolled chunks
    (((2, 9, 9, 5), 4, 6, 1), {}, True),  # a small kernel (below PLAIN_BELOW): XLA's
    (((2, 9, 9, 5), 4, 6, 1), {"fwd": "im2col", "pool_after": True}, False),
    (((2, 9, 9, 5), 4, 6, 1), {"fft": True}, False),  # by FFT: no loop to pool in
    (((2, 9, 9, 5), 3, 6, 1), {}, False),  # a 9 x 9 output: pooled after (and refused)
]


@pytest.mark.parametrize("case,methods,in_loop", POOL_CASES, ids=[
    f"x{c[0]}k{c[1]}o{c[2]}p{c[3]}-" + (",".join(f"{k}={v}" for k, v in m.items()) or "auto")
    for c, m, _ in POOL_CASES])
def test_pooled_output_and_gradients_match_conv_then_pool(case, methods, in_loop, override):
    shape_x, k, c_out, padding = case
    out_h, out_w = shape_x[1] + 2 * padding - k + 1, shape_x[2] + 2 * padding - k + 1
    x, kernel, bias, g = _inputs(shape_x, k, c_out, (out_h // 2, out_w // 2), seed=5)
    override(methods)
    assert fast_conv._pool_in_loop(x.shape, kernel.shape, padding) == in_loop
    pooled = functools.partial(fast_conv.conv2d, pool=True)
    if out_h % 2 or out_w % 2:
        with pytest.raises(ValueError, match="even spatial sizes"):
            pooled(x, kernel, bias, padding)
        return
    y, grads = jax.jit(functools.partial(_value_and_grads, pooled),
                       static_argnums=3)(x, kernel, bias, padding, g)
    y_ref, grads_ref = jax.jit(functools.partial(_value_and_grads, reference_conv_pool),
                               static_argnums=3)(x, kernel, bias, padding, g)
    assert y.shape == y_ref.shape
    _assert_close(y, y_ref, "output")
    for name, a, b in zip(("dx", "dkernel", "dbias"), grads, grads_ref):
        _assert_close(a, b, name)


def test_pooling_in_the_loop_but_by_fft():
    """Both presets' first layers and the CPU preset's second pool in their loop; the paper's
    second (by FFT) and odd outputs pool after the convolution."""
    assert fast_conv._pool_in_loop((64, 64, 64, 3), (5, 5, 3, 192), 0)
    assert fast_conv._pool_in_loop((16, 64, 64, 3), (5, 5, 3, 16), 0)
    assert fast_conv._pool_in_loop((16, 30, 30, 16), (5, 5, 16, 32), 0)
    assert not fast_conv._pool_in_loop((64, 30, 30, 192), (5, 5, 192, 96), 0)
    assert not fast_conv._pool_in_loop((64, 64, 64, 3), (4, 4, 3, 192), 0)  # 61 x 61
