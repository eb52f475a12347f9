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



def test_tiles_fill_rows_up_to_the_width_and_keep_each_panel_whole():
    panels = [Image.new("RGB", (w, h), c) for w, h, c in
              [(500, 100, "red"), (500, 120, "green"), (500, 80, "blue"), (1300, 50, "black")]]
    tiled = images.tile_images(panels, max_width=1100, gap=10)
    # rows: [red, green] (1,010 px), [blue], [black] (wider than max_width: alone on its row)
    assert tiled.size == (1300, 120 + 10 + 80 + 10 + 50)
    pixels = np.asarray(tiled)
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[0, 510]) == (0, 128, 0)
    assert tuple(pixels[130, 0]) == (0, 0, 255) and tuple(pixels[220, 1299]) == (0, 0, 0)
    assert tuple(pixels[0, 1100]) == (255, 255, 255)  # the gap, white
