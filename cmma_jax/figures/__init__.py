"""The papers' figures from trained models (`generate_figures`, the library of
`launch/generate.py`), drawn as labelled grids of `cmma_jax.images`:

- Faces from attributes (CMMA paper, Figure 4): rows set two attributes on/off (Male with Asian on
  LFW, Male with Pale_Skin on CelebA), columns switch one more attribute on at a time (no change,
  mouth open, eyeglasses, bushy eyebrows, big nose, pointy nose, big lips); temperature 0; one
  grid per model, tiled at most 1,200 pixels wide (`images.tile_images`).
- Changing a face's attributes (Figures 6-7): the CMMA's procedure of section 4.5.2 with erratum 8,
  the CVAE's encode-with-old / decode-with-new; one row per switched attribute (big nose,
  eyeglasses, moustache, big lips), and the removal of eyeglasses from faces that wear them.
- The ladder model (MMD-VLAE paper): per-layer traversals (Figures 2-3) and face arithmetic
  A - B + C (Figure 4).

Attribute names are resolved per dataset (`FIGURE_DEFAULTS`); an unknown name is an error that
lists the dataset's attributes.

The package, one job a module: `drawing` (the attribute vectors and the figure functions) and
`run` (`FigureSettings`, `generate_figures`).
"""

from cmma_jax.figures.drawing import (BASES, FIGURE_DEFAULTS, FIGURES, arithmetic_figure,
                                      arithmetic_triples, attribute_grid_inputs,
                                      attribute_indices, edit_figure,
                                      faces_from_attributes_figure, figure_defaults,
                                      most_varied_dimensions, on_off_values,
                                      removal_figure, toggled_attributes,
                                      traversal_figure)
from cmma_jax.figures.run import FigureSettings, generate_figures

__all__ = [
    "FIGURES", "BASES", "FIGURE_DEFAULTS", "FigureSettings", "generate_figures", "figure_defaults",
    "attribute_indices", "attribute_grid_inputs", "toggled_attributes", "on_off_values",
    "faces_from_attributes_figure", "edit_figure", "removal_figure", "most_varied_dimensions",
    "traversal_figure", "arithmetic_figure", "arithmetic_triples",
]
