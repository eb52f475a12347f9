"""benchmarks/quiet.py: the neighbours' share of the CPUs during a measurement, and the busy mark."""

import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import quiet  # noqa: E402


def test_share_is_the_machines_cpu_time_less_our_own(monkeypatch):
    machine = iter([100.0, 106.0])  # 6 CPU seconds used on the machine ...
    own = iter([10.0, 12.0])  # ... 2 of them by us
    clock = iter([0.0, 2.0])  # in 2 s of wall time
    monkeypatch.setattr(quiet, "_machine_busy_seconds", lambda: next(machine))
    monkeypatch.setattr(quiet, "_own_seconds", lambda: next(own))
    monkeypatch.setattr(quiet.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(quiet.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(quiet, "load_average", lambda: 0.5)
    with quiet.Monitor() as m:
        pass
    assert m.neighbours_share == pytest.approx(4.0 / (2.0 * 2))  # 4 s of 4 CPU-seconds
    assert m.busy() and m.summary()["busy"]
    assert "BUSY MACHINE" in quiet.describe([m.summary()])


def test_a_busy_neighbour_marks_the_measurement_busy():
    # A process that spins is started outside the measurement and waited for after it, so its
    # CPU time is not counted as ours; the measurement waits until it has used CPU time.
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with quiet.Monitor() as m:
            start = time.process_time()
            while quiet._machine_busy_seconds() - m._machine < 0.5:
                time.sleep(0.05)
            assert time.process_time() - start < 0.5  # we slept; the CPU time was the spinner's
    finally:
        spinner.kill()
        spinner.wait()
    assert m.neighbours_share > 0 and m.busy()


def test_records_without_conditions_are_said_to_be_unrecorded():
    assert quiet.describe([{"name": "x"}]) == ("The machine's load was not recorded for these "
                                               "measurements.")
