"""Training throughput of the real jitted train step: steps/s, images/s, FLOPs and utilisation.

For each model, preset, batch size and convolution implementation (`model.conv_impl`), on the
devices present: the step the trainer runs (`cmma_jax.train.make_step`: `jax.jit` of
`functools.partial(model.train_step, config=config)`, state donated, batch sharded over a mesh of
all devices) is compiled first (compile time reported separately), then timed over repeats with
`block_until_ready()`; the median is reported. A trace counter (`chex.assert_max_traces`, once per
step of a call) fails the run if the step is ever traced again (a recompile). `--steps_per_call`
times several steps in one compiled call (`training.steps_per_call`) as another implementation.

FLOPs (`count_flops`, 2 per multiply-add, read off the program's jaxpr, not off XLA):
  executed_flops: the matmuls (`dot_general`; 8 per complex multiply-add), convolutions
    (`conv_general_dilated`) and FFTs (`fft`, 5 N log2 N per complex transform of N points, half
    for a real one: the conventional count, an upper bound of what an FFT library runs) of the
    step of the chosen implementation, forward, backward and optimizer, as traced: for
    "fast_cpu" that is what `cmma_jax.fast_conv` runs (its im2col/col2im/patch matmuls and
    convolutions, the custom VJPs' backward passes, and the fused polyphase upsampling: the
    decoder's "upsample 2x, then 5x5 conv" becomes a 3x3 conv of the small map with 4x the output
    channels, 25/9 = 2.8x fewer FLOPs than the plain layer; the wide 5x5 layers by FFT,
    `cmma_jax.fft_conv`, 6x fewer for the paper encoder's second layer). A loop body
    (`lax.fori_loop` over chunks of the batch, which traces as `scan`) is counted `length` times; a `cond`, its most
    expensive branch; a `while` of unknown trip count, once, and the record is flagged. What no
    output depends on is left out, as XLA drops it (the first layer's input gradient, which a
    custom VJP computes and nothing uses).
    Elementwise work (activations, the loss, Adam) is not counted: it is not what a peak
    matmul rate measures and is a small fraction of these steps.
  direct_flops: the same count with every convolution by `fast_conv`'s direct formulations (no
    FFT): what the PyTorch reference with the polyphase decoder executes (torch_reference.py).
  model_flops: the same count for the same step with the plain "xla" convolutions (the paper's
    layers as written: upsampled maps, padded "full" convolutions, XLA's own gradients): the
    FLOPs of the model's mathematics, the same for every implementation of a configuration.
  cost_analysis_model_flops: XLA's `cost_analysis()` of that plain program before optimisation
    (elementwise work included), for reference. (XLA counts a loop body once, so its figure for
    the "fast_cpu" executable under-reports; it is not used.)

Peak (`peaks`, one per dtype): `measured` is the best (not the median) of `--peak_repeats` timings
of a large square matmul on the same device in the same run; `theoretical` is the processor's
(`theoretical_peak`): on a CPU, usable CPUs x FLOPs per cycle per core x clock, with the vector
width from /proc/cpuinfo's flags (AVX-512: 16 float32 lanes, AVX2: 8) x 2 for the fused
multiply-add x 2 FMA units (the most an x86 core has, so an upper bound) and the clock from
cpufreq's maximum, else the largest of /proc/cpuinfo's "cpu MHz" and the model name's "@ x GHz";
on a GPU, the datasheet's dense rate for the device kind (H100/H200 SXM: bf16 989, fp32 as TF32
495 TFLOP/s). The peak a utilisation is divided by is the larger of the two (a base clock read on
a VM can be below the turbo clock a matmul runs at); each is stated in the output.

Utilisation (`utilisation`): executed (or model) FLOP/s over the peak of the step's dtype; a
figure above 1 is never written: executed FLOP/s above a peak that includes the theoretical one
is a bug (a wrong FLOP count or a wrong peak) and raises `UtilisationError`; any other figure
above 1 (against a measured-only peak, or model FLOPs where the implementation executes fewer)
is recorded as null with a flag saying why.

Usage:
  python benchmarks/train_throughput.py                                  # CMMA, paper, batch 64
  python benchmarks/train_throughput.py --models=cmma,cvae,cgan,vlae --presets=paper \\
      --batch_sizes=64 --conv_impls=xla,fast_cpu --out=benchmarks/results/train_all.json

Writes a JSON file (one record per configuration, plus the environment and the peak) and prints a
Markdown table (also written next to the JSON, `.md`). The batch is random data of the real
shapes ([B, 64, 64, 3] images in [0, 1], [B, A] binary attributes); the input pipeline is measured
separately (benchmarks/input_pipeline.py).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

from absl import app, flags

import chex
import jax
import jax.extend.core  # noqa: F401  (jax.extend.core.Jaxpr, ClosedJaxpr)
import jax.numpy as jnp
import numpy as np

from cmma_jax import fast_conv, nets, parallel, presets, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quiet  # noqa: E402  (benchmarks/quiet.py)
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.models import MODELS

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["cmma"], "Models (cmma, cvae, cgan, vlae).")
flags.DEFINE_list("presets", ["paper"], "Architecture presets (paper, small, tiny): the paper's networks, and the CPU networks users train.")
flags.DEFINE_list("batch_sizes", ["64"], "Global batch sizes.")
flags.DEFINE_list("conv_impls", ["xla", "fast_cpu"], "Convolution implementations "
                  "(model.conv_impl: xla, fast_cpu, auto).")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes (model.dtype: float32, bfloat16); the "
                  "parameters stay float32.")
flags.DEFINE_list("steps_per_call", [""], "Training steps per compiled call "
                  "(training.steps_per_call; empty: the preset's, as the trainer runs): each "
                  "value is timed as its own implementation.")
flags.DEFINE_list("decoder_variances", [""], "Decoder variances (model.decoder_variance: pixel, "
                  "channel, shared, fixed; empty = the preset's: paper pixel, small fixed).")
flags.DEFINE_integer("repeats", 5, "Timed repeats (the median is reported).")
flags.DEFINE_integer("steps_per_repeat", 0, "Steps per timed repeat; 0 = enough for ~1 s.")
flags.DEFINE_integer("num_attributes", 73, "Attributes per example (73: LFW, the paper's data).")
flags.DEFINE_string("out", "benchmarks/results/train_throughput.json", "JSON output path.")
flags.DEFINE_integer("peak_repeats", 5, "Timings of the peak matmul (the best is taken).")
flags.DEFINE_integer("peak_size", 0, "Size of the peak matmul; 0 = 3072 (float32) or 1536 "
                     "(bfloat16) on a CPU, 8192 on an accelerator.")


# ---------------------------------------------------------------------------------------------
# Environment and peak


def environment() -> dict[str, Any]:
    """The device, software versions and settings of this run."""
    import flax
    import optax
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in devices],
        "num_devices": len(devices),
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": importlib.import_module("jaxlib").__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_peak(dtype=jnp.float32, size: int | None = None,
                 repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of a large square matmul in `dtype` on the default device: the best and the
    median of `repeats` timings (after a warm-up call)."""
    cpu = jax.default_backend() == "cpu"
    if size is None:
        size = (3072 if dtype == jnp.float32 else 1536) if cpu else 8192
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    flops = 2.0 * size ** 3
    return {"best": flops / min(times), "median": flops / statistics.median(times),
            "size": size, "repeats": len(times)}


def _cpu_flags_and_clock() -> tuple[set[str], float | None, str]:
    """/proc/cpuinfo's flags, and the highest clock that can be read (Hz) with its source."""
    flags, mhz, name_ghz = set(), [], None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz":
                    mhz.append(float(value))
                elif key == "model name" and name_ghz is None and "GHz" in value:
                    try:
                        name_ghz = float(value.rsplit("@", 1)[1].replace("GHz", "").strip())
                    except (IndexError, ValueError):
                        pass
    except OSError:
        pass
    max_khz = []
    for cpu in range(os.cpu_count() or 1):
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq") as f:
                max_khz.append(float(f.read()))
        except (OSError, ValueError):
            pass
    if max_khz:
        return flags, max(max_khz) * 1e3, "cpufreq cpuinfo_max_freq"
    candidates = []
    if mhz:
        candidates.append((max(mhz) * 1e6, "/proc/cpuinfo cpu MHz"))
    if name_ghz:
        candidates.append((name_ghz * 1e9, "the model name's @ GHz"))
    if not candidates:
        return flags, None, "no clock readable"
    hz, source = max(candidates)
    return flags, hz, source + " (no cpufreq: turbo unknown)"


# Datasheet dense (no sparsity) rates, FLOP/s, by a substring of jax's device_kind; the first
# match wins. float32: the TF32 tensor-core rate (XLA may use TF32 for float32 matmuls by
# default on these chips; plain float32 is far lower), so that the figure is a ceiling.
GPU_PEAKS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H200", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("H100", {"bfloat16": 989.4e12, "float32": 494.7e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
)


def theoretical_peak(dtype: str) -> dict[str, Any] | None:
    """The processor's theoretical peak FLOP/s for `dtype` ("float32", "bfloat16") and how it was
    obtained (module docstring), or None where it cannot be read (e.g. a TPU, an unknown GPU)."""
    backend = jax.default_backend()
    if backend == "gpu":
        kind = jax.devices()[0].device_kind
        for key, rates in GPU_PEAKS:
            if key in kind and dtype in rates:
                n = jax.device_count()
                return {"flops_per_second": rates[dtype],
                        "source": f"datasheet dense {dtype} rate of one {key} ({kind}); "
                                  f"{n} device(s), the step's mesh spans them all"
                                  + ("" if n == 1 else f": x{n}"),
                        "per_device": rates[dtype], "devices": n,
                        "total": rates[dtype] * n}
        return None
    if backend != "cpu":
        return None
    flags, hz, clock_source = _cpu_flags_and_clock()
    if hz is None or not flags:
        return None
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, "AVX2" if "avx2" in flags else "AVX"
    else:
        lanes, isa = 4, "SSE"
    per_cycle = lanes * 2 * 2  # FMA (2 FLOPs) x 2 FMA units
    how = f"{lanes} float32 lanes ({isa}) x 2 (FMA) x 2 FMA units"
    if dtype == "bfloat16":
        if "amx_bf16" in flags:
            per_cycle, how = 1024, "AMX bf16: 1024 FLOPs/cycle/core"
        elif "avx512_bf16" in flags:
            per_cycle, how = 2 * per_cycle, how + " x 2 (AVX512_BF16)"
        else:
            how += " (no bf16 instructions: computed as float32)"
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    total = cpus * per_cycle * hz
    return {"flops_per_second": total, "per_device": total, "devices": 1,
            "total": total,
            "source": f"{cpus} CPUs x {how} x {hz / 1e9:.2f} GHz ({clock_source})"}


def peaks(dtypes=("float32",), repeats: int = 5, size: int | None = None) -> dict[str, Any]:
    """For each dtype: the measured matmul peak, the theoretical peak, and the one utilisations
    are divided by (`used`: the larger, see the module docstring)."""
    out = {}
    for dtype in dtypes:
        measured = measure_peak(jnp.dtype(dtype).type, size, repeats)
        # The measured peak is the whole mesh's: a plain matmul runs on one device.
        theory = theoretical_peak(dtype)
        n = jax.device_count() if jax.default_backend() != "cpu" else 1
        measured_total = measured["best"] * n
        entry = {"measured": measured_total, "measured_detail": measured,
                 "theoretical": theory["total"] if theory else None,
                 "theoretical_source": theory["source"] if theory else "not readable"}
        if theory and theory["total"] >= measured_total:
            entry["used"], entry["used_source"] = theory["total"], "theoretical"
        elif theory:
            entry["used"], entry["used_source"] = measured_total, (
                "measured (above the theoretical figure: its clock or width was read low)")
        else:
            entry["used"], entry["used_source"] = measured_total, "measured (no theoretical peak)"
        entry["includes_theoretical"] = theory is not None
        out[dtype] = entry
    return out


class UtilisationError(ValueError):
    """Executed FLOP/s above the processor's peak: the FLOP count or the peak is wrong."""


def utilisation(flops_per_second: float, peak: float, *, what: str = "",
                strict: bool = True) -> tuple[float | None, str | None]:
    """`flops_per_second / peak` in (0, 1], and a flag (None when the figure is sound).

    A figure above 1 is never returned: with `strict` (executed FLOPs against a peak that
    includes the theoretical one) it is a bug and raises `UtilisationError`; otherwise the figure
    is None and the flag says why. Non-positive or non-finite inputs raise ValueError.
    """
    if not (np.isfinite(flops_per_second) and flops_per_second > 0):
        raise ValueError(f"{what}: FLOP/s must be positive and finite, got {flops_per_second}.")
    if not (np.isfinite(peak) and peak > 0):
        raise ValueError(f"{what}: the peak must be positive and finite, got {peak}.")
    value = flops_per_second / peak
    if value <= 1.0:
        return value, None
    message = (f"{what}: {flops_per_second:.4g} FLOP/s is {value:.2f}x the peak {peak:.4g} "
               "FLOP/s")
    if strict:
        raise UtilisationError(message + ": the FLOP count or the peak is wrong.")
    return None, message


# ---------------------------------------------------------------------------------------------
# FLOPs of a program


def _dot_general_flops(eqn) -> float:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    (_, rc), (_, rb) = eqn.params["dimension_numbers"]
    rhs_free = [d for i, d in enumerate(rhs.shape) if i not in set(rc) | set(rb)]
    # A complex multiply-add is 4 real multiplies and 4 real additions.
    per_multiply_add = 8.0 if jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.complexfloating) \
        else 2.0
    return per_multiply_add * float(np.prod(lhs.shape)) * float(np.prod(rhs_free))


def _fft_flops(eqn) -> float:
    """The conventional count of a radix-2 FFT: 5 N log2 N real FLOPs per complex transform of
    N points, half that for a real one (rfft, irfft), for each of the batch's transforms."""
    lengths = tuple(eqn.params["fft_lengths"])
    n = float(np.prod(lengths))
    batch = float(np.prod(eqn.invars[0].aval.shape[:-len(lengths)]))
    real = eqn.params["fft_type"] in (jax.lax.FftType.RFFT, jax.lax.FftType.IRFFT)
    return batch * (2.5 if real else 5.0) * n * float(np.log2(n))


def _conv_flops(eqn) -> float:
    rhs = eqn.invars[1].aval
    out = eqn.outvars[0].aval
    rhs_out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    # Each output element sums over the kernel's window and input features (per group).
    return 2.0 * float(np.prod(out.shape)) * float(np.prod(rhs.shape)) / rhs.shape[rhs_out_dim]


def _jaxprs_in(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _jaxprs_in(v)


def _count(jaxpr, notes: set[str]) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_general_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "fft":
            total += _fft_flops(eqn)
        elif name == "scan":
            total += eqn.params["length"] * _count(eqn.params["jaxpr"].jaxpr, notes)
        elif name == "cond":
            total += max(_count(b.jaxpr, notes) for b in eqn.params["branches"])
        elif name == "while":
            body = _count(eqn.params["body_jaxpr"].jaxpr, notes)
            if body:
                notes.add("a while loop of unknown trip count was counted once")
            total += body + _count(eqn.params["cond_jaxpr"].jaxpr, notes)
        else:
            for value in eqn.params.values():
                for sub in _jaxprs_in(value):
                    total += _count(sub, notes)
    return total


def _live(jaxpr, notes: set[str]):
    """The jaxpr without the equations no output depends on (what XLA drops as dead code: a
    custom VJP's input gradient where the input needs none, as for the images' layer)."""
    try:
        from jax._src.interpreters import partial_eval as pe  # no public dead-code pass
        return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))[0]
    except (ImportError, AttributeError, TypeError):
        notes.add("dead code was counted (jax's dce_jaxpr unavailable)")
        return jaxpr


def count_flops(fn, *args) -> tuple[float, list[str]]:
    """FLOPs of the matmuls and convolutions `fn(*args)` runs (module docstring), dead code
    left out, and notes on anything that made the count approximate."""
    notes: set[str] = set()
    jaxpr = jax.make_jaxpr(fn)(*args)
    return _count(_live(jaxpr.jaxpr, notes), notes), sorted(notes)


# ---------------------------------------------------------------------------------------------
# The step


def get_config(model: str, preset: str, batch_size: int, conv_impl: str,
               dtype: str = "float32", decoder_variance: str | None = None):
    """The model's config with a preset, batch size, convolution implementation and dtype (and
    decoder variance: None = the preset's)."""
    config = importlib.import_module(f"cmma_jax.configs.{model}").get_config(preset)
    if decoder_variance:
        config.model.decoder_variance = decoder_variance
    config.model.conv_impl = conv_impl
    config.model.dtype = dtype
    config.training.batch_size = batch_size
    return config


def make_batch(batch_size: int, num_attributes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of the real shapes and ranges (host numpy arrays)."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(size=(batch_size, *IMAGE_SHAPE)).astype(np.float32),
        "attributes": (rng.uniform(size=(batch_size, num_attributes)) > 0.5).astype(np.float32),
    }


class Step:
    """The trainer's jitted step for one configuration, compiled, with its state and batch.

    Attributes:
      compile_seconds: lowering + compilation time.
      executed_flops: matmul and convolution FLOPs of this step as this implementation runs it
        (module docstring); `flop_notes`: what made the count approximate, if anything.
      direct_flops: the same count with `fast_conv`'s direct formulations only (no FFT).
      model_flops: the same count with the plain "xla" convolutions (the model's mathematics).
      cost_analysis_model_flops: XLA's `cost_analysis()` of the plain program, for reference.
    """

    def __init__(self, model: str, preset: str, batch_size: int, conv_impl: str,
                 num_attributes: int = 73, seed: int = 0, dtype: str = "float32",
                 decoder_variance: str | None = None, steps_per_call: int | None = None):
        self.model, self.preset, self.batch_size = model, preset, batch_size
        self.conv_impl = conv_impl
        # None: the preset's, as the trainer runs it.
        self.steps_per_call = int(steps_per_call or
                                  presets.training_defaults(preset)["steps_per_call"])
        self.resolved_impl = nets.resolve_conv_impl(conv_impl)
        self.config = get_config(model, preset, batch_size, conv_impl, dtype, decoder_variance)
        self.config.training.steps_per_call = self.steps_per_call
        lib = MODELS[model]
        host_batch = make_batch(batch_size, num_attributes, seed)
        state = lib.init_state(jax.random.key(seed), self.config, host_batch)
        mesh = parallel.make_mesh()
        chex.clear_trace_counter()
        # The trainer's own step construction, with a trace counter around the model's step
        # (traced once in each of the steps of a call).
        fns = train.make_step(chex.assert_max_traces(lib.train_step, n=self.steps_per_call),
                               self.config, mesh)
        self._step, self._fns = fns.step, fns
        self.state = fns.place_state(state)
        self.batch = fns.place_batch(host_batch)
        self._keys = [jax.random.fold_in(jax.random.key(seed + 1), i) for i in range(64)]
        self._calls = 0
        start = time.perf_counter()
        if self.steps_per_call == 1:
            self._step.lower(self.state, self.batch, self._keys[0]).compile()
        else:
            fns.steps.lower(self.state, [self.batch] * self.steps_per_call,
                            self._keys[:self.steps_per_call]).compile()
        self.compile_seconds = time.perf_counter() - start
        self.executed_flops, self.flop_notes = count_flops(
            functools.partial(lib.train_step, config=self.config), state, host_batch,
            self._keys[0])
        self.direct_flops = self.executed_flops
        if self.resolved_impl == "fast_cpu":
            saved = dict(fast_conv.OVERRIDE)
            fast_conv.OVERRIDE["fft"] = False  # read while tracing
            try:
                self.direct_flops = count_flops(
                    functools.partial(lib.train_step, config=self.config), state, host_batch,
                    self._keys[0])[0]
            finally:
                fast_conv.OVERRIDE.clear()
                fast_conv.OVERRIDE.update(saved)
        plain = get_config(model, preset, batch_size, "xla", dtype, decoder_variance)
        plain_step = functools.partial(lib.train_step, config=plain)
        self.model_flops = self.executed_flops if self.resolved_impl == "xla" else \
            count_flops(plain_step, state, host_batch, self._keys[0])[0]
        self.cost_analysis_model_flops = _flops(
            jax.jit(plain_step).lower(state, host_batch, self._keys[0]).cost_analysis())
        self.run(1)  # the first call (a cache hit of the compilation above) and warm-up

    def run(self, steps: int) -> dict[str, jax.Array]:
        """Runs `steps` steps (rounded up to whole calls of `steps_per_call`) and waits for them;
        returns the last metrics."""
        metrics = None
        k = self.steps_per_call
        for _ in range(-(-steps // k)):
            keys = [self._keys[(self._calls + i) % len(self._keys)] for i in range(k)]
            self.state, (*_, metrics) = self._fns.run(self.state, [self.batch] * k, keys)
            self._calls += k
        jax.block_until_ready((self.state, metrics))
        return metrics

    def time(self, steps: int) -> float:
        """Seconds for `steps` steps, waited for (whole calls are timed and prorated)."""
        start = time.perf_counter()
        metrics = self.run(steps)
        ran = -(-steps // self.steps_per_call) * self.steps_per_call
        seconds = (time.perf_counter() - start) * steps / ran
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"Non-finite loss {loss} in {self.describe()}.")
        return seconds

    def describe(self) -> str:
        return (f"{self.model}/{self.preset} batch {self.batch_size} conv_impl={self.conv_impl}"
                f"({self.resolved_impl})" + (f", {self.steps_per_call} steps a call"
                                             if self.steps_per_call > 1 else ""))


def _flops(cost) -> float:
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def steps_for(seconds_per_step: float, target: float = 1.0) -> int:
    """Steps per timed repeat so that a repeat takes about `target` seconds."""
    return max(1, int(round(target / max(seconds_per_step, 1e-6))))


def record(step: Step, seconds_per_step: list[float], peak: dict[str, Any],
           conditions: dict[str, Any] | None = None) -> dict[str, Any]:
    """One result record; utilisations against the peak of the step's dtype (`utilisation`);
    `conditions`: `quiet.Monitor.summary()` of its timing (load, neighbours' CPU, busy)."""
    median = statistics.median(seconds_per_step)
    steps_per_second = 1.0 / median
    dtype = step.config.model.get("dtype", "float32")
    p = peak[dtype]
    executed = step.executed_flops * steps_per_second
    modelled = step.model_flops * steps_per_second
    what = step.describe()
    flags_ = list(step.flop_notes)
    executed_u, flag = utilisation(executed, p["used"], what=f"{what}, executed FLOPs",
                                   strict=p["includes_theoretical"])
    flags_ += [flag] if flag else []
    model_u, flag = utilisation(modelled, p["used"], what=f"{what}, model FLOPs", strict=False)
    if flag:
        flags_.append(flag + (" (the implementation executes "
                              f"{step.executed_flops / step.model_flops:.2f}x the model's FLOPs)"))
    executed_m, flag = utilisation(executed, p["measured"], what=f"{what}, executed FLOPs "
                                   "against the measured matmul", strict=False)
    flags_ += [flag] if flag else []
    model_m, flag = utilisation(modelled, p["measured"], what=f"{what}, model FLOPs against "
                                "the measured matmul", strict=False)
    flags_ += [flag] if flag else []
    return {
        "model": step.model, "preset": step.preset, "batch_size": step.batch_size,
        "conv_impl": step.conv_impl, "resolved_conv_impl": step.resolved_impl,
        "steps_per_call": step.steps_per_call, "dtype": dtype,
        "decoder_variance": presets.resolve_likelihood(step.config.model)["decoder_variance"],
        "compile_seconds": round(step.compile_seconds, 2),
        "seconds_per_step_median": median,
        "seconds_per_step": seconds_per_step,
        "steps_per_second": steps_per_second,
        "images_per_second": steps_per_second * step.batch_size,
        "model_flops_per_step": step.model_flops,
        "executed_flops_per_step": step.executed_flops,
        "cost_analysis_model_flops_per_step": step.cost_analysis_model_flops,
        "model_flops_per_second": modelled,
        "executed_flops_per_second": executed,
        "peak_flops_per_second": p["used"],
        "peak_source": p["used_source"],
        "executed_utilisation": executed_u,
        "model_flops_utilisation": model_u,
        "executed_utilisation_vs_measured_matmul": executed_m,
        "model_flops_utilisation_vs_measured_matmul": model_m,
        "flags": flags_,
        **(conditions or {}),
    }


def _pct(value) -> str:
    return "n/a (flagged)" if value is None else f"{100 * value:.1f}%"


def describe_peaks(peak: dict[str, Any]) -> str:
    """One line per dtype: the peaks and which one the utilisations are divided by."""
    lines = []
    for dtype, p in peak.items():
        theory = (f"theoretical {p['theoretical'] / 1e9:,.0f} GFLOP/s ({p['theoretical_source']})"
                  if p["theoretical"] else "theoretical: not readable")
        m = p["measured_detail"]
        lines.append(f"- {dtype}: {theory}; measured matmul {p['measured'] / 1e9:,.0f} GFLOP/s "
                     f"(best of {m['repeats']} {m['size']}x{m['size']} matmuls; median "
                     f"{m['median'] / 1e9:,.0f}); utilisation is against the {p['used_source']} "
                     f"peak, {p['used'] / 1e9:,.0f} GFLOP/s.")
    return "\n".join(lines)


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The records as a Markdown table."""
    lines = [
        "| model | preset | decoder variance | batch | dtype | conv_impl | steps a call "
        "| compile s | s/step (median) | steps/s "
        "| images/s | model GFLOP/step | executed GFLOP/step | executed GFLOP/s "
        "| utilisation (executed / peak) | MFU (model / peak) | MFU vs measured matmul "
        "| neighbours' CPU |",
        "| --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: "
        "| ---: | ---: | ---: |",
    ]
    for r in records:
        impl = r["conv_impl"] if r["conv_impl"] == r["resolved_conv_impl"] else \
            f"{r['conv_impl']} ({r['resolved_conv_impl']})"
        lines.append(
            f"| {r['model']} | {r['preset']} | {r.get('decoder_variance', '?')} "
            f"| {r['batch_size']} | {r['dtype']} | {impl} | {r.get('steps_per_call', 1)} "
            f"| {r['compile_seconds']:.1f} | {r['seconds_per_step_median']:.4f} "
            f"| {r['steps_per_second']:.3f} | {r['images_per_second']:.1f} "
            f"| {r['model_flops_per_step'] / 1e9:.2f} "
            f"| {r['executed_flops_per_step'] / 1e9:.2f} "
            f"| {r['executed_flops_per_second'] / 1e9:.1f} "
            f"| {_pct(r['executed_utilisation'])} | {_pct(r['model_flops_utilisation'])} "
            f"| {_pct(r['model_flops_utilisation_vs_measured_matmul'])} "
            f"| {_share(r)} |")
    return "\n".join(lines) + "\n\n" + quiet.describe(records)


def _share(r: dict[str, Any]) -> str:
    share = r.get("neighbours_cpu_share")
    text = "?" if share is None else f"{100 * share:.0f}%"
    return text + (" (busy)" if r.get("busy") else "")


def write(path: str, payload: dict[str, Any], table: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(table + "\n")


def main(argv):
    del argv
    env = environment()
    peak = peaks(tuple(FLAGS.dtypes), FLAGS.peak_repeats, FLAGS.peak_size or None)
    print(json.dumps({"environment": env, "peak_flops_per_second": peak}), flush=True)
    records = []
    for model in FLAGS.models:
        for preset in FLAGS.presets:
            for batch_size in (int(b) for b in FLAGS.batch_sizes):
                # All implementations of one configuration are built first, then timed in
                # alternation, so that a change in the machine's load hits them alike.
                steps = [Step(model, preset, batch_size, impl, FLAGS.num_attributes,
                              dtype=dtype, decoder_variance=variance or None,
                              steps_per_call=int(per_call) if per_call else None)
                         for variance in FLAGS.decoder_variances
                         for dtype in FLAGS.dtypes for impl in FLAGS.conv_impls
                         for per_call in FLAGS.steps_per_call]
                n = FLAGS.steps_per_repeat or steps_for(min(s.time(1) for s in steps))
                times = {id(s): [] for s in steps}
                with quiet.Monitor() as monitor:
                    for _ in range(FLAGS.repeats):
                        for s in steps:
                            times[id(s)].append(s.time(n) / n)
                for s in steps:
                    records.append(record(s, times[id(s)], peak, monitor.summary()))
                    print(json.dumps(records[-1]), flush=True)
                del steps
                # Written after each configuration: a run stopped early keeps what it measured.
                write(FLAGS.out, {"command": "python " + " ".join(sys.argv), "environment": env,
                                  "peak_flops_per_second": peak, "results": records,
                                  "complete": False}, markdown_table(records))
    cmd = "python " + " ".join(sys.argv)
    table = (f"{cmd}\n\n{env['processor']}, {env['cpu_count']} CPUs, {env['devices']}, "
             f"jax {env['jax']}, {env['time']}. Peaks:\n{describe_peaks(peak)}\n\n"
             + markdown_table(records))
    flagged = [f for r in records for f in r["flags"]]
    if flagged:
        table += "\n\nFlags:\n" + "\n".join(f"- {f}" for f in flagged)
    write(FLAGS.out, {"command": cmd, "environment": env, "peak_flops_per_second": peak,
                      "results": records, "complete": True}, table)
    print("\n" + table)


if __name__ == "__main__":
    app.run(main)
