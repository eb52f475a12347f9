"""scripts/paired_table.py: paired per-face differences along a chain of models, per seed and
across seeds, against values computed here by hand on constructed scores."""

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "paired_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("paired_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def seeded_files(tmp_path):
    """Seed s: model a's scores are base_s (random, 50 faces); model b's are base_s + 5 + 2s on
    every face but the first, where b is 1,000 lower. So b − a per seed has a known mean."""
    rng = np.random.default_rng(0)
    for s in range(3):
        base = rng.normal(10_000, 300, size=50)
        b = base + 5 + 2 * s
        b[0] = base[0] - 1_000
        np.savez(tmp_path / f"a_{s}.npz", **{"0_cmma/bound": base})
        np.savez(tmp_path / f"b_{s}.npz", **{"1_cvae/bound": b})
    return tmp_path


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_across_seeds_the_mean_difference_has_the_spread_of_the_seeds(seeded_files):
    entries = [("a", str(seeded_files / "a_{seed}.npz"), "0_cmma"),
               ("b", str(seeded_files / "b_{seed}.npz"), "1_cvae")]
    lines = _module().chain_table(entries, "bound", seeds=[0, 1, 2])
    assert _cells(lines[0]) == ["model", "seed 0", "seed 1", "seed 2", "across seeds"]
    b_row = _cells(lines[3])
    per_seed = []
    for s in range(3):
        a = np.load(seeded_files / f"a_{s}.npz")["0_cmma/bound"]
        b = np.load(seeded_files / f"b_{s}.npz")["1_cvae/bound"]
        d = b - a
        expected_mean = (49 * (5 + 2 * s) - 1_000) / 50
        assert d.mean() == pytest.approx(expected_mean)
        per_seed.append(expected_mean)
        se = d.std(ddof=1) / np.sqrt(50)
        assert f"{expected_mean:+,.1f} ± {se:.1f} (98% higher)" in b_row[1 + s]
    diffs = np.array(per_seed)
    # Across seeds: (5, 7, 9) * 49/50 - 20: mean 6.86 - 20, spread std 1.96 / sqrt(3).
    assert b_row[4].endswith(f"; {diffs.mean():+,.1f} ± {diffs.std(ddof=1) / np.sqrt(3):.1f}")
    assert b_row[4].endswith("; -13.1 ± 1.1")


def test_one_evaluation_prints_the_paired_chain(seeded_files):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--estimators=bound",
         f"a={seeded_files / 'a_0.npz'}:0_cmma", f"b={seeded_files / 'b_0.npz'}:1_cvae"],
        capture_output=True, text=True, check=True)
    rows = [l for l in result.stdout.splitlines() if l.startswith("| b ")]
    assert len(rows) == 1
    cells = _cells(rows[0])
    assert cells[2].startswith("-15.1 ± ") and cells[3] == "98%" and cells[4] == "50"


def test_seeds_without_a_seed_in_the_path_is_refused(seeded_files):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--seeds=0,1", f"a={seeded_files / 'a_0.npz'}:0_cmma"],
        capture_output=True, text=True)
    assert result.returncode != 0 and "has no {seed}" in result.stderr
