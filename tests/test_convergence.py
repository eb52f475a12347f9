"""The convergence rule (cmma_jax.convergence) alone and in the trainer: when it stops, what it
records, the best checkpoint that loaders read, replay on resume, and refusals."""

import json
import math
import os

import jax
import numpy as np
import pytest

from cmma_jax import checkpoints, convergence, train, workdirs

from conftest import TINY_DATA_OPTIONS
from test_train import tiny_config


def test_the_rule_counts_evaluations_without_an_improvement_beyond_the_margin():
    rule = convergence.Convergence(metric="val_elbo", patience=2, min_delta=5.0, every=10)
    assert rule.observe(10, 100.0)          # the first value is the best so far
    assert rule.observe(20, 106.0)          # +6 > 5: an improvement
    assert not rule.observe(30, 110.0)      # +4 <= 5: not one
    assert not rule.converged and rule.stale == 1
    assert rule.observe(40, 111.5)          # +5.5 over the best (106): an improvement again
    assert (rule.best, rule.best_step, rule.stale) == (111.5, 40, 0)
    assert not rule.observe(50, 90.0)
    assert not rule.observe(60, 116.0)      # +4.5: still no improvement
    assert rule.converged and rule.best_step == 40


def test_replay_reads_only_the_watched_metric_and_matches_live_observation():
    rows = [{"step": 2, "loss": 1.0}, {"step": 4, "val_elbo": -10.0}, {"step": 6, "loss": 2.0},
            {"step": 8, "val_elbo": -3.0}, {"step": 12, "val_elbo": -3.5}]
    live = convergence.Convergence("val_elbo", 3, 0.0, 4)
    for step, value in ((4, -10.0), (8, -3.0), (12, -3.5)):
        live.observe(step, value)
    replayed = convergence.Convergence("val_elbo", 3, 0.0, 4).replay(rows)
    assert (replayed.best, replayed.best_step, replayed.stale) == (live.best, live.best_step,
                                                                   live.stale) == (-3.0, 8, 1)


@pytest.mark.parametrize("field,value,match", [
    ("patience", 0, "stop_patience"), ("min_delta", -1.0, "stop_min_delta"),
    ("min_delta", math.nan, "stop_min_delta"), ("every", 0, "eval_every")])
def test_invalid_rules_are_refused_naming_the_field(field, value, match):
    kwargs = dict(metric="val_elbo", patience=2, min_delta=0.0, every=4)
    kwargs[field] = value
    with pytest.raises(ValueError, match=match):
        convergence.Convergence(**kwargs)


def _rule_config(data_dir, **training):
    # An unreachable margin: every evaluation after the first is "no improvement", so the rule
    # stops at a step known in advance (evaluations at 2, 4, 6; patience 2 -> step 6).
    settings = dict(num_steps=20, eval_every=2, checkpoint_every=4, sample_every=4, num_eval=16,
                    stop_patience=2, stop_min_delta=1e9)
    settings.update(training)
    return tiny_config(data_dir, **settings)


def _rows(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def converged_run(tiny_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("converged"))
    state = train.train_and_evaluate(_rule_config(tiny_data_dir), workdir)
    return workdir, state


def test_the_trainer_stops_records_why_and_keeps_the_best_checkpoint(converged_run):
    workdir, state = converged_run
    assert int(state.step) == 6
    stopped = convergence.read_stopped(workdir)
    assert stopped["rule"] == convergence.CONVERGED
    assert (stopped["step"], stopped["best_step"], stopped["evaluations_since_best"]) == (6, 2, 2)
    # 8 faces a batch, 256 tiny training faces (TINY_DATA_OPTIONS): step 6 is epoch 0.1875.
    assert stopped["epoch"] == pytest.approx(6 * 8 / TINY_DATA_OPTIONS["num_train"])
    rows = _rows(workdir)
    assert rows[-1]["step"] == 6 and rows[-1]["converged"] == 1.0 and rows[-1]["best_step"] == 2
    assert rows[-1]["best_val_elbo"] == pytest.approx(
        next(r["val_elbo"] for r in rows if r["step"] == 2))
    assert stopped["best"] == pytest.approx(rows[-1]["best_val_elbo"])
    # The stopped step is checkpointed (resumable), and the best one is kept apart.
    assert checkpoints.latest_step(workdir) == 6
    assert checkpoints.latest_step(convergence.best_workdir(workdir)) == 2


def test_loaders_read_the_best_checkpoint_by_default(converged_run):
    workdir, state = converged_run
    best = workdirs.load_model(workdir)
    latest = workdirs.load_model(workdir, best=False)
    assert (best.step, latest.step) == (2, 6)
    assert workdirs.load_model(workdir, step=6).step == 6
    for a, b in zip(jax.tree_util.tree_leaves(latest.params),
                    jax.tree_util.tree_leaves(jax.device_get(state.params)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(best.params), jax.tree_util.tree_leaves(latest.params)))


def test_rerunning_a_converged_run_trains_nothing(converged_run, tiny_data_dir):
    workdir, _ = converged_run
    before = open(os.path.join(workdir, "metrics.jsonl")).read()
    state = train.train_and_evaluate(_rule_config(tiny_data_dir), workdir)
    assert int(jax.device_get(state.step)) == 6
    assert open(os.path.join(workdir, "metrics.jsonl")).read() == before


def test_a_run_stopped_by_its_budget_then_resumed_stops_where_a_straight_run_does(
        converged_run, tiny_data_dir, tmp_path):
    straight, _ = converged_run
    workdir = str(tmp_path / "resumed")
    train.train_and_evaluate(_rule_config(tiny_data_dir, num_steps=4), workdir)
    stopped = convergence.read_stopped(workdir)
    assert (stopped["rule"], stopped["step"], stopped["best_step"]) == (
        convergence.BUDGET, 4, 2)
    train.train_and_evaluate(_rule_config(tiny_data_dir), workdir)  # the state is replayed
    assert convergence.read_stopped(workdir) == convergence.read_stopped(straight)
    for a, b in zip(jax.tree_util.tree_leaves(workdirs.load_model(workdir).params),
                    jax.tree_util.tree_leaves(workdirs.load_model(straight).params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_models_without_a_bound_are_refused_before_anything_is_written(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "cgan")
    with pytest.raises(ValueError, match="no validation bound"):
        train.train_and_evaluate(_rule_config(tiny_data_dir, model="cgan"), workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))
    with pytest.raises(ValueError, match="num_eval"):
        train.train_and_evaluate(_rule_config(tiny_data_dir, num_eval=0), workdir)
