"""Parzen-window estimator at the CMMA paper's scale: time and peak memory.

The paper's Table 3 protocol: about 2,000 test faces of 64x64x3 = 12,288 values, 1,000 or more model
samples, a grid of sigmas chosen on validation data. Two cases:

- shared: one set of samples `[S, 64, 64, 3]` for every test face (held in host memory, 49 MB);
- per-point: one set per test face, generated chunk by chunk as a conditional model would
  (`parzen_log_likelihood_from_fn`); here a cheap stand-in generator (the test face plus
  deterministic noise), since the point is the estimator's cost, not a model's.

Usage:
  python benchmarks/parzen_throughput.py                       # paper scale, both cases
  python benchmarks/parzen_throughput.py --num_test=200 --cases=per_point

Prints one JSON line per case: wall time, throughput (test-point x sample pairs per second) and
the process's peak resident memory.
"""

import json
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cmma_jax import metrics

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_test", 2000, "Test faces.")
flags.DEFINE_integer("num_samples", 1000, "Model samples per test face.")
flags.DEFINE_integer("num_sigmas", 10, "Size of the sigma grid.")
flags.DEFINE_list("cases", ["shared", "per_point"], "Which cases to run.")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(_):
    shape = (64, 64, 3)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(FLAGS.num_test,) + shape).astype(np.float32)
    sigmas = np.geomspace(0.05, 0.5, FLAGS.num_sigmas)
    base = {"num_test": FLAGS.num_test, "num_samples": FLAGS.num_samples,
            "num_sigmas": FLAGS.num_sigmas, "values_per_point": int(np.prod(shape)),
            "device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(),
            "cpu_count": __import__("os").cpu_count(), "jax": jax.__version__}
    for case in FLAGS.cases:
        if case == "shared":
            samples = rng.uniform(size=(FLAGS.num_samples,) + shape).astype(np.float32)

            def sample_fn(b_slice, s_slice):
                return samples[s_slice]
            shared = True
        elif case == "per_point":
            noise = jax.random.normal(jax.random.key(1), (FLAGS.num_samples,) + shape) * 0.1

            @jax.jit
            def _make(xb, nz):
                return xb[:, None] + nz[None]

            def sample_fn(b_slice, s_slice):
                return _make(jnp.asarray(x[b_slice]), noise[s_slice])
            shared = False
        else:
            raise app.UsageError(f"Unknown case {case!r}; use shared or per_point.")
        start = time.perf_counter()
        out = metrics.parzen_log_likelihood_from_fn(x, sample_fn, FLAGS.num_samples, sigmas,
                                                    shared=shared)
        out.block_until_ready()
        seconds = time.perf_counter() - start
        pairs = FLAGS.num_test * FLAGS.num_samples
        print(json.dumps({**base, "case": case, "seconds": round(seconds, 2),
                          "pairs_per_second": round(pairs / seconds),
                          "peak_rss_mb": round(_peak_rss_mb()),
                          "finite": bool(np.isfinite(np.asarray(out)).all())}), flush=True)


if __name__ == "__main__":
    app.run(main)
