"""Several processes with jax.distributed on localhost (CPU collectives): two processes train like
one process with the same global batch, and a kill of one process ends the other with an error;
a restart of both resumes from the checkpoint. Loopback only; the waits fail on a hang (no CPU
used), not on a slow machine."""

import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cmma_jax import train

from conftest import TINY_DATA_OPTIONS, wait_exit, wait_for

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(workdir, data_dir, process_id, port, checkpoint_every, num_steps=STEPS):
    options = [f"--config.data.options.{k}={v}" for k, v in TINY_DATA_OPTIONS.items()]
    return [sys.executable, str(REPO / "launch" / "train.py"), "--model", "cmma", "--preset=tiny",
            f"--workdir={workdir}", f"--prepared_dir={data_dir}", *options,
            "--config.training.batch_size=8", f"--config.training.num_steps={num_steps}",
            f"--config.training.checkpoint_every={checkpoint_every}",
            "--config.training.log_every=2", f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2", f"--process_id={process_id}", "--initialization_timeout=120",
            "--heartbeat_timeout_seconds=15"]


def _start_both(workdir, data_dir, checkpoint_every, num_steps=STEPS):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    port = _free_port()
    logs = [open(pathlib.Path(workdir).parent / f"{pathlib.Path(workdir).name}_p{i}.log", "w")
            for i in range(2)]
    procs = [subprocess.Popen(_command(workdir, data_dir, i, port, checkpoint_every, num_steps),
                              stdout=logs[i], stderr=subprocess.STDOUT, env=env, cwd=REPO)
             for i in range(2)]
    return procs, logs


def _wait(procs):
    """Both exit codes; fails if the processes hang (no CPU used: `conftest.wait_exit`), never
    because a loaded machine makes them slow."""
    return wait_exit(procs, "both processes to exit")


def _params(workdir, step=None):
    _, _, state = train.load_trained(str(workdir), step=step)
    return int(state.step), jax.tree_util.tree_leaves(jax.device_get(state.params))


@pytest.fixture(scope="module")
def one_process(tiny_data_dir, tmp_path_factory):
    from cmma_jax import configs

    config = configs.CONFIGS["cmma"].get_config("tiny")
    config.data.prepared_dir = tiny_data_dir
    config.data.options = dict(TINY_DATA_OPTIONS)
    config.training.update(batch_size=8, num_steps=STEPS, log_every=2, checkpoint_every=3)
    workdir = tmp_path_factory.mktemp("one_process")
    train.train_and_evaluate(config, str(workdir))
    return _params(workdir)


def _assert_close(a, b):
    assert a[0] == b[0] == STEPS
    for x, y in zip(a[1], b[1], strict=True):
        # Only the order of the gradient sums differs (an all-reduce over two processes).
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_two_processes_train_like_one(one_process, tiny_data_dir, tmp_path):
    workdir = tmp_path / "two"
    procs, logs = _start_both(workdir, tiny_data_dir, checkpoint_every=3)
    codes = _wait(procs)
    for log in logs:
        log.close()
    assert codes == [0, 0], (tmp_path / "two_p0.log").read_text()[-3000:]
    _assert_close(_params(workdir), one_process)
    # Only process 0 writes the logs and the sample grids.
    assert (workdir / "metrics.jsonl").exists() and (workdir / "samples").exists()
    assert "step 6/6" in (tmp_path / "two_p0.log").read_text()
    assert "step 6/6" not in (tmp_path / "two_p1.log").read_text()


def test_a_killed_process_stops_the_other_and_both_resume(one_process, tiny_data_dir, tmp_path):
    workdir = tmp_path / "killed"
    procs, logs = _start_both(workdir, tiny_data_dir, checkpoint_every=2)
    wait_for(lambda: (workdir / "checkpoints" / "2").exists(), procs, "checkpoint 2")
    procs[1].send_signal(signal.SIGKILL)
    codes = _wait(procs)  # the survivor must not hang: it stops, or uses no CPU and fails
    for log in logs:
        log.close()
    assert codes[0] != 0
    # Restart both with the same commands: they resume and end like one uninterrupted process.
    procs, logs = _start_both(workdir, tiny_data_dir, checkpoint_every=2)
    codes = _wait(procs)
    for log in logs:
        log.close()
    assert codes == [0, 0], (tmp_path / "killed_p0.log").read_text()[-3000:]
    _assert_close(_params(workdir), one_process)


def test_sigterm_to_one_process_checkpoints_one_step_for_both_and_both_exit_143(
        tiny_data_dir, tmp_path):
    """A preemption notice reaches one host: JAX's preemption service agrees a step with the
    other, both save it (one checkpoint, no regular one to fall back on) and both exit with
    SIGTERM's shell code."""
    workdir = tmp_path / "preempted"
    procs, logs = _start_both(workdir, tiny_data_dir, checkpoint_every=1000000,
                              num_steps=1000000)
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().strip(), procs, "metrics")
    procs[1].send_signal(signal.SIGTERM)
    codes = _wait(procs)
    for log in logs:
        log.close()
    assert codes == [128 + signal.SIGTERM] * 2, (tmp_path / "preempted_p0.log").read_text()[-3000:]
    saved = [int(s) for s in os.listdir(workdir / "checkpoints")]
    assert len(saved) == 1 and saved[0] >= 2, saved
    assert _params(workdir)[0] == saved[0]
