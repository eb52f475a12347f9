"""Evaluation of trained models: bounds, importance-weighted likelihood, Parzen, attribute fidelity,
sharpness.

    settings = evaluate.EvalSettings(classifier_workdir="workdirs/classifier_celeba")
    results = evaluate.evaluate_workdirs(["workdirs/cmma", "workdirs/cvae", "workdirs/cgan"],
                                         settings, "results/")   # results.json, results.md

The package, one module per job (each importing only the ones above it in this list):

    common     per-face helpers, the compiled-function cache, `summarize`, `bits_per_dim`
    estimator  the `Estimator` protocol every estimator follows (`Context`, `Estimate`)
    bounds     `conditional_bound`, `importance_weighted_bounds`
    parzen     `parzen_log_likelihoods`, `select_parzen_sigma`, `per_face_sampler`
    fidelity   `attribute_fidelity`
    sharpness  `sharpness_per_face` (reconstruction error, fine detail against the real faces)
    registry   `ESTIMATORS`: one line per estimator
    settings   `EvalSettings`
    report     `paired_differences`, `markdown_report`, `machine_description`, `json_safe`
    run        `evaluate_workdirs`, `data_config_for`
    ground_truth  `ground_truth` (synthetic faces: edits against rendered counterfactuals,
                  probes of each latent layer against the known factors)

Estimators (each a function of a model library that follows the model contract of
docs/design.md, its parameters and config, and a stream of `Chunk`s of one split, from
`cmma_jax.data.reading`; all in nats per image):

- `conditional_bound`: the conditional variational bound of the CMMA paper's Table 2, per test
  face (`module.bound`: eq. 6 for the CMMA, eq. 13 for the CVAE), averaged over the split.
- `importance_weighted_bounds`: the importance-weighted bound on log p(x | y) (Burda et al. 2016)
  with K samples, for several K from ONE set of K_max samples per face (the bound with K uses the
  first K of them), so that the numbers for K = 1, 10, 100 are nested and cost the largest K alone.
  IWAE(K) increases with K towards log p(x | y) and is a true lower bound for every K (in
  expectation): a tighter and more trustworthy number than Parzen.
- `parzen_log_likelihoods`: the Parzen-window conditional log-likelihood of Table 3: for each face,
  S faces are generated from its own attributes (the decoder's mean g_μ(z) for z drawn from the
  prior at `temperature`; the generator's output for a GAN), a Gaussian kernel density with width
  σ is fitted to them and evaluated at the face. `select_parzen_sigma` picks σ from a grid by the
  mean log-likelihood on the validation split; the test split is then scored with that σ alone.
  The same protocol, sample count and σ grid for every model.
- `attribute_fidelity`: a trained attribute classifier (`cmma_jax.classifier`) scores one face
  generated from each test face's attributes; per-attribute accuracy and ROC AUC against those
  attributes, and the means over attributes. The same classifier on the real test faces is the
  ceiling. An attribute that is constant over the faces scored has no AUC: it is reported as null
  and left out of the mean AUC.
- `sharpness_per_face`: how blurred a model's faces are: the squared error of its reconstructions,
  and the fine detail (mean squared Laplacian, `metrics.laplacian_energy`) of its reconstructions
  and of its faces from attributes at temperature 0, relative to the real face's (1: as sharp).

Randomness does not depend on how the work is chunked: the noise of face i (its global index in
the split) and sample s is drawn from `fold_in(fold_in(key, i), s)`, and each face goes through the
model on its own (`vmap` over faces), so batch sizes and chunk sizes change nothing but speed and
memory. Memory is bounded by the chunk sizes (`EvalSettings.batch_size`, `iwae_sample_chunk`,
`parzen_batch`, `parzen_sample_chunk`), never by the size of the split.

Units and signs. Bounds and log-likelihoods are log-densities of the image x in [0, 1]^D
(D = 64·64·3 = 12,288 values) in nats per image, with every normalising constant; higher is better.
Bits per dimension is the same number as a code length: `bits/dim = -nats / (D ln 2)`, lower is
better. Because the density is over continuous values in [0, 1], a good model's log-density is
positive (the paper's Table 2: 17,973 nats) and its bits/dim negative; these are not the
discrete 8-bit bits/dim of image-modelling papers (which count log2(256) = 8 more bits per value
for the quantisation bins and need dequantised data).
"""

from cmma_jax.evaluate.bounds import conditional_bound, importance_weighted_bounds
from cmma_jax.evaluate.common import bits_per_dim, summarize
from cmma_jax.evaluate.fidelity import attribute_fidelity
from cmma_jax.evaluate.parzen import parzen_log_likelihoods, per_face_sampler, select_parzen_sigma
from cmma_jax.evaluate.report import (json_safe, machine_description, markdown_report,
                                      paired_differences)
from cmma_jax.evaluate.run import data_config_for, evaluate_workdirs
from cmma_jax.evaluate.settings import ESTIMATORS, EvalSettings
from cmma_jax.evaluate.sharpness import sharpness_per_face

__all__ = [
    "ESTIMATORS",
    "EvalSettings",
    "bits_per_dim",
    "summarize",
    "conditional_bound",
    "importance_weighted_bounds",
    "parzen_log_likelihoods",
    "per_face_sampler",
    "select_parzen_sigma",
    "attribute_fidelity",
    "sharpness_per_face",
    "evaluate_workdirs",
    "data_config_for",
    "paired_differences",
    "markdown_report",
    "machine_description",
    "json_safe",
]
