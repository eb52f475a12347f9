r"""Learning curves of trained workdirs: flags -> one call to
`cmma_jax.curves.write_learning_curves`.

    python launch/learning_curves.py --output=curves/lfw \
        --run="small/CMMA=runs/seed_1/cmma,runs/seed_2/cmma" \
        --run="small/CVAE=runs/seed_1/cvae,runs/seed_2/cvae" \
        --run="paper/CMMA=runs/paper/cmma" --run="paper/CVAE=runs/paper/cvae"

Each --run is `panel/label=workdir,workdir,...`: one line per workdir, in the panel's plot, the
label's colour. A label may hold "=" (e.g. "CMMA lr=1e-3"): the workdirs follow the last one.
Writes <output>.md (last and best value of each run), <output>.json (the curves) and
<output>.png (needs matplotlib: pip install -e ".[plots]"; --noplot skips it).
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", None, "panel/label=workdir,workdir,... (repeat the flag).",
                          required=True)
flags.DEFINE_string("output", "learning_curves", "Output path without extension.")
flags.DEFINE_string("metric", "val_elbo", "The metrics.jsonl scalar to plot.")
flags.DEFINE_string("title", None, "The plot's title.")
flags.DEFINE_bool("plot", True, "Write the PNG (matplotlib).")


def parse_runs(specs):
    """{panel: {label: [workdirs]}} from `panel/label=w1,w2` strings (order kept); the workdirs
    follow the last "=", so a label may contain one."""
    runs = {}
    for spec in specs:
        head, sep, paths = spec.rpartition("=")
        panel, slash, label = head.partition("/")
        if not sep or not slash or not panel or not label or not paths:
            raise app.UsageError(f"--run={spec!r}: expected panel/label=workdir[,workdir...], "
                                 "e.g. --run='small/CMMA=runs/seed_1/cmma'.")
        runs.setdefault(panel, {}).setdefault(label, []).extend(
            p for p in paths.split(",") if p)
    return runs


def main(argv):
    del argv
    runs = parse_runs(FLAGS.run)
    from cmma_jax import curves

    for kind, path in curves.write_learning_curves(runs, FLAGS.output, metric=FLAGS.metric,
                                                   plot=FLAGS.plot, title=FLAGS.title).items():
        print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
