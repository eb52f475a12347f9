"""Faces from attributes with a trained model: load a workdir, set attributes by name, generate.

    python examples/generate_from_workdir.py workdirs/cmma_synthetic_faces faces.png

Loads the model (its best checkpoint when the convergence rule kept one), starts from every
attribute absent, switches on a few by name (one row each), and writes the means (temperature 0)
and four samples (temperature 1) of each row.
"""

import sys

import jax
import numpy as np

from cmma_jax import images, workdirs


def main(workdir: str, output: str, switch_on=("Male", "Smiling", "Eyeglasses")) -> np.ndarray:
    model = workdirs.load_model(workdir)
    names = list(model.attribute_names)
    rows = []
    for name in (None, *switch_on):
        y = np.zeros((1, len(names)), np.float32)  # every attribute absent ("binary" encoding)
        if name in names:
            y[0, names.index(name)] = 1.0
        rows.append(y)
    attributes = np.concatenate(rows)
    means = model.model_lib.sample(model.params, attributes, jax.random.key(0), 0.0,
                                   config=model.config)
    samples = [model.model_lib.sample(model.params, attributes, jax.random.key(s), 1.0,
                                      config=model.config) for s in range(4)]
    grid = np.stack([np.asarray(means), *map(np.asarray, samples)], axis=1)  # [rows, 5, H, W, 3]
    labels = ["none"] + [f"+{n}" for n in switch_on if n in names]
    images.save_png(output, images.labelled_grid(grid, row_labels=labels,
                                                 col_labels=["T=0"] + ["T=1"] * 4,
                                                 title=model.label))
    print(f"wrote {output}")
    return grid


if __name__ == "__main__":
    main(*sys.argv[1:3])
