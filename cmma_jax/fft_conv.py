"""A stride-1 convolution computed with real FFTs: one of `fast_conv`'s formulations.

`correlate(x, kernel, padding)` is `VALID(pad(x, padding), kernel)` (NHWC input, HWIO kernel, the
"convolution" of deep learning, which is a correlation), the function of `nets.conv2d` without its
bias. It is a plain JAX function: its gradients are JAX's own, and they are FFT correlations as
well (the transpose of an FFT is an inverse FFT, of a per-frequency matmul a matmul).

How. A correlation is a product per frequency: with the input zero-extended to a circular length
N >= H + padding on each axis, y[o] = sum_i x[o + i - padding] w[i] never wraps around for the
outputs o < H + 2 padding - k + 1, and its transform is

    Y[f, b, d] = sum_c X[f, b, c] K[f, c, d],   K[f] = sum_i w[i] exp(+2 pi i f (i - padding) / N),

one [B, C_in] by [C_in, C_out] complex matmul per frequency f (N x (N/2 + 1) of them, the second
axis halved by the input being real). The kernel's transform K is a complex matmul of a constant
table of phases with the k x k taps; the input's and the output's are XLA's FFTs (`jnp.fft.rfft2`,
`irfft2`) between transposes that bring the spatial axes last for the FFT and the frequencies first
for the matmul. N is the smallest 2-, 3- and 5-smooth length >= H + padding.

Why. The per-frequency matmuls execute 8 N (N/2 + 1) B C_in C_out FLOPs against the direct
convolution's 2 Ho Wo k^2 B C_in C_out: 6x fewer for the paper CMMA's encoder layer 2 (5 x 5, a
30 x 30 input, 192 -> 96 channels; 120 of the step's 262 executed GFLOP with the direct
formulations), and the transforms move about 250 MB a pass at batch 64. `fast_conv` chooses this
formulation where it was measured faster (`fast_conv._choose_fft`; measurements there).

Accuracy: float32 throughout; against XLA's convolution at "highest" precision the largest error
is a few 1e-6 of the output's range (tests/test_fast_conv.py), as for the other formulations.

A bottom layer: it imports jax and numpy only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array


def transform_size(n: int) -> int:
    """The smallest 2-, 3- and 5-smooth integer >= n (an FFT length XLA's FFT is fast for)."""
    if n < 1:
        raise ValueError(f"transform_size needs a positive length, got {n}.")
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


@functools.lru_cache(maxsize=None)
def kernel_phases(k: int, padding: int, n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi (f1 (i - padding) / n1 + f2 (j - padding) / n2), as
    `[n1 * (n2 // 2 + 1), k * k]` float32 tables (rows: frequencies f1, f2; columns: taps i, j):
    a k x k kernel's transform K (module docstring) is `cos @ taps + i sin @ taps`."""
    f1 = np.arange(n1)[:, None, None, None]
    f2 = np.arange(n2 // 2 + 1)[None, :, None, None]
    i = np.arange(k)[None, None, :, None] - padding
    j = np.arange(k)[None, None, None, :] - padding
    angle = 2 * np.pi * (f1 * i / n1 + f2 * j / n2)
    angle = angle.reshape(n1 * (n2 // 2 + 1), k * k)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def correlate(x: Array, kernel: Array, padding: int = 0) -> Array:
    """`VALID(pad(x, padding), kernel)` by real FFTs.

    Args:
      x: `[B, H, W, C_in]`.
      kernel: `[k, k, C_in, C_out]` (HWIO).
      padding: zeros on each side of both spatial axes, 0 <= padding <= k - 1.

    Returns:
      `[B, H + 2 padding - k + 1, W + 2 padding - k + 1, C_out]`, the dtype of x (computed in
      float32).
    """
    k, k2, ci, co = kernel.shape
    b, h, w, c = x.shape
    if k != k2 or c != ci:
        raise ValueError(f"correlate needs a square [k, k, C_in, C_out] kernel with C_in = "
                         f"{c} (x {x.shape}); got a kernel of shape {kernel.shape}.")
    if not 0 <= padding <= k - 1:
        raise ValueError(f"correlate needs 0 <= padding <= k - 1 = {k - 1}, got {padding}.")
    ho, wo = h + 2 * padding - k + 1, w + 2 * padding - k + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"A {k}x{k} kernel with padding {padding} does not fit a {h}x{w} input.")
    n1, n2 = transform_size(h + padding), transform_size(w + padding)
    nf = n2 // 2 + 1
    cos, sin = kernel_phases(k, padding, n1, n2)
    # One complex matmul: 40 + 18 ms (forward + gradient) against 47 + 33 for two real ones and
    # a complex() at the paper's 192 -> 96 (the 70 MB spectrum is written once).
    taps = kernel.astype(jnp.complex64).reshape(k * k, ci * co)
    spectrum_k = jnp.dot(lax.complex(cos, sin), taps).reshape(n1, nf, ci, co)
    xt = jnp.transpose(x.astype(jnp.float32), (0, 3, 1, 2))               # B C_in H W
    spectrum_x = jnp.transpose(jnp.fft.rfft2(xt, s=(n1, n2)), (2, 3, 0, 1))  # n1 nf B C_in
    spectrum_y = jnp.einsum("fgbc,fgcd->fgbd", spectrum_x, spectrum_k)    # n1 nf B C_out
    y = jnp.fft.irfft2(jnp.transpose(spectrum_y, (2, 3, 0, 1)), s=(n1, n2))[:, :, :ho, :wo]
    return jnp.transpose(y, (0, 2, 3, 1)).astype(x.dtype)


__all__ = ["correlate", "kernel_phases", "transform_size"]
