"""Tests of the generic trainer (cmma_jax.train) on the tiny preset and a small synthetic dataset:
outputs, exact resumption, preemption, the compile guard, non-finite stops and config errors."""

import json
import os

import jax
import numpy as np
import pytest

from cmma_jax import parallel, presets, train
from cmma_jax.configs import cmma as cmma_config
from cmma_jax.models import MODELS

from conftest import TINY_DATA_OPTIONS


def tiny_config(data_dir, model="cmma", **training):
    from cmma_jax import configs

    config = configs.CONFIGS[model].get_config("tiny")
    config.data.prepared_dir = data_dir
    config.data.options = dict(TINY_DATA_OPTIONS)
    config.training.batch_size = 8
    config.training.num_steps = 8
    config.training.log_every = 2
    config.training.checkpoint_every = 4
    config.training.sample_every = 4
    config.training.update(training)
    return config


def _params(state):
    return jax.tree_util.tree_leaves(jax.device_get(state.params))


def _assert_same_params(a, b, **tol):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


@pytest.fixture(scope="module")
def straight_run(tiny_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight"))
    state = train.train_and_evaluate(tiny_config(tiny_data_dir), workdir)
    return workdir, state


def test_a_run_writes_checkpoints_metrics_and_samples(straight_run):
    workdir, state = straight_run
    assert int(state.step) == 8
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [l["step"] for l in lines] == [2, 4, 6, 8]
    for key in ("loss", "elbo", "log_likelihood", "kl", "grad_norm", "param_norm",
                "steps_per_sec", "images_per_sec"):
        assert all(np.isfinite(l[key]) for l in lines), key
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "step_0000004.png", "step_0000008.png"]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["model"]["name"] == "cmma" and config["model"]["preset"] == "tiny"
    assert len(json.load(open(os.path.join(workdir, "attributes.json")))) >= 12


def test_the_validation_bound_is_logged_every_sample_interval_by_default(straight_run):
    workdir, _ = straight_run
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [l["step"] for l in lines if "val_elbo" in l] == [4, 8]
    for line in lines:
        if "val_elbo" in line:
            np.testing.assert_allclose(line["val_elbo"],
                                       line["val_log_likelihood"] - line["val_kl"], rtol=1e-5)
            assert line["val_kl"] >= 0


def test_the_logged_validation_bound_agrees_with_a_monte_carlo_reference(straight_run,
                                                                          tiny_data_dir):
    """The hook's val_elbo (one posterior draw a face, on all 32 validation faces) against the
    mean of 64 independent draws a face from the model's own `bound`, on the validation faces
    read here independently: they differ by Monte Carlo noise alone, whose standard error comes
    from the per-face spread of the draws."""
    from cmma_jax import data

    workdir, state = straight_run
    config = presets.resolve_config(tiny_config(tiny_data_dir))
    with data.load_split(config.data, "validation", batch_size=8, seed=0, shard_index=0,
                         shard_count=1) as val:
        batches = list(val.iterator)
    x = np.concatenate([b["image"] for b in batches])
    y = np.concatenate([b["attributes"] for b in batches])
    assert len(x) == TINY_DATA_OPTIONS["num_validation"]
    params = jax.device_get(state.params)
    bound = jax.jit(lambda k: MODELS["cmma"].bound(params, {"image": x, "attributes": y}, k,
                                                   config=config).elbo)
    draws = np.stack([bound(jax.random.key(1000 + r)) for r in range(64)])  # [64, faces]
    reference = draws.mean()
    # The logged value is a mean over faces of one draw each: its variance is
    # sum_i var_i / n^2; the reference's is 64 times smaller.
    per_face_var = draws.var(axis=0, ddof=1)
    se = np.sqrt(per_face_var.sum() * (1 + 1 / 64)) / len(x)
    logged = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))][-1]
    assert logged["step"] == 8
    assert abs(logged["val_elbo"] - reference) < 5 * se + 1e-3 * abs(reference), (
        logged["val_elbo"], reference, se)


def test_stopping_and_resuming_gives_the_same_parameters(straight_run, tiny_data_dir,
                                                         tmp_path):
    _, straight = straight_run
    workdir = str(tmp_path)
    # Stop after 5 steps: the checkpoint of step 4 survives, step 5 is lost as in a crash...
    config = tiny_config(tiny_data_dir, num_steps=5, checkpoint_every=4)
    train.train_and_evaluate(config, workdir)
    import shutil
    shutil.rmtree(os.path.join(workdir, "checkpoints", "5"))
    # ... and the same command with the full length resumes from step 4.
    resumed = train.train_and_evaluate(tiny_config(tiny_data_dir), workdir)
    assert int(resumed.step) == 8
    _assert_same_params(resumed, straight, rtol=1e-6, atol=1e-7)
    steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert steps[-2:] == [6, 8]


def test_a_preemption_notice_checkpoints_the_step_under_way_and_the_rerun_ends_the_same(
        straight_run, tiny_data_dir, tmp_path, monkeypatch):
    """SIGTERM arrives during step 5's hooks: step 6, off the checkpoint grid, is saved, the run
    raises `Preempted`, SIGTERM's handler is given back, and the rerun resumes from step 6 to
    the same parameters as a run never stopped."""
    import signal

    _, straight = straight_run
    original_call = train.SampleWriter.__call__

    def call_then_preempt(self, state, step):
        original_call(self, state, step)
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train.SampleWriter, "__call__", call_then_preempt)
    handler_before = signal.getsignal(signal.SIGTERM)
    config = tiny_config(tiny_data_dir, sample_every=5)
    with pytest.raises(train.Preempted, match=r"after step 6.*Rerun the same command") as info:
        train.train_and_evaluate(config, str(tmp_path))
    assert info.value.step == 6
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["4", "6"]
    steps = [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")]
    assert steps[-1] == 6

    monkeypatch.setattr(train.SampleWriter, "__call__", original_call)
    resumed = train.train_and_evaluate(config, str(tmp_path))
    assert int(resumed.step) == 8
    _assert_same_params(resumed, straight, rtol=1e-6, atol=1e-7)
    assert signal.getsignal(signal.SIGTERM) is handler_before


def test_the_step_is_traced_once(tiny_data_dir, tmp_path, monkeypatch):
    model = MODELS["cmma"]
    original = model.train_step
    traces = []

    def counting_step(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "train_step", counting_step)
    train.train_and_evaluate(tiny_config(tiny_data_dir, num_steps=6), str(tmp_path))
    assert len(traces) == 1


def test_a_non_finite_loss_stops_with_the_step_and_term_and_keeps_the_checkpoint(
        tiny_data_dir, tmp_path, monkeypatch):
    model = MODELS["cmma"]
    original = model.train_step

    def poisoned_step(state, batch, key, **kwargs):
        new_state, metrics = original(state, batch, key, **kwargs)
        # From step 5 on (state.step == 4 before the update), the KL is NaN.
        metrics["kl"] = jax.numpy.where(state.step >= 4, jax.numpy.nan, metrics["kl"])
        return new_state, metrics

    monkeypatch.setattr(model, "train_step", poisoned_step)
    with pytest.raises(train.NonFiniteError, match=r"Non-finite kl at step 5.*step 4"):
        train.train_and_evaluate(tiny_config(tiny_data_dir), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4"]


def test_a_non_finite_loss_before_the_first_checkpoint_says_there_is_none(
        tiny_data_dir, tmp_path, monkeypatch):
    model = MODELS["cmma"]
    original = model.train_step

    def poisoned_step(state, batch, key, **kwargs):
        new_state, metrics = original(state, batch, key, **kwargs)
        return new_state, dict(metrics, loss=metrics["loss"] * jax.numpy.nan)

    monkeypatch.setattr(model, "train_step", poisoned_step)
    with pytest.raises(train.NonFiniteError,
                       match=r"Non-finite loss at step 1.*No checkpoint was written before it"):
        train.train_and_evaluate(tiny_config(tiny_data_dir), str(tmp_path))


def test_config_errors_come_before_any_compilation(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir)
    config.model.name = "vae"
    with pytest.raises(ValueError, match=r"Unknown model 'vae'.*cmma"):
        train.train_and_evaluate(config, str(tmp_path))
    config = tiny_config(tiny_data_dir)
    config.data.name = "mnist"
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist'.*synthetic_faces"):
        train.train_and_evaluate(config, str(tmp_path))
    config = tiny_config(tiny_data_dir)
    config.data.num_attributes = 7
    with pytest.raises(ValueError, match=r"num_attributes=7.*has \d+ attributes"):
        train.train_and_evaluate(config, str(tmp_path))
    with pytest.raises(ValueError, match=r"batch_size=10 is not divisible by the 4 devices"):
        parallel.check_batch_size(10, num_devices=4, num_processes=1)
    assert not os.path.exists(tmp_path / "checkpoints")


def test_auto_preset_is_small_on_cpu_and_fills_unset_training_fields():
    config = cmma_config.get_config()
    config.model.preset = "auto"
    config.training.batch_size = None
    config.training.num_steps = 123
    resolved = presets.resolve_config(config)
    assert resolved.model.preset == ("small" if jax.default_backend() == "cpu" else "paper")
    assert resolved.training.num_steps == 123  # set: kept
    assert resolved.training.batch_size is not None  # unset: from the preset


@pytest.mark.parametrize("step, num_steps, most, cadences, expected", [
    (0, 8, 1, [2], 1),         # one step a call: always one
    (0, 8, 2, [2, 4], 2),      # steps 1 and 2: only 2, the call's last, completes a cadence
    (1, 8, 2, [2, 4], 1),      # steps 2 and 3: 2 is inside the call, so one step
    (6, 8, 2, [2, 4], 2),      # steps 7 and 8: the last step may end a call
    (7, 8, 2, [2, 4], 1),      # steps 8 and 9: past the end
    (0, 100, 4, [50, 10], 4),  # steps 1-4
    (8, 100, 4, [50, 10], 1),  # steps 9-12 hold 10
    (4, 100, 4, [50, 10], 4),  # steps 5-8
    (0, 8, 3, [2], 1),         # 3 never fits between multiples of 2
    (0, 9, 3, [3, 0], 3),      # a cadence of 0 is no cadence
])
def test_steps_in_call(step, num_steps, most, cadences, expected):
    from cmma_jax import steps
    assert steps.steps_in_call(step, num_steps, most, cadences) == expected


def test_steps_in_call_refuses_fewer_than_one():
    from cmma_jax import steps
    with pytest.raises(ValueError, match="steps_per_call must be at least 1"):
        steps.steps_in_call(0, 8, 0, [2])


def test_two_steps_a_call_train_the_same_run(straight_run, tiny_data_dir, tmp_path):
    """`training.steps_per_call=2`: every call runs two steps (the cadences are even), each
    with its own batch and key, so the run logs, samples and saves the same steps and ends
    with the parameters and losses of the run that calls one step at a time (the same
    arithmetic; XLA may order the sums of one compiled program differently: rounding)."""
    straight_dir, straight = straight_run
    config = tiny_config(tiny_data_dir, steps_per_call=2)
    calls = []
    original = train.StepFunctions.run

    def counting_run(self, state, batches, keys):
        calls.append(len(batches))
        return original(self, state, batches, keys)

    import unittest.mock
    with unittest.mock.patch.object(train.StepFunctions, "run", counting_run):
        state = train.train_and_evaluate(config, str(tmp_path))
    assert calls == [2, 2, 2, 2]
    assert int(state.step) == 8
    _assert_same_params(state, straight, rtol=1e-5, atol=1e-6)
    ours = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    theirs = [json.loads(l) for l in open(os.path.join(straight_dir, "metrics.jsonl"))]
    assert [l["step"] for l in ours] == [l["step"] for l in theirs] == [2, 4, 6, 8]
    np.testing.assert_allclose([l["loss"] for l in ours], [l["loss"] for l in theirs],
                               rtol=1e-5)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "8"]

