r"""Paired per-face differences between models scored in different evaluations (one table).

`launch/evaluate.py` writes `per_face.npz` (`<i>_<model>/<estimator>`: one value per face, in
split order); evaluations with the same settings score the same faces with the same noise, so
their rows pair across runs. This prints, for a chain of models, each one's mean ± standard error
and the paired difference of each model with the one before it (mean ± standard error over the
faces, and the share of faces where the later model is higher):

    python scripts/paired_table.py --estimators=bound,iwae_100 \
        "CMMA=runs/evaluation/seed_0/per_face.npz:0_cmma" \
        "CMMA, y to encoder=runs/ablation/evaluation/per_face.npz:0_cmma" ...

With `--seeds=0,1,2`, `{seed}` in an entry's path is replaced by each seed in turn, and the
table has one column per seed and one across the seeds: the mean of the per-seed means ± their
standard deviation / √(number of seeds), which counts the spread between training runs (the
per-face standard errors of one run do not):

    python scripts/paired_table.py --seeds=0,1,2 \
        "CMMA=runs/evaluation/seed_{seed}/per_face.npz:0_cmma" ...
"""

import argparse

import numpy as np

from cmma_jax import stats


def _se(x: np.ndarray) -> float:
    se = stats.standard_error(x)
    return float("nan") if se is None else se


def chain_table(entries, estimator: str, seeds=None) -> list[str]:
    """Markdown rows for one estimator. `entries`: (label, path, prefix); with `seeds`, each path
    is formatted with `seed=`."""
    seeded = seeds is not None
    seeds = list(seeds) if seeded else [None]
    values = []  # [entry][seed] -> per-face values
    for label, path, prefix in entries:
        row = []
        for seed in seeds:
            file = path.format(seed=seed) if seeded else path
            npz = np.load(file)
            key = f"{prefix}/{estimator}"
            if key not in npz.files:
                raise SystemExit(f"{key} is not in {file} (it has {npz.files}).")
            row.append(np.asarray(npz[key], np.float64))
        values.append(row)
    lines = []
    if not seeded:
        lines += ["| model | mean ± s.e. | − the row above, paired | faces higher | faces |",
                  "| --- | ---: | ---: | ---: | ---: |"]
    else:
        columns = " | ".join(f"seed {s}" for s in seeds)
        lines += [f"| model | {columns} | across seeds |",
                  "| --- |" + " ---: |" * (len(seeds) + 1)]
    for i, (label, _, _) in enumerate(entries):
        if i > 0 and any(len(x) != len(p) for x, p in zip(values[i], values[i - 1])):
            raise SystemExit(f"{label}: not as many faces as the row above.")
        if not seeded:
            x = values[i][0]
            row = f"| {label} | {x.mean():,.1f} ± {_se(x):.1f} |"
            if i == 0:
                row += " | |"
            else:
                d = x - values[i - 1][0]
                row += f" {d.mean():+,.1f} ± {_se(d):.1f} | {np.mean(d > 0):.0%} |"
            lines.append(row + f" {len(x)} |")
            continue
        cells, diffs = [], []
        for j, x in enumerate(values[i]):
            cell = f"{x.mean():,.1f} ± {_se(x):.1f}"
            if i > 0:
                d = x - values[i - 1][j]
                diffs.append(d.mean())
                cell += f"; {d.mean():+,.1f} ± {_se(d):.1f} ({np.mean(d > 0):.0%} higher)"
            cells.append(cell)
        means = np.array([x.mean() for x in values[i]])
        across = f"{means.mean():,.1f} ± {_se(means):.1f}"
        if i > 0:
            diffs = np.array(diffs)
            across += f"; {diffs.mean():+,.1f} ± {_se(diffs):.1f}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {across} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", nargs="+", help="label=path/per_face.npz:key_prefix")
    parser.add_argument("--estimators", default="bound,iwae_100")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds; {seed} in the paths takes each in turn")
    args = parser.parse_args()
    entries = []
    for entry in args.entries:
        label, _, where = entry.partition("=")
        path, _, prefix = where.rpartition(":")
        if not label or not path or not prefix:
            parser.error(f"{entry!r}: expected label=path/per_face.npz:key_prefix")
        if args.seeds and "{seed}" not in path:
            parser.error(f"{entry!r}: --seeds is given but the path has no {{seed}}")
        entries.append((label, path, prefix))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    for estimator in args.estimators.split(","):
        print(f"\n{estimator} (nats per face"
              + ("; each cell: mean ± s.e. over faces; − the row above, paired)" if seeds
                 else ")") + "\n")
        print("\n".join(chain_table(entries, estimator, seeds)))


if __name__ == "__main__":
    main()
