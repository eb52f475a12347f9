"""A fast stride-1 convolution for the CPU backend, with a custom VJP.

`conv2d(x, kernel, bias, padding)` is `nets.conv2d` (NHWC input, HWIO kernel, `padding` zeros on
each side, then a VALID convolution, plus bias): the same function and the same parameters, computed
differently. `nets.conv2d(..., impl="fast_cpu")` (config `model.conv_impl`) dispatches here, and
"auto" picks it on the CPU backend.

Why: on CPU, XLA's forward convolution (Eigen) is fast when it has many output channels, but its
gradients of padded convolutions are slow, and so is the forward pass with few output channels.
Here the forward pass, the input gradient and the weight gradient are each computed by whichever of
a few formulations was measured fastest for the layer's shape, all of them forward convolutions or
large matmuls:

  forward and input gradient (a "correlation" y = VALID(pad(x), w); the input gradient is the
  correlation of dy, padded by k-1-padding, with the spatially flipped, in/out-swapped kernel):
    "xla":    lax.conv_general_dilated with the padding in the convolution (Eigen's spatial
              convolution); chosen when C_out >= 128.
    "col2im": P = x @ W, W reshaped to [C_in, k*k*C_out] (one matmul at the input's resolution),
              then y = the sum of the k*k shifted slices of P; chosen when C_in >= 128 > C_out.
    "im2col": the k*k shifted slices of pad(x) side by side ([B*Ho*Wo, k*k*C_in]) @ W.
  weight gradient, dw[i, j, c, d] = sum_{n,h,w} pad(x)[n, h+i, w+j, c] dy[n, h, w, d]:
    "dypatches": x^T @ D, D the k*k shifted slices of dy at x's positions ([B*H*W, k*k*C_out]);
              chosen unless the input-side patches are more than 4x smaller.
    "xpatches": the shifted slices of pad(x) ([k*k*C_in, B*Ho*Wo]) @ dy (the first layer, C_in=3).
    "xla":    a forward convolution with batch and channels swapped through dimension numbers
              (lhs = x as [C_in "batch", H, W, B "features"], rhs = dy as a [Ho, Wo, B, C_out]
              kernel). As slow as XLA's own gradient at the paper's widths; chosen for layers
              narrower than 128 channels (the `small` CPU preset at batch 16: the whole step
              1.5x faster than with "dypatches"; quiet 2-core AMD EPYC, 2026-12-06).
  The patch and col2im methods run over chunks of the batch in a `lax.fori_loop` (dynamic slices
  of the batch axis, the weight gradient accumulated in the loop carry) so that each chunk's
  temporary stays under 16 MB: 2-3x faster than the whole batch at once.
  XLA's own convolutions (the "xla" methods and the plain path below) run over the batch in
  chunks of at most `XLA_CHUNK` (8) examples, unrolled (static slices, then a concatenation or a
  sum): XLA hands them to YNNPACK, whose time per example grows with the batch (the small
  preset's first-layer weight gradient: under 0.7 ms a step at batch 16, 51 ms at 64), and inside
  a `fori_loop` it does not use YNNPACK at all (Eigen, 4x slower). Small CMMA, quiet 2-core AMD
  EPYC, 2026-12-07 (`benchmarks/fast_conv_choices.py`, against the choices before): batch 64
  1.81x faster (302 -> 167 ms a step), batch 32 1.23x, batch 16 1.08x; the paper preset
  unchanged (1.01x).
  By FFT ("fft", `cmma_jax.fft_conv`): layers with kernels of at least `FFT_MIN_KERNEL` (5) and
  at least `FFT_MIN_CHANNELS` input and output channels go through real FFTs, forward and
  gradients (JAX's own gradients of the FFT formulation): one complex [B, C_in] x [C_in, C_out]
  matmul per frequency instead of k*k shifted matmuls, 6x fewer FLOPs for the paper CMMA's
  encoder layer 2 (192 -> 96, 5x5, 30x30 input). That layer alone, batch 64, forward and
  backward: 0.92-1.17 s -> 0.36-0.39 s; the paper step 1.27x faster (1,937 -> 1,523 ms, `python
  benchmarks/fast_conv_choices.py --presets=paper --batch_sizes=64 --variants=auto,no_fft`;
  quiet 2-core AMD EPYC, 2026-12-07). Not used for the first layer (3 input channels: 4x slower,
  the per-frequency matmuls are too thin and the 64x64 spectra too large), the 4x4 layers (13x13
  maps: no faster) or the upsampling layers (already 2.8x fewer FLOPs by their phases).
  Kernels smaller than `PLAIN_BELOW` elements (the "tiny" test preset) use the plain convolution
  and XLA's own gradient: there the loops and the matmuls' set-up cost more than they save.

Upsampling fused into the convolution (`upsample_conv2d`, `conv2d(..., upsample=True)`): the
decoder's "2x nearest-neighbour upsample, then a 5x5 full convolution" is computed as one 3x3
convolution of the small map with four phase kernels stacked along the output channels, then
interleaved (depth to space). The same function of the same parameters, with 2.8x fewer FLOPs
and no 4x-larger upsampled tensor; it is most of the gain on the decoder's two last layers.

Pooling inside the loop (`conv2d(..., pool=True)`, `_conv_pool`): the encoder's "convolve, then
2x2 max-pool", wherever the convolution runs over chunks of the batch (all but the FFT layers):
each chunk's output is pooled in the loop, or in XLA's unrolled chunks
(`pooling.max_and_position`), so the whole output (177 MB for the paper CMMA's first layer at
batch 64) and the zeroed buffer the loop would write it into never exist; the weight gradient
unpools dy chunk by chunk. The paper step 1.06-1.12x faster, the small one 1.05-1.10x at batch
16 (2026-12-07).
Pooled layers take this custom VJP even below `PLAIN_BELOW` (the small preset's first layer).

Measured (2-core Xeon with AVX-512, both threads, jax 0.10.2; the paper's CMMA layers at batch
64; seconds, minimum of 5 on a VM shared with other jobs, so +-20%; "plain" is XLA's convolution
and its own gradient):

  layer: C_in -> C_out, k, pad      forward                input gradient       weight gradient
  encoder 1: 3 -> 192, 5, 0         xla .15, im2col .10-.14  (not needed)       xla .38, xpatches .06-.09
  encoder 2: 192 -> 96, 5, 0        xla .70, col2im .22-.26  xla .18, col2im .29 xla .91, dypatches .30
  decoder 2 (upsample fused):       xla .07, col2im .11    xla .26, col2im .085  xla .59, dypatches .095
    13x13x96 -> 3x3 phases -> 4x192   (unfused, 26x26 input: forward .19, input gradient .27,
                                        weight gradient .32; plain full VJP 39 s)
  heads (upsample fused):           xla .04, col2im .03    xla .07, im2col .046  xla .63, dypatches .05
    30x30x192 -> 3x3 phases -> 4x6    (unfused, 60x60 input: .08, .14, .15-.18)

  The whole paper-size train step: 1.5 s with these choices, 2.3 s before the upsampling was
  fused, 11.5-12.6 s with the plain "xla" convolutions; PyTorch eager 1.75-2.2 s on the same
  machine (benchmarks/RESULTS.md, `python benchmarks/torch_reference.py`). On a 2-core AMD
  EPYC, 2026-12-07, with the FFT and the pooling in the loop: 1.16 s, torch.compile 1.47 s.

Also measured, and not used: `lax.map` over a reshaped batch (+ a sum of per-chunk weight
gradients): slower, with relayout copies under `vmap`; gathers instead of slices for the patches:
no faster (the matmul dominates); chunks of 4 or 64 MB: slower than 16 MB; one im2col einsum over
the whole batch for the weight gradient: 2-3x slower than chunked. XLA sometimes hands a VALID
convolution of an explicitly padded input to YNNPACK, measured 4x slower than Eigen for the
decoder's second layer; the "xla" method therefore pads inside the convolution.

`OVERRIDE` (a dict) forces choices for tests and benchmarks, read at trace time: "fwd", "dx"
(method names above), "dw", "chunks" (a number of chunks), "chunk_bytes", "plain_below",
"xla_batch" (the most examples per chunk of XLA's own convolutions, `XLA_CHUNK`), "bias_after"
(the bias added after the patch methods' loop, as before 2026-12-07).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cmma_jax import fft_conv, pooling

Array = jax.Array

_DN = ("NHWC", "HWIO", "NHWC")

# Forced choices for tests and benchmarks (see the module docstring); empty: automatic.
OVERRIDE: dict = {}

# Kernels with fewer elements than this use the plain convolution and XLA's own gradient.
PLAIN_BELOW = 4096
# XLA's own convolutions (the "xla" methods and the plain path) run over the batch in unrolled
# chunks of at most this many examples: YNNPACK, which XLA hands them to, slows down per example
# as the batch grows (module docstring).
XLA_CHUNK = 8
# Convolutions with kernels at least this wide and at least this many input and output channels
# run by FFT (`fft_conv`), forward and gradients.
FFT_MIN_KERNEL = 5
FFT_MIN_CHANNELS = 64


def _pad(x: Array, lo: int, hi: Optional[int] = None) -> Array:
    hi = lo if hi is None else hi
    if lo == 0 and hi == 0:
        return x
    return lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (lo, hi, 0), (lo, hi, 0), (0, 0, 0)))


# ---------------------------------------------------------------------------------------------
# Forward-type correlations: y = VALID(pad(x, pad), w)


def _corr_xla(x: Array, w: Array, pad: int) -> Array:
    # The padding goes into the convolution (not a separate pad): XLA then runs it with Eigen's
    # spatial convolution; a VALID convolution of a padded input can become a YNNPACK fusion,
    # measured 3-4x slower for the decoder's 26 -> 30, 96 -> 192 layer.
    return lax.conv_general_dilated(x, w, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=_DN)


def _corr_im2col(x: Array, w: Array, pad: int) -> Array:
    k, _, ci, co = w.shape
    xp = _pad(x, pad)
    b, h, wd, _ = xp.shape
    ho, wo = h - k + 1, wd - k + 1
    cols = jnp.concatenate([xp[:, i:i + ho, j:j + wo, :] for i in range(k) for j in range(k)],
                           axis=-1)
    y = jnp.dot(cols.reshape(b * ho * wo, k * k * ci), w.reshape(k * k * ci, co))
    return y.reshape(b, ho, wo, co)


def _corr_col2im(x: Array, w: Array, pad: int) -> Array:
    k, _, ci, co = w.shape
    b, h, wd, _ = x.shape
    ho, wo = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    wt = jnp.transpose(w, (2, 0, 1, 3)).reshape(ci, k * k * co)
    p = jnp.dot(x.reshape(b * h * wd, ci), wt).reshape(b, h, wd, k, k, co)
    p = lax.pad(p, jnp.zeros((), p.dtype),
                ((0, 0, 0), (pad, pad, 0), (pad, pad, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)))
    y = None
    for i in range(k):
        for j in range(k):
            t = p[:, i:i + ho, j:j + wo, i, j, :]
            y = t if y is None else y + t
    return y


_CORR = {"xla": _corr_xla, "im2col": _corr_im2col, "col2im": _corr_col2im}


# ---------------------------------------------------------------------------------------------
# Weight gradients: dw[i, j, c, d] = sum_{n, h, w} pad(x)[n, h + i, w + j, c] dy[n, h, w, d]


def _dw_xla(x: Array, dy: Array, k: int, pad: int) -> Array:
    # A forward convolution with batch and channels swapped: lhs = x as [C_in "batch", H, W,
    # B "features"], rhs = dy as a [H_out, W_out, B, C_out] kernel -> out [k, k, C_in, C_out].
    return lax.conv_general_dilated(_pad(x, pad), dy, (1, 1), "VALID",
                                    dimension_numbers=("CHWN", "IHWO", "HWNC"))


def _dw_xpatches(x: Array, dy: Array, k: int, pad: int) -> Array:
    ci, co = x.shape[-1], dy.shape[-1]
    b, ho, wo, _ = dy.shape
    xt = jnp.transpose(_pad(x, pad), (3, 0, 1, 2))  # [C_in, B, H, W]
    cols = jnp.stack([xt[:, :, i:i + ho, j:j + wo] for i in range(k) for j in range(k)], axis=0)
    dw = jnp.dot(cols.reshape(k * k * ci, b * ho * wo), dy.reshape(b * ho * wo, co))
    return dw.reshape(k, k, ci, co)


def _dw_dypatches(x: Array, dy: Array, k: int, pad: int) -> Array:
    # dw[i, j] = sum_{p, q} x[p, q] dy[p + pad - i, q + pad - j]  (x unpadded, dy zero outside).
    b, h, wd, ci = x.shape
    _, ho, wo, co = dy.shape
    lo = k - 1 - pad
    dyp = lax.pad(dy, jnp.zeros((), dy.dtype),
                  ((0, 0, 0), (lo, h + k - 1 - ho - lo, 0), (lo, wd + k - 1 - wo - lo, 0),
                   (0, 0, 0)))
    cols = jnp.stack([dyp[:, k - 1 - i:k - 1 - i + h, k - 1 - j:k - 1 - j + wd, :]
                      for i in range(k) for j in range(k)], axis=3)  # [B, H, W, k*k, C_out]
    dw = lax.dot_general(x.reshape(b * h * wd, ci), cols.reshape(b * h * wd, k * k * co),
                         (((0,), (0,)), ((), ())))  # [C_in, k*k*C_out]
    return jnp.transpose(dw.reshape(ci, k, k, co), (1, 2, 0, 3))


_DW = {"xla": _dw_xla, "xpatches": _dw_xpatches, "dypatches": _dw_dypatches}


# ---------------------------------------------------------------------------------------------
# Choosing


def _choose_corr(ci: int, co: int, k: int) -> str:
    if co >= 128:
        # Few input channels (the first layer; the input gradient of the output heads): the
        # patches are narrow and one matmul beats Eigen's convolution.
        return "im2col" if k * k * ci <= 512 else "xla"
    if ci >= 128:
        return "col2im"
    return "xla"


def _choose_fft(x_shape, kernel_shape) -> bool:
    """Whether the whole convolution (forward and gradients) goes through `fft_conv`: wide
    layers with 5x5 or larger kernels (module docstring, "By FFT")."""
    if "fft" in OVERRIDE:
        return bool(OVERRIDE["fft"])
    k, _, ci, co = kernel_shape
    return k >= FFT_MIN_KERNEL and min(ci, co) >= OVERRIDE.get("fft_min_channels",
                                                               FFT_MIN_CHANNELS)


def _choose_dw(x_shape, dy_shape, k: int, pad: int) -> str:
    ci, co = x_shape[-1], dy_shape[-1]
    if max(ci, co) < 128:
        # Narrow layers (the CPU preset's 16-32 channels): the batch (a chunk of `XLA_CHUNK`
        # examples) is the swapped convolution's input depth; the patch matmuls are too thin to
        # pay for their 25x-larger temporaries (benchmarks/RESULTS.md, issue #22).
        return "xla"
    x_side = _temp_bytes("xpatches", x_shape, ci, co, k, pad)
    dy_side = _temp_bytes("dypatches", x_shape, ci, co, k, pad)
    return "xpatches" if 4 * x_side < dy_side else "dypatches"


def _num_chunks(batch: int, bytes_per_example: int) -> int:
    """How many equal chunks to split a batch into so that each chunk's temporary (im2col
    patches) stays under `OVERRIDE["chunk_bytes"]` (default 16 MB): the largest divisor of the
    batch that fits (at least one example per chunk)."""
    if "chunks" in OVERRIDE:
        return OVERRIDE["chunks"] if batch % OVERRIDE["chunks"] == 0 else 1
    target = OVERRIDE.get("chunk_bytes", 16 << 20)
    return _split(batch, max(1, target // max(1, bytes_per_example)))


def _split(batch: int, most: int) -> int:
    """The number of equal chunks of at most `most` examples (the fewest) a batch splits into."""
    return batch // max(d for d in range(1, min(most, batch) + 1) if batch % d == 0)


def _xla_chunks(batch: int) -> int:
    """Chunks of at most `XLA_CHUNK` examples, for XLA's own convolutions (module docstring)."""
    return _split(batch, OVERRIDE.get("xla_batch", XLA_CHUNK))


def _chunks(method: str, x_shape, ci: int, co: int, k: int, pad: int) -> int:
    """How many chunks of the batch a method runs over: "xla" in `_xla_chunks`, the patch
    methods in chunks whose temporary fits `_num_chunks`'s budget."""
    if method == "xla":
        return _xla_chunks(x_shape[0])
    return _num_chunks(x_shape[0], _temp_bytes(method, x_shape, ci, co, k, pad))


def _chunked(fn, chunks: int, *xs, summed: bool = False, unroll: bool = False):
    """`fn(*xs)` computed `chunks` examples at a time in a loop over dynamic slices of the batch
    axis (no copies or relayouts of xs). `fn` (returning an array or a tuple of them) either
    maps each example independently (each chunk's output is written into its rows of the
    result) or, with `summed`, sums over the examples (a weight gradient: the chunks' outputs
    are accumulated). With `unroll`, no loop:
    static slices, then a concatenation or a sum (XLA's own convolutions, which lose YNNPACK
    inside a loop)."""
    if chunks <= 1:
        return fn(*xs)
    b = xs[0].shape[0]
    size = b // chunks
    tree = jax.tree_util.tree_map
    if unroll:
        parts = [fn(*[x[i * size:(i + 1) * size] for x in xs]) for i in range(chunks)]
        if summed:
            return functools.reduce(lambda u, v: tree(jnp.add, u, v), parts)
        return tree(lambda *p: jnp.concatenate(p, axis=0), *parts)
    out = jax.eval_shape(fn, *[x[:size] for x in xs])

    def body(i, acc):
        part = fn(*[lax.dynamic_slice_in_dim(x, i * size, size, 0) for x in xs])
        if summed:
            return tree(jnp.add, acc, part)
        return tree(lambda a, p: lax.dynamic_update_slice_in_dim(a, p, i * size, 0), acc, part)

    init = tree(lambda o: jnp.zeros(o.shape if summed else (b,) + o.shape[1:], o.dtype), out)
    return lax.fori_loop(0, chunks, body, init)


def _temp_bytes(method: str, x_shape, ci: int, co: int, k: int, pad: int) -> int:
    """Bytes per example of the largest temporary of a method (float32)."""
    _, h, w, _ = x_shape
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    if method in ("im2col", "xpatches"):
        return 4 * ho * wo * k * k * ci
    if method == "col2im":
        return 4 * (h + 2 * pad) * (w + 2 * pad) * k * k * co
    if method == "dypatches":
        return 4 * h * w * k * k * co
    return 0


def _correlate(x, w, pad, which, bias=None):
    """The correlation by the chosen method, plus `bias` (if given). The patch methods add it
    inside their loop, with each chunk, rather than in another pass over the whole output: the
    paper CMMA's step 1.01-1.03x faster in two quiet runs (its first layer's output is 177 MB at
    batch 64). XLA's own convolutions add it after their concatenation (per chunk measured no
    faster)."""
    ci, co, k = w.shape[2], w.shape[3], w.shape[0]
    method = _corr_method(which, ci, co, k)
    corr = functools.partial(_CORR[method], w=w, pad=pad)
    b = None if bias is None else bias[None, None, None, :]
    in_loop = b is not None and method != "xla" and not OVERRIDE.get("bias_after")
    y = _chunked(lambda a: (corr(a) + b) if in_loop else corr(a),
                 _chunks(method, x.shape, ci, co, k, pad), x, unroll=method == "xla")
    return y if b is None or in_loop else y + b


def _corr_method(which: str, ci: int, co: int, k: int) -> str:
    """The method of a forward ("fwd") or input-gradient ("dx") correlation."""
    return OVERRIDE.get(which) or _choose_corr(ci, co, k)


def _weight_grad(x, dy, k, pad, position=None):
    """dw by the chosen method, over chunks of the batch. With `position`, dy is the gradient of
    the 2x2-pooled output, unpooled chunk by chunk inside the loop (`_conv_pool`)."""
    ci, co = x.shape[-1], dy.shape[-1]
    pooled = position is not None
    dy_shape = (dy.shape[0], 2 * dy.shape[1], 2 * dy.shape[2], co) if pooled else dy.shape
    method = OVERRIDE.get("dw") or _choose_dw(x.shape, dy_shape, k, pad)

    def grad(a, g, *p):
        return _DW[method](a, pooling.unpool(p[0], g) if pooled else g, k, pad)

    xs = (x, dy, position) if pooled else (x, dy)
    return _chunked(grad, _chunks(method, x.shape, ci, co, k, pad), *xs, summed=True,
                    unroll=method == "xla")


def _input_grad(dy, kernel, padding):
    """dx of `VALID(pad(x, padding), kernel)`: the correlation of dy, padded by k-1-padding, with
    the spatially flipped, in/out-swapped kernel."""
    k = kernel.shape[0]
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    return _correlate(dy, flipped, k - 1 - padding, "dx")


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv(x: Array, kernel: Array, bias: Array, padding: int) -> Array:
    return _correlate(x, kernel, padding, "fwd", bias)


def _conv_fwd(x, kernel, bias, padding):
    return _conv(x, kernel, bias, padding), (x, kernel)


def _conv_bwd(padding, res, dy):
    x, kernel = res
    dx = _input_grad(dy, kernel, padding)
    return dx, _weight_grad(x, dy, kernel.shape[0], padding), dy.sum(axis=(0, 1, 2))


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x: Array, kernel: Array, bias: Array, padding: int = 0,
           upsample: bool = False, pool: bool = False) -> Array:
    """Stride-1 2-D convolution with `padding` zeros on each side, then VALID, plus bias.

    The same function as `nets.conv2d(..., impl="xla")`, with a custom VJP (module docstring).

    Args:
      x: `[B, H, W, C_in]`.
      kernel: `[k, k, C_in, C_out]` (HWIO).
      bias: `[C_out]`.
      padding: zeros on each side of both spatial axes (0: VALID; k-1: "full"), 0 <= padding.
      upsample: convolve the 2x nearest-neighbour upsampling of x (`upsample_conv2d`).
      pool: 2x2 max-pool the output (`pooling.max_pool_2x2`); inside the convolution's batch
        loop or chunks, everywhere but by FFT and for odd outputs (`_conv_pool`).

    Returns:
      `[B, H' + 2 padding - k + 1, W' + 2 padding - k + 1, C_out]` with H', W' = H, W (or 2H, 2W
      with `upsample`), halved by `pool`; the dtype of x.
    """
    if pool:
        if not upsample and _pool_in_loop(x.shape, kernel.shape, int(padding)):
            return _conv_pool(x, kernel, bias, int(padding))
        return pooling.max_pool_2x2(conv2d(x, kernel, bias, padding, upsample))
    if upsample:
        return upsample_conv2d(x, kernel, bias, padding)
    if kernel.size < OVERRIDE.get("plain_below", PLAIN_BELOW):
        return _plain(x, kernel, bias, int(padding))
    if _choose_fft(x.shape, kernel.shape):
        return fft_conv.correlate(x, kernel, int(padding)) + bias[None, None, None, :]
    return _conv(x, kernel, bias, int(padding))


# ---------------------------------------------------------------------------------------------
# The convolution and a 2x2 max-pool in one batch loop


def _pool_in_loop(x_shape, kernel_shape, padding: int) -> bool:
    """Whether `conv2d(..., pool=True)` pools inside the convolution's batch loop (or its
    unrolled chunks): everywhere but by FFT (no batch loop) and for odd outputs."""
    k = kernel_shape[0]
    ho, wo = x_shape[1] + 2 * padding - k + 1, x_shape[2] + 2 * padding - k + 1
    return not (OVERRIDE.get("pool_after") or ho % 2 or wo % 2
                or _choose_fft(x_shape, kernel_shape))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_pool(x: Array, kernel: Array, bias: Array, padding: int) -> Array:
    return _conv_pool_fwd(x, kernel, bias, padding)[0]


def _conv_pool_fwd(x, kernel, bias, padding):
    """The convolution's output is never written whole (the paper CMMA's first layer: 177 MB at
    batch 64, and as much again to zero the loop's buffer): each chunk is pooled in the loop,
    which keeps the pooled map and the maxima's positions (int8)."""
    k, _, ci, co = kernel.shape
    method = _corr_method("fwd", ci, co, k)

    def pooled_chunk(a):  # the chunk's convolution and bias, then its maxima and their positions
        return pooling.max_and_position(_CORR[method](a, kernel, padding)
                                        + bias[None, None, None, :])

    pooled, position = _chunked(pooled_chunk, _chunks(method, x.shape, ci, co, k, padding), x,
                                unroll=method == "xla")
    return pooled, (x, kernel, position)


def _conv_pool_bwd(padding, res, d_pooled):
    x, kernel, position = res
    dw = _weight_grad(x, d_pooled, kernel.shape[0], padding, position)
    # The input gradient (dropped by XLA where x needs none, as for the images).
    dx = _input_grad(pooling.unpool(position, d_pooled), kernel, padding)
    return dx, dw, d_pooled.sum(axis=(0, 1, 2))


_conv_pool.defvjp(_conv_pool_fwd, _conv_pool_bwd)


def _plain(x, kernel, bias, padding):
    def conv(a):
        return lax.conv_general_dilated(_pad(a, padding), kernel, (1, 1), "VALID",
                                        dimension_numbers=_DN)
    y = _chunked(conv, _xla_chunks(x.shape[0]), x, unroll=True)
    return y + bias[None, None, None, :]


# ---------------------------------------------------------------------------------------------
# Upsampling fused into the convolution (sub-pixel / polyphase form)


def _phase_taps(k: int, padding: int):
    """How the k taps of a kernel fall on the input of a 2x nearest-neighbour upsampling.

    Output position o = 2a + r (r = 0, 1) of `VALID(pad(upsample(h), padding), w)` reads
    upsample(h)[o + i - padding] = h[a + d] with d = floor((r + i - padding) / 2): per phase r,
    the k taps collapse onto T = d_max - d_min + 1 input positions.

    Returns:
      (M, d_min, d_max): M `[2, T, k]` numpy 0/1, M[r, d - d_min, i] = 1 where tap i of phase r
      reads offset d.
    """
    d = [[(r + i - padding) // 2 for i in range(k)] for r in (0, 1)]
    d_min, d_max = min(map(min, d)), max(map(max, d))
    m = np.zeros((2, d_max - d_min + 1, k), np.float32)
    for r in (0, 1):
        for i in range(k):
            m[r, d[r][i] - d_min, i] = 1.0
    return m, d_min, d_max


def upsample_conv2d(x: Array, kernel: Array, bias: Array, padding: int = 0) -> Array:
    """`conv2d(upsample_nearest_2x(x), kernel, bias, padding)` without the upsampled map.

    Each output pixel of a convolution of a 2x nearest-neighbour upsampling reads the input
    through one of four "phase" kernels (which output row and column parity it has), each the sum
    of the taps of `kernel` that land on the same input pixel: 3x3 for the decoder's 5x5 kernels.
    The four phases run as ONE convolution of the small input with their kernels stacked along the
    output channels (`[T, T, C_in, 4 C_out]`), and the output is interleaved back (depth to
    space). The same function of x and `kernel` (the phase kernels are a fixed linear map of
    `kernel`, so gradients flow to it unchanged): 25/9 ≈ 2.8x fewer FLOPs for the 5x5 layers and
    no 4x-larger upsampled tensor in memory, forward or backward. Rounding differs from the plain
    form only by the order of the sums of taps.

    Args:
      x: `[B, H, W, C_in]` (before upsampling).
      kernel, bias, padding: as `conv2d`, applied to the upsampled `[B, 2H, 2W, C_in]`.

    Returns:
      `[B, 2H + 2 padding - k + 1, 2W + 2 padding - k + 1, C_out]`.
    """
    b, h, w, ci = x.shape
    k, co = kernel.shape[0], kernel.shape[-1]
    out_h, out_w = 2 * h + 2 * padding - k + 1, 2 * w + 2 * padding - k + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upsample_conv2d: kernel {k} with padding {padding} does not fit the "
                         f"upsampled input {(2 * h, 2 * w)}.")
    m, d_min, d_max = _phase_taps(k, padding)
    t = m.shape[1]
    m = jnp.asarray(m)
    phases = jnp.einsum("rti,suj,ijco->tucrso", m, m, kernel.astype(jnp.float32),
                        precision=lax.Precision.HIGHEST)
    phases = phases.reshape(t, t, ci, 4 * co).astype(kernel.dtype)
    # Phase positions a in [0, A), A = ceil(out / 2), read h[a + d], d in [d_min, d_max].
    a_h, a_w = (out_h + 1) // 2, (out_w + 1) // 2
    lo = -d_min
    hi_h, hi_w = a_h - 1 + d_max - (h - 1), a_w - 1 + d_max - (w - 1)
    if lo == hi_h == hi_w and lo >= 0:
        y = conv2d(x, phases, jnp.tile(bias, 4), lo)
    else:  # asymmetric (odd output sizes): pad (or crop) explicitly, then VALID
        xp = lax.pad(x, jnp.zeros((), x.dtype),
                     ((0, 0, 0), (lo, hi_h, 0), (lo, hi_w, 0), (0, 0, 0)))
        y = conv2d(xp, phases, jnp.tile(bias, 4), 0)
    y = y.reshape(b, a_h, a_w, 2, 2, co).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * a_h, 2 * a_w, co)[:, :out_h, :out_w, :]
