"""The workdir's layout (`seed_dir`, `training_dir`, `evaluation_dir`, `figures_dir`) and what in
it is finished: a training (`training_finished`, `loaded_step`), an evaluation
(`evaluation_finished`); the JSON records read and written beside them."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from cmma_jax import checkpoints, convergence, evaluate, files, presets, train, workdirs
from cmma_jax.evaluate import EvalSettings
from cmma_jax.reproduce.settings import _NOT_COMPARED, RESULTS_FILE, _plain


def _say(message: str) -> None:
    print(f"[reproduce] {message}", flush=True)


def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"seed_{seed}")


def training_dir(workdir: str, seed: int, model: str) -> str:
    return os.path.join(seed_dir(workdir, seed), model)


def evaluation_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, "evaluation", f"seed_{seed}")


def figures_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, "figures", f"seed_{seed}")


def training_finished(workdir: str, num_steps: int) -> bool:
    """Whether the workdir's latest checkpoint is at `num_steps`, or the convergence rule stopped
    the run at its latest checkpoint, and that checkpoint is not damaged (a damaged one is not
    finished: the trainer moves it aside and trains again from the newest that verifies)."""
    latest = checkpoints.latest_step(workdir)
    if latest is None:
        return False
    stopped = convergence.read_stopped(workdir)
    ended = latest == int(num_steps) or bool(
        stopped and stopped["rule"] == convergence.CONVERGED and stopped["step"] == latest)
    if ended and checkpoints.verify(workdir, latest) is False:
        _say(f"{checkpoints.step_directory(workdir, latest)} is damaged: trained again from the "
             "newest checkpoint that verifies")
        return False
    return ended


def loaded_step(workdir: str) -> int | None:
    """The step that evaluation and figures load from a training workdir: the best checkpoint's
    where the convergence rule kept one, else the latest (`workdirs.checkpoint_home`)."""
    return checkpoints.latest_step(workdirs.checkpoint_home(workdir))


def _checkpoint_mtime(workdir: str) -> float:
    """When the checkpoint that loaders read was written (the newest file in its folder: the
    best checkpoint where the convergence rule kept one, else the latest); 0 without one."""
    workdir = workdirs.checkpoint_home(workdir)
    step = checkpoints.latest_step(workdir)
    if step is None:
        return 0.0
    path = os.path.join(checkpoints.directory(workdir), str(step))
    times = [os.path.getmtime(path)] if os.path.exists(path) else [0.0]
    for root, _, names in os.walk(path):
        times += [os.path.getmtime(os.path.join(root, f)) for f in names]
    return max(times)


def _check_workdir_config(path: str, wanted, *, generative: bool = True) -> None:
    """Fails before any work if a training workdir holds another run (the trainer's own checks,
    `workdirs.check_resumable` and `train.check_not_past_the_end`, made up front, on the config
    as the trainer resolves it; the classifier's has no preset)."""
    workdirs.check_resumable(path, presets.resolve_config(wanted) if generative else wanted)
    train.check_not_past_the_end(path, int(wanted.training.num_steps))


def _read_json(path: str, default=None):
    """The JSON in `path`, or `default` if there is none. An unreadable file (cut by an older
    version's non-atomic write) counts as absent, with a warning: what it recorded is redone."""
    if not os.path.exists(path):
        return default
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        _say(f"warning: {path} is unreadable ({type(e).__name__}: {e}); it is redone")
        return default


def _write_json(path: str, value) -> None:
    files.write_json(path, evaluate.json_safe(value))


def _comparable(settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _plain(settings_dict).items() if k not in _NOT_COMPARED}


def evaluation_finished(output_dir: str, paths: Sequence[str], models: Sequence[str],
                        eval_settings: EvalSettings, classifier_dir: str | None) -> str | None:
    """None if `output_dir/results.json` scores these models' latest checkpoints (and the
    classifier's) with these settings and is newer than them; else why not."""
    path = os.path.join(output_dir, RESULTS_FILE)
    results = _read_json(path)
    if results is None:
        return "not evaluated yet"
    if [m["model"] for m in results["models"]] != list(models):
        return "the models changed"
    if [m["step"] for m in results["models"]] != [loaded_step(p) for p in paths]:
        return "the models were trained further"
    if _comparable(results["settings"]) != _comparable(eval_settings.to_dict()):
        return "the evaluation settings changed"
    newer = [_checkpoint_mtime(p) for p in paths]
    if classifier_dir is not None:
        info = results.get("classifier") or {}
        if info.get("num_steps") != checkpoints.latest_step(classifier_dir):
            return "the classifier changed"
        newer.append(_checkpoint_mtime(classifier_dir))
    if os.path.getmtime(path) < max(newer):
        return "a checkpoint is newer than the results"
    return None
