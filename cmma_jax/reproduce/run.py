"""`reproduce(settings, workdir)`: the protocol's stages in order, after every check."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from cmma_jax.reproduce.layout import _check_workdir_config, training_dir
from cmma_jax.reproduce.overrides import _check_overrides, classifier_config, model_config
from cmma_jax.reproduce.records import _finish_run, _merge_settings, _record_run, _Timings
from cmma_jax.reproduce.settings import CLASSIFIER_DIR, STAGES, ReproduceSettings
from cmma_jax.reproduce.stages import (_classifier_stage, _evaluate_stage, _figures_stage,
                                       _report_stage, _train_stage)


def reproduce(settings: ReproduceSettings, workdir: str, *, stages: Sequence[str] = STAGES,
              command: str | None = None) -> dict[str, Any]:
    """Runs the protocol into `workdir`, skipping what is finished (`cmma_jax.reproduce`).

    Args:
      settings: `ReproduceSettings`.
      workdir: the run's folder (created; an existing one is resumed).
      stages: any of `STAGES`, in any order (they run in the order of `STAGES`): e.g.
        ("evaluate", "figures", "report") while trainings run elsewhere; a seed whose models are
        not trained yet is left out of the evaluation, the figures and the report.
      command: the command line, recorded in reproduce.json and the report.

    Returns:
      The report (`report.json`'s content) if "report" is among the stages, else {}.

    Raises:
      ValueError: for settings that differ from the workdir's in what is trained (naming the
        fields), or a training workdir trained with another config.
      KeyError: for an override of a field no config has.
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"Unknown stage(s) {unknown}; choose from {STAGES}.")
    _check_overrides(settings)
    os.makedirs(workdir, exist_ok=True)
    record, settings = _merge_settings(workdir, settings)
    for seed in settings.seeds:  # refuse a mismatch before any work
        for model in settings.models:
            _check_workdir_config(training_dir(workdir, seed, model),
                                  model_config(settings, model, seed))
    _check_workdir_config(os.path.join(workdir, CLASSIFIER_DIR), classifier_config(settings),
                          generative=False)
    run_id = _record_run(workdir, record, settings, command, stages)
    timings = _Timings(workdir)
    start = time.perf_counter()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("train", lambda: _train_stage(workdir, settings, timings)),
        ("classifier", lambda: _classifier_stage(workdir, settings, timings)),
        ("evaluate", lambda: _evaluate_stage(workdir, settings, timings)),
        ("figures", lambda: _figures_stage(workdir, settings, timings)),
    ]
    for name, run in steps:
        if name in stages:
            run()
    record = _finish_run(workdir, run_id, time.perf_counter() - start)
    if "report" in stages:
        return _report_stage(workdir, settings, record)
    return {}
