"""The stages of the protocol (`STAGES`): train, classifier, evaluate, figures, report; each
skips what is finished and leaves out a seed whose models are not trained yet."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from cmma_jax import checkpoints, classifier, evaluate, figures, files, train, workdirs
from cmma_jax.evaluate import EvalSettings
from cmma_jax.figures import FigureSettings
from cmma_jax.reproduce.layout import (_check_workdir_config, _checkpoint_mtime, _comparable,
                                       _read_json, _say, _write_json, evaluation_dir,
                                       evaluation_finished, figures_dir, loaded_step,
                                       training_dir, training_finished)
from cmma_jax.reproduce.overrides import classifier_config, model_config
from cmma_jax.reproduce.report import markdown
from cmma_jax.reproduce.seeds import summarize_seeds
from cmma_jax.reproduce.settings import (CLASSIFIER_DIR, DIM, FIGURES_MARKER, REPORT_JSON,
                                         REPORT_MD, RESULTS_FILE, TIMINGS_FILE, _plain)


def _train_stage(workdir, settings, timings) -> None:
    for seed in settings.seeds:
        for model in settings.models:
            path = training_dir(workdir, seed, model)
            config = model_config(settings, model, seed)
            num_steps = int(config.training.num_steps)
            _check_workdir_config(path, config)
            if training_finished(path, num_steps):
                _say(f"seed {seed} {model}: trained ({num_steps} steps), skipped")
                continue
            start = checkpoints.latest_step(path)
            _say(f"seed {seed} {model}: training to step {num_steps}"
                 + (f", resuming from step {start}" if start else "") + f" in {path}")
            try:
                with timings.time(f"train seed_{seed} {model}"):
                    train.train_and_evaluate(config, path)
            except workdirs.WorkdirLockedError as e:
                _say(f"seed {seed} {model}: skipped: {e}")


def _classifier_stage(workdir, settings, timings) -> None:
    path = os.path.join(workdir, CLASSIFIER_DIR)
    config = classifier_config(settings)
    num_steps = int(config.training.num_steps)
    if training_finished(path, num_steps):
        _say(f"classifier: trained ({num_steps} steps), skipped")
        return
    _say(f"classifier: training to step {num_steps} in {path}")
    try:
        with timings.time("classifier"):
            scores = classifier.train_classifier(config, path)
    except workdirs.WorkdirLockedError as e:
        _say(f"classifier: skipped: {e}")
        return
    _say(f"classifier: validation accuracy {scores['mean_accuracy']:.3f}, "
         f"AUC {scores['mean_auc']:.3f}")


def _models_ready(workdir, settings, seed) -> tuple[list[str], str | None]:
    """The seed's training workdirs (cmma first), or None and why they are not ready."""
    paths = []
    for model in settings.models:
        path = training_dir(workdir, seed, model)
        num_steps = int(model_config(settings, model, seed).training.num_steps)
        if not training_finished(path, num_steps):
            return paths, f"{model} not trained to step {num_steps} yet"
        paths.append(path)
    return paths, None


def _classifier_ready(workdir, settings) -> bool:
    return training_finished(os.path.join(workdir, CLASSIFIER_DIR),
                             int(classifier_config(settings).training.num_steps))


def _eval_settings(workdir, settings) -> EvalSettings:
    return dataclasses.replace(settings.evaluation,
                               classifier_workdir=os.path.join(workdir, CLASSIFIER_DIR),
                               data_dir=settings.data_dir, prepared_dir=settings.prepared_dir)


def _evaluate_stage(workdir, settings, timings) -> None:
    eval_settings = _eval_settings(workdir, settings)
    uses_classifier = "fidelity" in eval_settings.estimators
    classifier_dir = os.path.join(workdir, CLASSIFIER_DIR) if uses_classifier else None
    for seed in settings.seeds:
        paths, waiting = _models_ready(workdir, settings, seed)
        if waiting is None and uses_classifier and not _classifier_ready(workdir, settings):
            waiting = "the classifier is not trained yet"
        if waiting:
            _say(f"seed {seed} evaluation: waiting ({waiting})")
            continue
        out = evaluation_dir(workdir, seed)
        why = evaluation_finished(out, paths, settings.models, eval_settings, classifier_dir)
        if why is None:
            _say(f"seed {seed} evaluation: done, skipped")
            continue
        _say(f"seed {seed} evaluation ({why}) -> {out}")
        with timings.time(f"evaluate seed_{seed}"):
            evaluate.evaluate_workdirs(paths, eval_settings, out)


def _figure_settings(settings, workdir: str | None = None) -> FigureSettings:
    """The figure settings with the data's folders, and the protocol's classifier (its verdict
    beside the figures) once it is trained."""
    classifier_dir = None if workdir is None else os.path.join(workdir, CLASSIFIER_DIR)
    if classifier_dir is not None and checkpoints.latest_step(classifier_dir) is None:
        classifier_dir = None
    return dataclasses.replace(settings.figures, data_dir=settings.data_dir,
                               prepared_dir=settings.prepared_dir,
                               classifier_workdir=classifier_dir)


def _figures_record(paths, figure_settings) -> dict[str, Any]:
    return {"settings": _comparable(dataclasses.asdict(figure_settings)),
            "workdirs": [os.path.basename(os.path.normpath(p)) for p in paths],
            "steps": [loaded_step(p) for p in paths]}


def _figures_stage(workdir, settings, timings) -> None:
    figure_settings = _figure_settings(settings, workdir)
    for seed in settings.seeds:
        paths, waiting = _models_ready(workdir, settings, seed)
        if waiting:
            _say(f"seed {seed} figures: waiting ({waiting})")
            continue
        out = figures_dir(workdir, seed)
        marker = os.path.join(out, FIGURES_MARKER)
        wanted = _figures_record(paths, figure_settings)
        stored = _read_json(marker)
        if stored is not None and {k: stored.get(k) for k in wanted} == _plain(wanted) \
                and os.path.getmtime(marker) >= max(_checkpoint_mtime(p) for p in paths):
            _say(f"seed {seed} figures: done, skipped")
            continue
        _say(f"seed {seed} figures -> {out}")
        with timings.time(f"figures seed_{seed}"):
            written = figures.generate_figures(paths, out, figure_settings,
                                               log=lambda line: _say(f"seed {seed} {line}"))
        _write_json(marker, {**wanted, "written": written})


def _report_stage(workdir, settings, record) -> dict[str, Any]:
    results_by_seed, pending = {}, {}
    eval_settings = _eval_settings(workdir, settings)
    uses_classifier = "fidelity" in eval_settings.estimators
    for seed in settings.seeds:
        paths, waiting = _models_ready(workdir, settings, seed)
        why = waiting or evaluation_finished(
            evaluation_dir(workdir, seed), paths, settings.models, eval_settings,
            os.path.join(workdir, CLASSIFIER_DIR) if uses_classifier else None)
        if why is not None:
            pending[seed] = why
            continue
        results_by_seed[seed] = _read_json(os.path.join(evaluation_dir(workdir, seed),
                                                        RESULTS_FILE))
    summary = summarize_seeds(results_by_seed)
    timings = _read_json(os.path.join(workdir, TIMINGS_FILE), {})
    text = markdown(summary, settings=record["settings"], runs=record["runs"], timings=timings,
                    pending=pending, results_by_seed=results_by_seed)
    files.write_text(os.path.join(workdir, REPORT_MD), text)
    report = {**summary, "pending": {str(k): v for k, v in pending.items()},
              "timings": timings, "runs": record["runs"], "settings": record["settings"],
              "bits_per_dim_dimension": DIM,
              "stderr_across_seeds": "std (ddof=1) / sqrt(number of seeds)"}
    _write_json(os.path.join(workdir, REPORT_JSON), report)
    _say(f"report: {os.path.join(workdir, REPORT_MD)}"
         + (f" (pending: {', '.join(f'seed {s}' for s in sorted(pending))})" if pending else ""))
    return report
