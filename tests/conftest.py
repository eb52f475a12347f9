"""Test-wide settings.

Rank promotion raises, so that a silently broadcast shape is an error in every test. Tests run on
CPU in float32 unless a test asks for float64 explicitly (`jax.experimental.enable_x64`).
"""

import os

# Keep XLA from grabbing every core for its own thread pool on small CI machines; tests are tiny.
os.environ.setdefault("XLA_FLAGS", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402

# A small synthetic_faces dataset shared by the tests that train (models, trainer, CLI).
TINY_DATA_OPTIONS = {"num_train": 256, "num_validation": 32, "num_test": 32}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A prepared 256/32/32 synthetic_faces dataset in a temporary data_dir."""
    from cmma_jax.data import pipeline

    data_dir = tmp_path_factory.mktemp("tfds")
    pipeline.prepare("synthetic_faces", prepared_dir=str(data_dir), options=TINY_DATA_OPTIONS)
    return str(data_dir)


def kill_and_expect_no_survivors(run, children):
    """Kills `run` (a `subprocess.Popen`) with SIGKILL, so that none of its clean-up runs, and
    asserts that every one of its `children` (psutil processes) is gone within 10 s. Whatever
    happens, nothing is left running."""
    import signal  # pylint: disable=g-import-not-at-top

    import psutil  # pylint: disable=g-import-not-at-top

    try:
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [(c.pid, c.cmdline()) for c in alive]
    finally:
        if run.poll() is None:
            run.kill()
        for c in children:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
