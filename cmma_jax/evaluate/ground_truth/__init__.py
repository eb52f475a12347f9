"""Ground truth for edits and layers (issue #15): models trained on `synthetic_faces` judged
against what their faces were rendered from.

    settings = GroundTruthSettings(num_faces=200, classifier_workdir="workdirs/classifier")
    results = ground_truth(["workdirs/cmma", "workdirs/cvae", "workdirs/vlae"], settings, "gt/")
    # gt/ground_truth.json, gt/ground_truth.md, gt/edits.png, gt/probes.png

Every synthetic face is rendered from a `FaceSpec` (`cmma_jax.data.synthetic_faces`), so the
true counterfactual of a face, the same face with one attribute switched and everything else
unchanged, is known exactly (`render_counterfactuals`; the hair colours switch together, so a
hair colour switched off gives red hair, the colour drawn when none is set).

Edits. For the first `num_faces` faces of a split and each attribute, every model that can edit
(the "edit" capability: cmma, cvae, a conditional vlae) edits the face from its attributes y to
the counterfactual's y' (both in the model's `config.data.attribute_encoding`), and the edit is
compared with the true counterfactual. Both directions are edited: a face without the attribute
gets it switched on ("to_on"), a face with it gets it switched off ("to_off"); every number is
reported pooled over the two and for each. Two references every good edit must beat:
  reconstruction: doing nothing, the model's reconstruction of the unedited face
    (`reconstruct(x, y)`; the same for every attribute);
  regeneration: the face generated from y' alone at temperature 0 (`sample(y', T=0)`), which
    shows the attributes but not the face.
Scores, with pixels in [0, 1] and the model's outputs clipped to [0, 1]:
  mse: the mean over faces of the per-face mean squared error over the 64·64·3 values;
  psnr: 10·log10(1 / mse) in dB, from that mean (not a mean of per-face PSNRs); higher is better;
  mse_changed: the mean over faces of the squared error on the pixels the true edit changes (a
    pixel changes when any of its channels does), the part of the image the edit is about;
  beats_reconstruction, beats_regeneration: the fraction of faces whose edit has a lower MSE.
The overall numbers pool every (face, attribute) pair (each attribute has the same faces, so
they are also the means over the attributes).

With an attribute classifier (`cmma_jax.classifier`, labels "probability > 0.5"), its verdict on
edits, both references and the true counterfactual (the ceiling), against the counterfactual's
attributes: "target", the accuracy on the switched attribute (does the face show y'?), also per
direction; "others", the accuracy on the other attributes (do they keep their values? for a hair
colour switched on, the face's former colour, switched off with it, counts among the others,
judged by its new value).

Probes. Each model that can encode (`encode`; the vlae's four layers each on their own, the
cmma's and cvae's single latent; the cvae's encoder is given the faces' true attributes) encodes
`probe_num_train` faces of `probe_train_split` and `probe_num_test` faces of `probe_test_split`
(the posterior means), and a ridge regression (`ridge_regression`, closed form, features
standardised on the training faces, an intercept) is fitted from the latent to every factor the
faces were drawn from: the 20 attributes (targets 0/1) and every nuisance parameter, the two
periodic angles (`PERIODIC_NUISANCE`) as their cosine and sine. The ridge penalty λ = α·n for α
in `ridge_alphas` is chosen per factor by the squared error on the last `probe_select_fraction` of
the training faces (fitted on the rest), then the probe is refitted on all training faces and
scored on the held-out faces: attributes by the balanced accuracy (the mean of the true-positive
and true-negative rates; chance 0.5) of the probe thresholded at 0.5 (plain accuracy also
reported), nuisance by R² = 1 - SS_res / SS_tot (chance 0, negative when worse than the
held-out mean). When the two splits are the same, the held-out faces follow the training faces.
Some nuisance parameters show on some faces only (glasses_colour with Eyeglasses, skin_tone
without Pale_Skin); they are probed over all faces alike, which bounds their R².

The package, one module per job (each importing only the ones above it in this list):

    settings    `GroundTruthSettings`, `InputError`, the names of the files written
    statistics  `psnr`, `per_face_mse`, `per_face_masked_mse`, `r_squared`,
                `balanced_accuracy`, `ridge_regression`, `probe` (numpy only)
    models      the workdirs' checks, the models' jitted entry points, batching, the classifier
    scoring     the edits against the true counterfactuals (and the edit figure's blocks)
    probes      `factor_table` and the probes of every latent layer
    figures     `edit_figure`, `probe_figure` (heat maps by `cmma_jax.images.heatmap`)
    report      `markdown_report`
    run         `ground_truth`, the whole thing
"""

from cmma_jax.evaluate.ground_truth.figures import edit_figure, probe_figure
from cmma_jax.evaluate.ground_truth.probes import factor_table
from cmma_jax.evaluate.ground_truth.report import markdown_report
from cmma_jax.evaluate.ground_truth.run import ground_truth
from cmma_jax.evaluate.ground_truth.settings import (ATTRIBUTE_NAMES, DEFAULT_FIGURE_ATTRIBUTES,
                                                     EDIT_FIGURE_FILE, JSON_FILE, MARKDOWN_FILE,
                                                     OUTPUTS, PROBE_FIGURE_FILE,
                                                     GroundTruthSettings, InputError)
from cmma_jax.evaluate.ground_truth.statistics import (balanced_accuracy, per_face_masked_mse,
                                                       per_face_mse, probe, psnr, r_squared,
                                                       ridge_regression)
from cmma_jax.images import heatmap

__all__ = [
    "ATTRIBUTE_NAMES",
    "OUTPUTS",
    "DEFAULT_FIGURE_ATTRIBUTES",
    "JSON_FILE",
    "MARKDOWN_FILE",
    "EDIT_FIGURE_FILE",
    "PROBE_FIGURE_FILE",
    "InputError",
    "GroundTruthSettings",
    "psnr",
    "per_face_mse",
    "per_face_masked_mse",
    "r_squared",
    "balanced_accuracy",
    "ridge_regression",
    "probe",
    "factor_table",
    "edit_figure",
    "heatmap",
    "probe_figure",
    "markdown_report",
    "ground_truth",
]
