"""The FFT convolution (`cmma_jax.fft_conv`) against a direct numpy correlation, and its checks.

(Its agreement with XLA's convolution, gradients included, forced through `fast_conv` for every
case there, is in tests/test_fast_conv.py.)
"""

import jax.numpy as jnp
import numpy as np
import pytest

from cmma_jax import fast_conv, fft_conv


def numpy_correlation(x, kernel, padding):
    """VALID(pad(x), kernel) by its definition, in float64 loops over the taps."""
    k = kernel.shape[0]
    xp = np.pad(x.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    y = np.zeros((x.shape[0], ho, wo, kernel.shape[3]))
    for i in range(k):
        for j in range(k):
            y += np.einsum("bhwc,cd->bhwd", xp[:, i:i + ho, j:j + wo, :], kernel[i, j])
    return y


@pytest.mark.parametrize("shape,k,c_out,padding", [
    ((2, 9, 11, 3), 5, 4, 0),    # VALID, non-square, n2 = 11 rounded up to 12
    ((2, 7, 7, 2), 5, 3, 4),     # "full" (padding k - 1): n = 11 -> 12
    ((1, 6, 5, 4), 4, 2, 1),     # even kernel, padding between
    ((3, 5, 5, 2), 1, 3, 0),     # 1x1
    ((1, 13, 13, 3), 3, 2, 2),   # n = 15 (3 x 5)
])
def test_correlate_matches_the_definition(shape, k, c_out, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal((k, k, shape[-1], c_out)).astype(np.float32)
    y = np.asarray(fft_conv.correlate(jnp.asarray(x), jnp.asarray(kernel), padding))
    expected = numpy_correlation(x, kernel, padding)
    assert y.shape == expected.shape
    # float32 FFTs: errors of a few float32 epsilons of the output's scale times log N.
    np.testing.assert_allclose(y, expected, atol=1e-5 * np.max(np.abs(expected)), rtol=0)


def test_correlate_keeps_the_input_dtype():
    x = jnp.ones((1, 6, 6, 2), jnp.bfloat16)
    kernel = jnp.ones((3, 3, 2, 1), jnp.float32)
    y = fft_conv.correlate(x, kernel, 0)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), 18.0)


def test_transform_size_is_the_next_smooth_length():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1
    for n in range(1, 200):
        expected = next(m for m in range(n, 400) if smooth(m))
        assert fft_conv.transform_size(n) == expected
    with pytest.raises(ValueError, match="positive"):
        fft_conv.transform_size(0)


@pytest.mark.parametrize("kernel_shape,padding,match", [
    ((3, 3, 5, 2), 0, "C_in = 4"),
    ((3, 2, 4, 2), 0, "square"),
    ((3, 3, 4, 2), 3, "padding <= k - 1"),
    ((9, 9, 4, 2), 0, "does not fit"),
])
def test_correlate_names_bad_shapes(kernel_shape, padding, match):
    with pytest.raises(ValueError, match=match):
        fft_conv.correlate(jnp.zeros((1, 6, 6, 4)), jnp.zeros(kernel_shape), padding)


def test_fft_chosen_for_the_wide_5x5_layers_only():
    """The paper CMMA's encoder layer 2 (192 -> 96, 5x5) goes by FFT; its 4x4 layers, its first
    layer (3 input channels) and the CPU preset's narrow layers do not."""
    assert fast_conv._choose_fft((64, 30, 30, 192), (5, 5, 192, 96))
    assert not fast_conv._choose_fft((64, 13, 13, 96), (4, 4, 96, 48))
    assert not fast_conv._choose_fft((64, 64, 64, 3), (5, 5, 3, 192))
    assert not fast_conv._choose_fft((16, 30, 30, 16), (5, 5, 16, 32))
