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

import sys

from absl import app, flags

from cmma_jax import flag_types

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training workdirs (comma-separated), all of one dataset.",
                  required=True)
flags.DEFINE_string("output_dir", "figures", "Where the PNG files go.")
flags.DEFINE_list("figures", ["attributes", "edits", "removal", "traversals", "arithmetic"],
                  "Which figures.")
flags.DEFINE_string("split", "test", "The split the faces and attributes come from.")
flags.DEFINE_integer("pool_size", 500, "Faces of the split read (row bases, faces with an "
                     "attribute, arithmetic triples).")
flag_types.DEFINE_indices("faces", None, "Indices into the split of the faces to edit and "
                          "traverse (default: the first --num_faces).")
flags.DEFINE_integer("num_faces", 6, "Faces per edit figure when --faces is not given.")
flags.DEFINE_list("rows", None, "Figure 4's two row attributes (default per dataset).")
flags.DEFINE_list("columns", None, "Figure 4's column attributes (default per dataset).")
flags.DEFINE_enum("base", "mode", ["mode", "zeros", "mean"], "Figure 4's other attributes: the "
                  "most common values among faces of the row, all absent, or the mean.")
flags.DEFINE_float("temperature", 0.0, "Figure 4's noise scale (0: means only, as the paper).")
flags.DEFINE_list("edits", None, "Attributes switched in Figure 6 (default per dataset).")
flags.DEFINE_string("remove", None, "The attribute removed in Figure 7 (default Eyeglasses).")
flag_types.DEFINE_floats("traverse_values", [-3.0, 3.0, 7.0], "low,high,count of a traversal.",
                         count=3)
flag_types.DEFINE_indices("traverse_dims", None, "One latent dimension per ladder layer "
                          "(default: the most varied over the faces read).")
flags.DEFINE_list("arithmetic", None, "Two attributes that pick arithmetic triples A (both), B "
                  "(first only), C (neither); default Male,Pale_Skin.")
flag_types.DEFINE_index_triples("arithmetic_faces", None, "Explicit triples a:b:c of split "
                                "indices.")
flags.DEFINE_integer("num_triples", 4, "Rows of the arithmetic figure.")
flags.DEFINE_integer("seed", 0, "Noise seed.")
flags.DEFINE_integer("png_colors", None, "Quantise the PNGs to this many colours (smaller files).")
flags.DEFINE_string("classifier_workdir", None, "An attribute classifier of the models' "
                    "attributes (launch/train_classifier.py): its verdict on each column of "
                    "Figure 4 and each edit goes beside the figures (*_verdicts.md).")
flags.DEFINE_integer("verdict_faces", 100, "Faces judged per model, attribute and side.")
flags.DEFINE_string("data_dir", None, "The raw dataset folder for celeba or lfw, if it moved.")
flags.DEFINE_string("prepared_dir", None, "Where prepared datasets live, if it moved.")


def _tuple(values, kind=str):
    return None if values is None else tuple(kind(v) for v in values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from cmma_jax import figures, files

    low, high, count = FLAGS.traverse_values
    if not (float(count).is_integer() and count >= 2):
        raise app.UsageError(f"--traverse_values=low,high,count: count must be an integer >= 2, "
                             f"got {count:g}.")
    triples = _tuple(FLAGS.arithmetic_faces, tuple)
    settings = figures.FigureSettings(
        figures=tuple(FLAGS.figures), split=FLAGS.split, pool_size=FLAGS.pool_size,
        faces=_tuple(FLAGS.faces, int), num_faces=FLAGS.num_faces, rows=_tuple(FLAGS.rows),
        columns=_tuple(FLAGS.columns), base=FLAGS.base, temperature=FLAGS.temperature,
        edits=_tuple(FLAGS.edits), remove=FLAGS.remove,
        traverse_values=(low, high, int(count)),
        traverse_dims=_tuple(FLAGS.traverse_dims, int), arithmetic=_tuple(FLAGS.arithmetic),
        arithmetic_faces=triples, num_triples=FLAGS.num_triples, seed=FLAGS.seed,
        data_dir=FLAGS.data_dir, prepared_dir=FLAGS.prepared_dir, png_colors=FLAGS.png_colors,
        classifier_workdir=FLAGS.classifier_workdir, verdict_faces=FLAGS.verdict_faces)
    try:
        written = figures.generate_figures(FLAGS.workdirs, FLAGS.output_dir, settings)
    except files.OutputDirError as e:
        sys.exit(f"launch/generate.py: {e}")
    print(f"Wrote {len(written)} figure(s) in {FLAGS.output_dir}", flush=True)


if __name__ == "__main__":
    app.run(main)
