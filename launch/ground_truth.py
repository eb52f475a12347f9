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

from absl import app, flags

from cmma_jax import flag_types
from cmma_jax.evaluate.ground_truth.settings import GroundTruthSettings

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training workdirs of models trained on synthetic_faces "
                  "(comma-separated), all of one dataset seed.", required=True)
flags.DEFINE_string("output_dir", "results/ground_truth", "Where ground_truth.json, "
                    "ground_truth.md, edits.png and probes.png go.")
# Every field of GroundTruthSettings, with its default and its docstring line
# (show_progress: --progress).
RENAME = {"show_progress": "progress"}
FIELDS = flag_types.define_settings_flags(GroundTruthSettings, rename=RENAME)


def main(argv):
    flag_types.check_no_arguments(argv)
    from cmma_jax import files
    from cmma_jax.evaluate import ground_truth as gt

    settings = flag_types.settings_or_usage_error(GroundTruthSettings, FIELDS, rename=RENAME)
    with flag_types.exit_on(gt.InputError, FileNotFoundError, files.OutputDirError,
                            door="launch/ground_truth.py"):
        results = gt.ground_truth(FLAGS.workdirs, settings, FLAGS.output_dir)
    print("Wrote " + ", ".join(results["files"].values()), flush=True)


if __name__ == "__main__":
    app.run(main)
