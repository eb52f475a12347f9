"""Test-wide settings.

Rank promotion raises, so that a silently broadcast shape is an error in every test. Tests run on
CPU in float32 unless a test asks for float64 explicitly (`jax.experimental.enable_x64`).
"""

import atexit
import os
import shutil
import tempfile

# Keep XLA from grabbing every core for its own thread pool on small CI machines; tests are tiny.
os.environ.setdefault("XLA_FLAGS", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the session, shared with the subprocesses the tests start
# (the CLI doors, multihost, the benchmark dry runs): the tests build the same tiny programs again
# and again, in new jitted closures and new processes (on test_workdirs + test_train the cache cut
# 111 s to 69 s; on the whole suite, 1,095 s to 970 s). The cache is keyed by the program, its
# options and the JAX version, so a hit runs the same executable. It starts empty (nothing is
# carried between sessions) and is removed at exit; a JAX_COMPILATION_CACHE_DIR set by the user
# is used as it is and kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="cmma_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# The data builders remember folder digests (cmma_jax.data._builder.cache_dir): in a session
# folder, not the user's ~/.cache, and shared with the subprocesses.
if "CMMA_JAX_CACHE_DIR" not in os.environ:
    _DIGESTS_DIR = tempfile.mkdtemp(prefix="cmma_jax_tests_cache_")
    atexit.register(shutil.rmtree, _DIGESTS_DIR, ignore_errors=True)
    os.environ["CMMA_JAX_CACHE_DIR"] = _DIGESTS_DIR

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
