"""The CMMA paper's protocol in one call: `reproduce(settings, workdir)` (`launch/reproduce.py`).

For every seed it trains the models (cmma, cvae, cgan, vlae by default), trains one attribute
classifier, evaluates each seed's models (Table 2: the bound in nats and bits/dim, IWAE; Table 3:
Parzen with σ chosen on the validation split; attribute fidelity), draws the figures, and writes
one report: per seed, and mean ± standard error across seeds, with the paired per-face differences
of the first model (the CMMA) against each other one.

    settings = reproduce.ReproduceSettings(dataset="lfw", data_dir="../shared/data/lfw",
                                           preset="small", seeds=(0, 1, 2))
    reproduce.reproduce(settings, "runs/lfw_small")

Layout of `workdir`:

    reproduce.json              the settings, and every command run on this workdir
    timings.json                seconds spent per stage (summed over the runs that did the work)
    seed_<s>/<model>/           a training workdir (`train.train_and_evaluate`, training.seed = s)
    classifier/                 the attribute classifier (`classifier.train_classifier`, seed 0)
    evaluation/seed_<s>/        `evaluate.evaluate_workdirs`: results.json, results.md, per_face.npz
    figures/seed_<s>/           `figures.generate_figures`: the PNGs and figures.json (a marker)
    report.md, report.json      the report

Resuming. Run again after a kill, the same call skips what is finished and continues what is not:
a training workdir whose latest checkpoint is at its `num_steps`, or that the convergence rule
stopped (`stopped.json`, `cmma_jax.convergence`), is finished (read from the checkpoint folder, no
parameters loaded), otherwise the trainer resumes it from its checkpoint; an
evaluation is finished when its results.json scores the models' latest checkpoints with the same
settings and is newer than them (the best checkpoint, where the convergence rule kept one);
figures likewise (their figures.json). What is trained must
match the first run: a rerun whose dataset, preset, data options, config overrides or classifier
settings differ from `reproduce.json` is refused with an error naming the fields, and a training
workdir whose config.json differs from the config it would get is refused too. Seeds and models
may be added; `training.num_steps` (an override) and `classifier_steps` may be raised, and
training then continues from the checkpoints, after which evaluation and figures are redone.
Evaluation and figure settings may change: the evaluations and figures they touch are redone.

One process trains a workdir at a time: the trainer locks each workdir for its run
(`workdirs.lock`), and a training workdir held by another process (a reproduce or a
launch/train.py) is skipped with a message.

The package, one module per job (each importing only the ones above it in this list):

    settings   `ReproduceSettings`, `STAGES`, the workdir's file names, `settings_differences`
    overrides  `model_config`, `classifier_config`, `apply_overrides`
    layout     `seed_dir`, `training_dir`, `evaluation_dir`, `figures_dir`; what is finished:
               `training_finished`, `loaded_step`, `evaluation_finished`; the JSON records
    records    reproduce.json (the settings merged with a rerun's, the runs) and timings.json,
               under one lock
    seeds      `model_numbers`, `seed_differences`, `summarize_seeds` (across seeds)
    report     `markdown` (the report as Markdown)
    stages     the five stages
    run        `reproduce`
"""

# Beside `__all__`, the names the module this package was gave: the workdir's file names and
# folders, and the records' helpers (tests/test_reproduce.py).
from cmma_jax.reproduce.layout import (evaluation_dir, evaluation_finished, figures_dir,
                                       loaded_step, seed_dir, training_dir, training_finished)
from cmma_jax.reproduce.overrides import apply_overrides, classifier_config, model_config
from cmma_jax.reproduce.records import _finish_run, _record_run, _Timings
from cmma_jax.reproduce.report import markdown
from cmma_jax.reproduce.run import reproduce
from cmma_jax.reproduce.seeds import mean_stderr, model_numbers, seed_differences, summarize_seeds
from cmma_jax.reproduce.settings import (CLASSIFIER_DIR, DEFAULT_MODELS, DIM, FIGURES_MARKER,
                                         NUM_STEPS, REPORT_JSON, REPORT_MD, RESULTS_FILE,
                                         SETTINGS_FILE, STAGES, TIMINGS_FILE, TRAINING_FIELDS,
                                         ReproduceSettings, settings_differences)

__all__ = [
    "STAGES", "DEFAULT_MODELS", "ReproduceSettings", "reproduce", "model_config",
    "classifier_config", "apply_overrides", "training_finished", "loaded_step",
    "evaluation_finished", "settings_differences", "mean_stderr",
    "model_numbers", "seed_differences", "summarize_seeds", "markdown",
]

