"""`launch/train.py` end to end, as a user runs it: outputs, resuming, a hard kill and a
preemption notice (SIGTERM)."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from cmma_jax import train

from conftest import TINY_DATA_OPTIONS, run_command, wait_exit, wait_for

REPO = pathlib.Path(__file__).resolve().parents[1]


def _command(workdir, data_dir, *extra):
    options = [f"--config.data.options.{k}={v}" for k, v in TINY_DATA_OPTIONS.items()]
    return [sys.executable, str(REPO / "launch" / "train.py"), "--model", "cmma",
            "--preset=tiny", f"--workdir={workdir}", f"--prepared_dir={data_dir}",
            *options, "--config.training.batch_size=8", "--config.training.log_every=2",
            *extra]


def _env():
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(cmd):
    result = run_command(cmd, env=_env(), cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _final_params(workdir):
    _, _, state = train.load_trained(str(workdir))
    return jax.tree_util.tree_leaves(jax.device_get(state.params)), int(state.step)


@pytest.fixture(scope="module")
def cli_run(tiny_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli")
    result = _run(_command(workdir, tiny_data_dir, "--config.training.num_steps=8",
                           "--config.training.checkpoint_every=4"))
    return workdir, result


def test_cli_trains_and_writes_its_outputs(cli_run):
    workdir, result = cli_run
    assert "outputs in" in result.stdout and "step 8/8" in result.stdout
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]
    assert (workdir / "metrics.jsonl").exists()
    assert any(p.suffix == ".png" for p in (workdir / "samples").iterdir())


def test_cli_second_invocation_resumes(cli_run, tiny_data_dir):
    workdir, _ = cli_run
    result = _run(_command(workdir, tiny_data_dir, "--config.training.num_steps=10",
                           "--config.training.checkpoint_every=4"))
    # It starts from step 8, not from 0.
    assert "step 10/10" in result.stdout and "step 2/10" not in result.stdout
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
    assert steps == [2, 4, 6, 8, 10]
    assert _final_params(workdir)[1] == 10


def test_cli_killed_mid_run_and_restarted_ends_like_an_uninterrupted_run(cli_run, tiny_data_dir,
                                                                         tmp_path):
    reference, _ = cli_run
    ref_params, ref_step = _final_params_at(reference, 8)
    cmd = _command(tmp_path, tiny_data_dir, "--config.training.num_steps=8",
                   "--config.training.checkpoint_every=2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(), cwd=REPO)
    try:
        wait_for(lambda: (tmp_path / "checkpoints" / "4").exists(), [proc], "checkpoint 4")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _run(cmd)
    params, step = _final_params(tmp_path)
    assert step == ref_step == 8
    for a, b in zip(params, ref_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_cli_on_sigterm_checkpoints_its_step_and_exits_143(tiny_data_dir, tmp_path):
    """A scheduler's preemption notice: the run saves the step under way (there is no regular
    checkpoint to fall back on) and exits with SIGTERM's shell code, not 0."""
    cmd = _command(tmp_path, tiny_data_dir, "--config.training.num_steps=1000000",
                   "--config.training.checkpoint_every=1000000")
    log = tmp_path / "stderr.log"  # a file, not a pipe: a full pipe would stall the run
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(), cwd=REPO)
    try:
        metrics = tmp_path / "metrics.jsonl"
        wait_for(lambda: metrics.exists() and metrics.read_text().strip(), [proc],
                 "metrics (step 2)")
        proc.send_signal(signal.SIGTERM)
        wait_exit([proc])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Rerun the same command to resume" in stderr
    saved = [int(s) for s in os.listdir(tmp_path / "checkpoints")]
    assert len(saved) == 1 and saved[0] >= 2, saved
    assert _final_params(tmp_path)[1] == saved[0]


def _final_params_at(workdir, step):
    _, _, state = train.load_trained(str(workdir), step=step)
    return jax.tree_util.tree_leaves(jax.device_get(state.params)), int(state.step)


def test_cli_rejects_a_config_for_another_model(tiny_data_dir, tmp_path):
    cmd = _command(tmp_path, tiny_data_dir)
    cmd[cmd.index("--model") + 1] = "vlae"
    # A config file comes before its overrides on the command line.
    cmd.insert(cmd.index("--model") + 2, f"--config={REPO / 'cmma_jax' / 'configs' / 'cvae.py'}")
    result = run_command(cmd, env=_env(), cwd=REPO)
    assert result.returncode != 0
    assert "--model=vlae but the config file is for 'cvae'" in result.stderr


def test_cli_names_a_config_file_that_does_not_exist_in_one_line(tmp_path):
    result = run_command([sys.executable, "launch/train.py", f"--config={tmp_path}/nope.py:small",
                          f"--workdir={tmp_path / 'w'}"], env=_env(), cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.strip() == (f"--config={tmp_path}/nope.py: no such config file (give the "
                                     "path of a config file, e.g. cmma_jax/configs/cmma.py, or "
                                     "leave --config out and pass --model).")
    assert not (tmp_path / "w").exists()
