"""Learning curves of trained workdirs: a metric of `metrics.jsonl` against epochs, as a table and
a plot (`launch/learning_curves.py`).

    runs = {"small": {"CMMA": ["runs/seed_1/cmma", "runs/seed_2/cmma"],
                      "CVAE": ["runs/seed_1/cvae", "runs/seed_2/cvae"]},
            "paper": {"CMMA": ["runs/paper/cmma"], "CVAE": ["runs/paper/cvae"]}}
    curves.write_learning_curves(runs, "out/learning_curves", metric="val_elbo")

Each panel (a scale, a dataset: any grouping) holds labelled lines, one per workdir (a seed);
lines of one label share a colour. The x axis is epochs of the training split
(step x batch size / training faces), so that runs of other batch sizes compare. The trainer
writes `val_elbo` (the bound on fixed validation faces, nats per face, higher is better) every
`training.eval_every` steps (`cmma_jax.train.ValidationBound`).

Plots need matplotlib (`pip install -e ".[plots]"`); the tables do not.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

import numpy as np

from cmma_jax import data, workdirs


@dataclasses.dataclass(frozen=True)
class Curve:
    """One workdir's metric: `steps`, `epochs` and `values`, in step order."""

    workdir: str
    metric: str
    steps: np.ndarray
    epochs: np.ndarray
    values: np.ndarray


def train_size(config) -> int:
    """The number of faces in the training split of a workdir's config (from its prepared
    dataset)."""
    with data.load_split(config.data, "train", batch_size=1, seed=0, shard_index=0,
                         shard_count=1) as split:
        return int(split.num_examples)


def read_curve(workdir: str, metric: str = "val_elbo", *,
               examples_per_epoch: int | None = None) -> Curve:
    """The rows of `workdir/metrics.jsonl` that hold `metric`.

    Args:
      workdir: a training workdir.
      metric: a scalar of metrics.jsonl ("val_elbo", "elbo", "kl", ...).
      examples_per_epoch: faces in an epoch (default: the training split's, read from the
        prepared dataset of the workdir's config).

    Raises:
      FileNotFoundError: no metrics.jsonl (not a training workdir).
      ValueError: no row holds `metric` (e.g. val_elbo of a run trained before the trainer
        logged it, or with training.num_eval=0), naming the metrics it has.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir.")
    rows, seen = [], set()
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill mid-write
            seen.update(row)
            if metric in row:
                rows.append((int(row["step"]), float(row[metric])))
    if not rows:
        raise ValueError(f"{path} has no {metric!r} (its metrics: {sorted(seen - {'step'})}). "
                         "val_elbo is written by runs of models with a bound trained with "
                         "training.num_eval > 0.")
    steps, values = (np.array(v) for v in zip(*sorted(dict(rows).items())))
    config, _ = workdirs.read_workdir(workdir)
    per_epoch = examples_per_epoch or train_size(config)
    epochs = steps * int(config.training.batch_size) / per_epoch
    return Curve(workdir, metric, steps, epochs, values)


def curve_table(runs: Mapping[str, Mapping[str, Sequence[Curve]]]) -> str:
    """A Markdown table: per panel and label, the last value of each run, at its last epoch,
    and the best value with its epoch."""
    lines = ["| panel | label | workdir | last epoch | last value | best value (epoch) |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for panel, labelled in runs.items():
        for label, curves in labelled.items():
            for c in curves:
                best = int(np.argmax(c.values))
                lines.append(f"| {panel} | {label} | {c.workdir} | {c.epochs[-1]:.2f} | "
                             f"{c.values[-1]:.1f} | {c.values[best]:.1f} ({c.epochs[best]:.2f}) |")
    return "\n".join(lines)


def plot_curves(runs: Mapping[str, Mapping[str, Sequence[Curve]]], path: str, *,
                ylabel: str | None = None, title: str | None = None) -> str:
    """One panel per key of `runs`, side by side (at most 2 a row), lines per label; a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(runs)
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False,
                             dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = sorted({label for labelled in runs.values() for label in labelled})
    for ax, panel in zip(axes.flat, panels):
        for label, curves in runs[panel].items():
            colour = colours[labels.index(label) % len(colours)]
            for i, c in enumerate(curves):
                ax.plot(c.epochs, c.values, color=colour, marker="o", markersize=2.5,
                        linewidth=1.2, alpha=0.9, label=label if i == 0 else None)
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel or next(iter(next(iter(runs[panel].values())))).metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_learning_curves(runs: Mapping[str, Mapping[str, Sequence[str]]], output: str, *,
                          metric: str = "val_elbo", plot: bool = True,
                          title: str | None = None) -> dict[str, str]:
    """Reads every workdir's curve and writes `<output>.md` (the table), `<output>.json` (the
    curves) and, with `plot`, `<output>.png`. Returns the paths written."""
    curves = {panel: {label: [read_curve(w, metric) for w in paths]
                      for label, paths in labelled.items()}
              for panel, labelled in runs.items()}
    os.makedirs(os.path.dirname(os.path.abspath(output)) or ".", exist_ok=True)
    written = {"md": output + ".md", "json": output + ".json"}
    with open(written["md"], "w") as f:
        f.write(curve_table(curves) + "\n")
    with open(written["json"], "w") as f:
        json.dump({panel: {label: [{"workdir": c.workdir, "metric": c.metric,
                                    "steps": c.steps.tolist(), "epochs": c.epochs.tolist(),
                                    "values": c.values.tolist()} for c in cs]
                           for label, cs in labelled.items()}
                   for panel, labelled in curves.items()}, f, indent=1)
    if plot:
        written["png"] = plot_curves(curves, output + ".png", title=title,
                                     ylabel=f"{metric} (nats per face)" if metric.startswith(
                                         "val_") else None)
    return written


__all__ = ["Curve", "train_size", "read_curve", "curve_table", "plot_curves",
           "write_learning_curves"]
