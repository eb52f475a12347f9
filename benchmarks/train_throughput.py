"""Training throughput of the real jitted train step: steps/s, images/s, FLOPs and utilisation.

For each model, preset, batch size and convolution implementation (`model.conv_impl`), on the
devices present: the step the trainer runs (`cmma_jax.train.make_step`: `jax.jit` of
`functools.partial(model.train_step, config=config)`, state donated, batch sharded over a mesh of
all devices) is compiled first (compile time reported separately), then timed over repeats with
`block_until_ready()`; the median is reported. A trace counter (`chex.assert_max_traces(n=1)`)
fails the run if the step is ever traced twice (a recompile).

FLOPs:
  model_flops: `cost_analysis()` of the same step lowered (before XLA's optimisations) with the
    plain "xla" convolutions: the FLOPs of the model's mathematics, the same figure for every
    implementation. (XLA's cost analysis counts the body of a loop once, so the "fast_cpu"
    executable, whose convolutions loop over chunks of the batch, under-reports its own FLOPs;
    its figure is kept as `executable_flops`.)
  achieved FLOP/s = model_flops x steps/s; utilisation = achieved / peak, where the peak is
    measured in the same run: a large float32 matmul on the same device (and, on a GPU, bfloat16).

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
import jax.numpy as jnp
import numpy as np

from cmma_jax import nets, parallel, train
from cmma_jax.images import IMAGE_SHAPE
from cmma_jax.models import MODELS

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["cmma"], "Models (cmma, cvae, cgan, vlae).")
flags.DEFINE_list("presets", ["paper"], "Architecture presets (paper, small, tiny).")
flags.DEFINE_list("batch_sizes", ["64"], "Global batch sizes.")
flags.DEFINE_list("conv_impls", ["xla", "fast_cpu"], "Convolution implementations "
                  "(model.conv_impl: xla, fast_cpu, auto).")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes (model.dtype: float32, bfloat16); the "
                  "parameters stay float32.")
flags.DEFINE_integer("repeats", 5, "Timed repeats (the median is reported).")
flags.DEFINE_integer("steps_per_repeat", 0, "Steps per timed repeat; 0 = enough for ~1 s.")
flags.DEFINE_integer("num_attributes", 73, "Attributes per example (73: LFW, the paper's data).")
flags.DEFINE_string("out", "benchmarks/results/train_throughput.json", "JSON output path.")


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


def measure_peak(dtype=jnp.float32, size: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul in `dtype` on the default device (median of `repeats`)."""
    if size is None:
        size = 3072 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2.0 * size ** 3 / statistics.median(times)


def peaks() -> dict[str, float]:
    """The measured peaks: float32, and bfloat16 on a GPU."""
    out = {"float32": measure_peak(jnp.float32)}
    if jax.default_backend() == "gpu":
        out["bfloat16"] = measure_peak(jnp.bfloat16)
    return out


# ---------------------------------------------------------------------------------------------
# The step


def get_config(model: str, preset: str, batch_size: int, conv_impl: str,
               dtype: str = "float32"):
    """The model's config with a preset, batch size, convolution implementation and dtype."""
    config = importlib.import_module(f"cmma_jax.configs.{model}").get_config(preset)
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
      model_flops: FLOPs of one step of the model's mathematics (see the module docstring).
      executable_flops: `cost_analysis()` of this step's executable.
    """

    def __init__(self, model: str, preset: str, batch_size: int, conv_impl: str,
                 num_attributes: int = 73, seed: int = 0, dtype: str = "float32"):
        self.model, self.preset, self.batch_size = model, preset, batch_size
        self.conv_impl = conv_impl
        self.resolved_impl = nets.resolve_conv_impl(conv_impl)
        self.config = get_config(model, preset, batch_size, conv_impl, dtype)
        lib = MODELS[model]
        host_batch = make_batch(batch_size, num_attributes, seed)
        state = lib.init_state(jax.random.key(seed), self.config, host_batch)
        mesh = parallel.make_mesh()
        chex.clear_trace_counter()
        # The trainer's own step construction, with a trace counter around the model's step.
        fns = train.make_step(chex.assert_max_traces(lib.train_step, n=1), self.config, mesh)
        self._step = fns.step
        self.state = fns.place_state(state)
        self.batch = fns.place_batch(host_batch)
        self._keys = [jax.random.fold_in(jax.random.key(seed + 1), i) for i in range(64)]
        self._calls = 0
        start = time.perf_counter()
        compiled = self._step.lower(self.state, self.batch, self._keys[0]).compile()
        self.compile_seconds = time.perf_counter() - start
        self.executable_flops = _flops(compiled.cost_analysis())
        self.model_flops = self._model_flops(lib, state, host_batch)
        self.run(1)  # the first call (a cache hit of the compilation above) and warm-up

    def _model_flops(self, lib, state, host_batch) -> float:
        # The lowered (unoptimised) program with the plain convolutions: the same figure for
        # every implementation of one configuration.
        config = get_config(self.model, self.preset, self.batch_size, "xla")
        lowered = jax.jit(functools.partial(lib.train_step, config=config)).lower(
            state, host_batch, self._keys[0])
        return _flops(lowered.cost_analysis())

    def run(self, steps: int) -> dict[str, jax.Array]:
        """Runs `steps` steps and waits for them; returns the last metrics."""
        metrics = None
        for _ in range(steps):
            key = self._keys[self._calls % len(self._keys)]
            self.state, metrics = self._step(self.state, self.batch, key)
            self._calls += 1
        jax.block_until_ready((self.state, metrics))
        return metrics

    def time(self, steps: int) -> float:
        """Seconds for `steps` steps, waited for."""
        start = time.perf_counter()
        metrics = self.run(steps)
        seconds = time.perf_counter() - start
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"Non-finite loss {loss} in {self.describe()}.")
        return seconds

    def describe(self) -> str:
        return (f"{self.model}/{self.preset} batch {self.batch_size} conv_impl={self.conv_impl}"
                f"({self.resolved_impl})")


def _flops(cost) -> float:
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def steps_for(seconds_per_step: float, target: float = 1.0) -> int:
    """Steps per timed repeat so that a repeat takes about `target` seconds."""
    return max(1, int(round(target / max(seconds_per_step, 1e-6))))


def record(step: Step, seconds_per_step: list[float], peak: dict[str, float]) -> dict[str, Any]:
    """One result record."""
    median = statistics.median(seconds_per_step)
    steps_per_second = 1.0 / median
    achieved = step.model_flops * steps_per_second
    out = {
        "model": step.model, "preset": step.preset, "batch_size": step.batch_size,
        "conv_impl": step.conv_impl, "resolved_conv_impl": step.resolved_impl,
        "dtype": step.config.model.get("dtype", "float32"),
        "compile_seconds": round(step.compile_seconds, 2),
        "seconds_per_step_median": median,
        "seconds_per_step": seconds_per_step,
        "steps_per_second": steps_per_second,
        "images_per_second": steps_per_second * step.batch_size,
        "model_flops_per_step": step.model_flops,
        "executable_flops_per_step": step.executable_flops,
        "achieved_flops_per_second": achieved,
    }
    for name, value in peak.items():
        out[f"utilisation_vs_{name}_peak"] = achieved / value
    return out


def markdown_table(records: list[dict[str, Any]]) -> str:
    """The records as a Markdown table."""
    lines = [
        "| model | preset | batch | dtype | conv_impl | compile s | s/step (median) | steps/s "
        "| images/s | GFLOP/step | achieved GFLOP/s | utilisation (fp32 peak) |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        impl = r["conv_impl"] if r["conv_impl"] == r["resolved_conv_impl"] else \
            f"{r['conv_impl']} ({r['resolved_conv_impl']})"
        lines.append(
            f"| {r['model']} | {r['preset']} | {r['batch_size']} | {r['dtype']} | {impl} "
            f"| {r['compile_seconds']:.1f} | {r['seconds_per_step_median']:.3f} "
            f"| {r['steps_per_second']:.3f} | {r['images_per_second']:.1f} "
            f"| {r['model_flops_per_step'] / 1e9:.1f} "
            f"| {r['achieved_flops_per_second'] / 1e9:.1f} "
            f"| {100 * r['utilisation_vs_float32_peak']:.1f}% |")
    return "\n".join(lines)


def write(path: str, payload: dict[str, Any], table: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(table + "\n")


def main(argv):
    del argv
    env = environment()
    peak = peaks()
    print(json.dumps({"environment": env, "peak_flops_per_second": peak}), flush=True)
    records = []
    for model in FLAGS.models:
        for preset in FLAGS.presets:
            for batch_size in (int(b) for b in FLAGS.batch_sizes):
                # All implementations of one configuration are built first, then timed in
                # alternation, so that a change in the machine's load hits them alike.
                steps = [Step(model, preset, batch_size, impl, FLAGS.num_attributes,
                              dtype=dtype)
                         for dtype in FLAGS.dtypes for impl in FLAGS.conv_impls]
                n = FLAGS.steps_per_repeat or steps_for(min(s.time(1) for s in steps))
                times = {id(s): [] for s in steps}
                for _ in range(FLAGS.repeats):
                    for s in steps:
                        times[id(s)].append(s.time(n) / n)
                for s in steps:
                    records.append(record(s, times[id(s)], peak))
                    print(json.dumps(records[-1]), flush=True)
                del steps
    table = markdown_table(records)
    cmd = "python " + " ".join(sys.argv)
    write(FLAGS.out, {"command": cmd, "environment": env, "peak_flops_per_second": peak,
                      "results": records}, table)
    print(f"\n{cmd}\n{env['processor']}, {env['cpu_count']} CPUs, {env['devices']}, "
          f"jax {env['jax']}, fp32 peak {peak['float32'] / 1e9:.0f} GFLOP/s\n\n{table}")


if __name__ == "__main__":
    app.run(main)
