r"""Paired per-face differences between models scored in different evaluations (one table).

`launch/evaluate.py` writes `per_face.npz` (`<i>_<model>/<estimator>`: one value per face, in
split order); evaluations with the same settings score the same faces with the same noise, so
their rows pair across runs. This prints, for a chain of models, each one's mean ± standard error
and the paired difference of each model with the one before it (mean ± standard error over the
faces, and the share of faces where the later model is higher):

    python scripts/paired_table.py --estimators=bound,iwae_100 \
        "CMMA=runs/evaluation/seed_0/per_face.npz:0_cmma" \
        "CMMA, y to encoder=runs/ablation/evaluation/per_face.npz:0_cmma" ...
"""

import argparse

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", nargs="+", help="label=path/per_face.npz:key_prefix")
    parser.add_argument("--estimators", default="bound,iwae_100")
    args = parser.parse_args()
    entries = []
    for entry in args.entries:
        label, _, where = entry.partition("=")
        path, _, prefix = where.rpartition(":")
        if not label or not path or not prefix:
            parser.error(f"{entry!r}: expected label=path/per_face.npz:key_prefix")
        entries.append((label, np.load(path), prefix))
    for estimator in args.estimators.split(","):
        print(f"\n{estimator} (nats per face)\n")
        print("| model | mean ± s.e. | − the row above, paired | faces higher | faces |")
        print("| --- | ---: | ---: | ---: | ---: |")
        previous = None
        for label, npz, prefix in entries:
            key = f"{prefix}/{estimator}"
            if key not in npz.files:
                raise SystemExit(f"{key} is not in that per_face.npz (it has {npz.files}).")
            x = npz[key]
            row = f"| {label} | {x.mean():,.1f} ± {x.std(ddof=1) / np.sqrt(len(x)):.1f} |"
            if previous is None:
                row += " | |"
            else:
                if len(previous) != len(x):
                    raise SystemExit(f"{label}: {len(x)} faces, the row above {len(previous)}.")
                d = x - previous
                row += (f" {d.mean():+,.1f} ± {d.std(ddof=1) / np.sqrt(len(d)):.1f} |"
                        f" {np.mean(d > 0):.0%} |")
            print(row + f" {len(x)} |")
            previous = x


if __name__ == "__main__":
    main()
