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
    asserts that every one of its `children` (psutil processes) ends (a child that outlives it
    idles, and fails `wait_for`'s hang rule). Whatever happens, nothing is left running."""
    import signal  # pylint: disable=g-import-not-at-top

    import psutil  # pylint: disable=g-import-not-at-top

    try:
        os.kill(run.pid, signal.SIGKILL)
        run.wait()  # SIGKILL cannot be caught: this returns

        def alive(c):
            try:
                return c.is_running() and c.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                return False

        def gone():
            return not [c for c in children if alive(c)]

        wait_for(gone, children, "the children to end", expect_alive=False)
    finally:
        if run.poll() is None:
            run.kill()
        for c in children:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass


# How long the processes a test waits on may use no CPU at all before the test calls them hung.
# A slow or loaded machine only makes a wait longer (the processes still get CPU time); a hang
# (a deadlock, a process waiting for a peer that is gone) uses none and fails. The absolute limit
# only keeps a test that spins forever from running forever.
STALL_SECONDS = 120.0
LIMIT_SECONDS = 3600.0


def _cpu_seconds(procs) -> float:
    """CPU time used so far by `procs` (`subprocess.Popen`s) and all their descendants."""
    import psutil  # pylint: disable=g-import-not-at-top

    total = 0.0
    for p in procs:
        try:
            root = psutil.Process(p.pid)
            for q in [root, *root.children(recursive=True)]:
                times = q.cpu_times()
                # Children it has reaped count too: otherwise the total drops when a busy child
                # ends, and the next ones look idle until they have used as much (a false hang).
                total += (times.user + times.system + getattr(times, "children_user", 0.0)
                          + getattr(times, "children_system", 0.0))
        except psutil.Error:
            continue
    return total


def wait_for(condition, procs, what: str, *, expect_alive: bool = True,
             stall_seconds: float = STALL_SECONDS) -> None:
    """Waits until `condition()` is true (an event: a file, a line, a process state).

    Fails if a process of `procs` ends first (with `expect_alive`), or if the processes have used
    no CPU for `stall_seconds` (hung), never because the machine is slow.
    """
    import time  # pylint: disable=g-import-not-at-top

    start = last_progress = time.monotonic()
    cpu = _cpu_seconds(procs)
    while not condition():
        if expect_alive:
            ended = [p.args if isinstance(p.args, str) else " ".join(map(str, p.args))[:200]
                     for p in procs if p.poll() is not None]
            assert not ended, f"a process ended before {what}: {ended}"
        now = time.monotonic()
        used = _cpu_seconds(procs)
        if used > cpu + 0.05:
            cpu, last_progress = used, now
        assert now - last_progress < stall_seconds, (
            f"no {what}: the processes used no CPU for {stall_seconds:.0f} s (hung)")
        assert now - start < LIMIT_SECONDS, f"no {what} after {LIMIT_SECONDS:.0f} s"
        time.sleep(0.05)


def wait_exit(procs, what: str = "the processes to exit", *,
              stall_seconds: float = STALL_SECONDS) -> list[int]:
    """Waits until every process of `procs` has exited and returns their exit codes; fails (and
    kills them) if they hang (`wait_for`'s rule)."""
    try:
        wait_for(lambda: all(p.poll() is not None for p in procs), procs, what,
                 expect_alive=False, stall_seconds=stall_seconds)
    except AssertionError:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        raise
    return [p.returncode for p in procs]


def run_command(cmd, **popen_kwargs):
    """`subprocess.run(cmd, capture_output=True, text=True, **popen_kwargs)` whose wait fails on
    a hang (`wait_exit`) rather than at a fixed timeout that a loaded machine can exceed."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import tempfile as _tempfile  # pylint: disable=g-import-not-at-top

    with _tempfile.TemporaryFile("w+") as out, _tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **popen_kwargs)
        wait_exit([proc], f"{' '.join(map(str, cmd))[:120]} to finish")
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
