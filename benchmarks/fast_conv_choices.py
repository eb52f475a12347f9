r"""The trainer's step with each of `fast_conv`'s choices forced, timed in alternation (how
`fast_conv._choose_dw`'s rule for narrow layers and `fast_conv.XLA_CHUNK` were chosen; issue #22).

    python benchmarks/fast_conv_choices.py --presets=small --batch_sizes=16,32,64 --repeats=5

Variants: the automatic choice, "dw=xpatches", "dw=xla", "dw=dypatches" (the patch matmuls of
dy), the automatic choice with 64 MB chunks ("64MB_chunks") and with XLA's own convolutions in
chunks of 16 or 4 examples or over the whole batch ("xla_chunk_16", "xla_chunk_4",
"xla_unchunked"; automatic: 8), the choices before 2026-12-07 at batch 64 ("before_b64") and
the bias added after the patch methods' loop ("bias_after_loop": the paper preset's layers),
every layer without the FFT ("no_fft") and the FFT down to 16 channels ("fft_from_16_channels"),
the pooling after the whole convolution rather than in its loop ("pool_after");
`--variants` picks some. Prints
ms/step, images/s and the speed against the automatic choice, with the machine's conditions
(benchmarks/quiet.py).
"""

import os
import statistics
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quiet  # noqa: E402
import train_throughput as tt  # noqa: E402

from cmma_jax import fast_conv  # noqa: E402

FLAGS = flags.FLAGS
FLAGS.set_default("presets", ["small"])
FLAGS.set_default("batch_sizes", ["16", "32", "64"])

VARIANTS = {"auto": {}, "dw=xpatches": {"dw": "xpatches"}, "dw=xla": {"dw": "xla"},
            "dw=dypatches": {"dw": "dypatches"}, "64MB_chunks": {"chunk_bytes": 64 << 20},
            "xla_chunk_16": {"xla_batch": 16}, "xla_unchunked": {"xla_batch": 1 << 30},
            "xla_chunk_4": {"xla_batch": 4},
            # The choices before 2026-12-07: XLA's convolutions over the whole batch, the patch
            # weight gradient above batch 32 ("xla_unchunked" at batches up to 32).
            "before_b64": {"xla_batch": 1 << 30, "dw": "dypatches"},
            # Before 2026-12-07, too: the patch methods' bias added after their loop.
            "bias_after_loop": {"bias_after": True},
            # Before 2026-12-07's FFT: every layer by the direct formulations; and the FFT for
            # narrower layers too (the CPU preset's 16 -> 32 encoder layer 2).
            "no_fft": {"fft": False}, "fft_from_16_channels": {"fft_min_channels": 16},
            # Before 2026-12-07's pooling in the loop: the whole convolution, then the pool.
            "pool_after": {"pool_after": True}}
flags.DEFINE_list("variants", list(VARIANTS), "Which of " + ", ".join(VARIANTS) + " (auto is "
                  "always timed: the others are compared with it).")


def main(argv):
    del argv
    for preset in FLAGS.presets:
        for batch in (int(b) for b in FLAGS.batch_sizes):
            steps = {}
            chosen = ["auto"] + [v for v in FLAGS.variants if v != "auto"]
            for name in chosen:  # read while tracing: one build each
                override = VARIANTS[name]
                fast_conv.OVERRIDE.clear()
                fast_conv.OVERRIDE.update(override)
                steps[name] = tt.Step("cmma", preset, batch, "fast_cpu", FLAGS.num_attributes)
            fast_conv.OVERRIDE.clear()
            n = FLAGS.steps_per_repeat or tt.steps_for(min(s.time(1) for s in steps.values()))
            times = {k: [] for k in steps}
            with quiet.Monitor() as monitor:
                for _ in range(FLAGS.repeats):
                    for k, s in steps.items():
                        times[k].append(s.time(n) / n)
            base = statistics.median(times["auto"])
            print(f"\n{preset} preset, batch {batch}:\n\n| variant | ms/step | images/s | "
                  "speed vs auto |\n| --- | ---: | ---: | ---: |")
            for k, t in times.items():
                median = statistics.median(t)
                print(f"| {k} | {1e3 * median:.1f} | {batch / median:.0f} | {base / median:.2f}x |")
            print("\n" + quiet.describe([monitor.summary()]), flush=True)


if __name__ == "__main__":
    app.run(main)
