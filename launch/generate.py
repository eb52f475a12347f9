r"""Draws the papers' figures from trained models: flags -> one call to
`cmma_jax.figures.generate_figures`.

    python launch/generate.py --workdirs=workdirs/cmma,workdirs/cvae,workdirs/cgan,workdirs/vlae \
        --output_dir=figures
    python launch/generate.py --workdirs=workdirs/cmma --figures=attributes \
        --rows=Male,Smiling --columns=Eyeglasses,Bangs
    python launch/generate.py --workdirs=workdirs/cmma,workdirs/cvae --figures=edits,removal \
        --faces=3,17,42 --edits=Big_Nose,Eyeglasses

Figures (PNG, labelled rows and columns): `attributes` -> faces_from_attributes.png (CMMA paper,
Figure 4: rows set two attributes on/off, columns switch one more on; one grid per model side by
side; temperature 0), `edits` -> edits.png (Figure 6: chosen test faces with one attribute switched
per row; cmma and cvae), `removal` -> remove_<attribute>.png (Figure 7), `traversals` and
`arithmetic` -> traversals_<vlae>.png and arithmetic_<vlae>.png (MMD-VLAE paper, Figures 2-4).
Attribute names default per dataset (Male/Pale_Skin rows on CelebA, Male/Asian on LFW); an
unknown name is an error that lists the dataset's attributes.
"""

from absl import app, flags

from cmma_jax import flag_types
from cmma_jax.figures import FigureSettings

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training workdirs (comma-separated), all of one dataset.",
                  required=True)
flags.DEFINE_string("output_dir", "figures", "Where the PNG files go.")
# Every field of FigureSettings, with its default and its docstring line.
FIELDS = flag_types.define_settings_flags(FigureSettings)


def main(argv):
    flag_types.check_no_arguments(argv)
    from cmma_jax import figures, files

    settings = flag_types.settings_or_usage_error(FigureSettings, FIELDS)
    with flag_types.exit_on(files.OutputDirError, door="launch/generate.py"):
        written = figures.generate_figures(FLAGS.workdirs, FLAGS.output_dir, settings)
    print(f"Wrote {len(written)} figure(s) in {FLAGS.output_dir}", flush=True)


if __name__ == "__main__":
    app.run(main)
