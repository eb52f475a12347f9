"""Tests of cmma_jax/images.py: grids of faces with labels, and PNG files."""

import numpy as np
from PIL import Image

from cmma_jax import images


def test_grids_and_png_colours(tmp_path):
    faces = np.random.default_rng(0).uniform(size=(2, 3, 8, 8, 3))
    grid = images.labelled_grid(faces, ["a", "b"], ["x", "y", "z"], title="t")
    both = images.hstack_images([grid, grid], gap=5)
    assert both.size == (2 * grid.width + 5, grid.height)
    path = images.save_png(str(tmp_path / "g.png"), both, colors=16)
    assert len(Image.open(path).getcolors(256)) <= 16

