r"""Scores models trained on synthetic_faces against the ground truth: flags -> one call to
`cmma_jax.evaluate.ground_truth.ground_truth`.

    python launch/ground_truth.py --workdirs=workdirs/cmma,workdirs/cvae,workdirs/vlae \
        --classifier_workdir=workdirs/classifier --output_dir=results/ground_truth
    python launch/ground_truth.py --workdirs=workdirs/cmma --num_faces=50 \
        --attributes=Eyeglasses,Smiling --probe_num_train=500 --probe_num_test=500

Writes in --output_dir: `ground_truth.json` and `ground_truth.md` (the tables), `edits.png` (the
input, the true counterfactual and each model's edit, for --figure_attributes) and `probes.png`
(the probes' heat map: latent layers × factors).

Edits: for the first --num_faces faces of --split and each attribute, the true counterfactual
(the same face with that attribute switched, rendered from its spec) against each model's edit
(cmma, cvae, a conditional vlae), its reconstruction (doing nothing) and the face generated from
the new attributes alone at temperature 0: MSE and PSNR, both directions, and, with
--classifier_workdir, a classifier's verdict on the switched and the other attributes (the true
counterfactual is the ceiling). Probes: a ridge regression from each latent layer's posterior
means (the vlae's four, the cmma's and cvae's one) to every attribute (held-out balanced
accuracy) and every nuisance parameter (held-out R²), fitted on --probe_num_train faces of
--probe_train_split and scored on --probe_num_test faces of --probe_test_split.

Only models trained on synthetic_faces can be scored: its faces are rendered from known specs.
"""

import sys

from absl import app, flags

from cmma_jax import flag_types

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training workdirs of models trained on synthetic_faces "
                  "(comma-separated), all of one dataset seed.", required=True)
flags.DEFINE_string("classifier_workdir", None, "An attribute classifier trained on "
                    "synthetic_faces (launch/train_classifier.py); without one its verdict is "
                    "skipped.")
flags.DEFINE_string("output_dir", "results/ground_truth", "Where ground_truth.json, "
                    "ground_truth.md, edits.png and probes.png go.")
flags.DEFINE_string("split", "test", "The split whose faces are edited.")
flags.DEFINE_integer("num_faces", 200, "Faces edited, for every attribute (the first ones of "
                     "--split).")
flags.DEFINE_list("attributes", None, "The attributes switched (default: all 20).")
flags.DEFINE_integer("batch_size", 50, "Faces per call of a model or the classifier.")
flags.DEFINE_string("probe_train_split", "validation", "The split the probes are fitted on.")
flags.DEFINE_integer("probe_num_train", 1000, "Faces the probes are fitted on.")
flags.DEFINE_string("probe_test_split", "test", "The split the probes are scored on (the faces "
                    "after the training faces when it is --probe_train_split).")
flags.DEFINE_integer("probe_num_test", 1000, "Held-out faces the probes are scored on.")
flag_types.DEFINE_positive_floats("ridge_alphas", None, "The ridge penalty grid α (λ = α·n on "
                                  "standardised features; default 1e-4,1e-3,1e-2,0.1,1,10).")
flags.DEFINE_float("probe_select_fraction", 0.2, "Share of the training faces on which the "
                   "penalty is chosen.")
flags.DEFINE_list("figure_attributes", None, "The attributes of edits.png (default: "
                  "Eyeglasses,Smiling,Mustache,Blond_Hair,Male).")
flags.DEFINE_integer("figure_faces", 6, "Faces per attribute in edits.png.")
flags.DEFINE_bool("progress", True, "Print progress lines on stderr.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from cmma_jax import files
    from cmma_jax.evaluate import ground_truth as gt

    extra = {}
    if FLAGS.ridge_alphas:
        extra["ridge_alphas"] = tuple(FLAGS.ridge_alphas)
    if FLAGS.figure_attributes:
        extra["figure_attributes"] = tuple(FLAGS.figure_attributes)
    try:
        settings = gt.GroundTruthSettings(
            split=FLAGS.split, num_faces=FLAGS.num_faces,
            attributes=tuple(FLAGS.attributes) if FLAGS.attributes else None,
            batch_size=FLAGS.batch_size, classifier_workdir=FLAGS.classifier_workdir,
            probe_train_split=FLAGS.probe_train_split, probe_num_train=FLAGS.probe_num_train,
            probe_test_split=FLAGS.probe_test_split, probe_num_test=FLAGS.probe_num_test,
            probe_select_fraction=FLAGS.probe_select_fraction,
            figure_faces=FLAGS.figure_faces, show_progress=FLAGS.progress, **extra)
    except ValueError as e:
        raise app.UsageError(str(e))
    try:
        results = gt.ground_truth(FLAGS.workdirs, settings, FLAGS.output_dir)
    except (gt.InputError, FileNotFoundError, files.OutputDirError) as e:
        sys.exit(f"launch/ground_truth.py: {e}")
    print("Wrote " + ", ".join(results["files"].values()), flush=True)


if __name__ == "__main__":
    app.run(main)
