"""Tests of cmma_jax.curves (learning curves from metrics.jsonl) and launch/learning_curves.py,
on workdirs written here with known metrics (no training)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cmma_jax import curves, workdirs
from test_train import tiny_config

from conftest import run_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _workdir(path, tiny_data_dir, rows, batch_size=8):
    os.makedirs(path, exist_ok=True)
    config = tiny_config(tiny_data_dir, batch_size=batch_size)
    workdirs.write_records(str(path), config, ("a", "b"))
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 99, "val_el')  # a line cut by a kill mid-write
    return str(path)


def test_a_curve_is_read_in_epochs_of_the_training_split(tiny_data_dir, tmp_path):
    rows = [{"step": 16, "loss": 1.0}, {"step": 32, "val_elbo": -5.0, "loss": 0.5},
            {"step": 64, "val_elbo": -2.0}, {"step": 96, "val_elbo": -3.0}]
    workdir = _workdir(tmp_path / "w", tiny_data_dir, rows)
    assert curves.train_size(workdirs.read_workdir(workdir)[0]) == 256
    curve = curves.read_curve(workdir)
    np.testing.assert_array_equal(curve.steps, [32, 64, 96])
    np.testing.assert_allclose(curve.epochs, np.array([32, 64, 96]) * 8 / 256)
    np.testing.assert_array_equal(curve.values, [-5.0, -2.0, -3.0])
    table = curves.curve_table({"tiny": {"CMMA": [curve]}})
    assert f"| tiny | CMMA | {workdir} | 3.00 | -3.0 | -2.0 (2.00) |" in table


def test_a_missing_metric_names_the_metrics_there_are(tiny_data_dir, tmp_path):
    workdir = _workdir(tmp_path / "w", tiny_data_dir, [{"step": 2, "loss": 1.0, "kl": 2.0}])
    with pytest.raises(ValueError, match=r"no 'val_elbo' \(its metrics: \['kl', 'loss'\]\)"):
        curves.read_curve(workdir, examples_per_epoch=256)
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        curves.read_curve(str(tmp_path), examples_per_epoch=256)


def test_the_door_writes_table_curves_and_plot(tiny_data_dir, tmp_path):
    a = _workdir(tmp_path / "a", tiny_data_dir, [{"step": s, "val_elbo": float(s)}
                                                  for s in (32, 64)])
    b = _workdir(tmp_path / "b", tiny_data_dir, [{"step": s, "val_elbo": -float(s)}
                                                  for s in (32, 64, 96)], batch_size=16)
    out = tmp_path / "out" / "curves"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = run_command(
        [sys.executable, "launch/learning_curves.py", f"--output={out}",
         f"--run=small/CMMA={a},{b}", f"--run=paper/CVAE σ=0.05={b}", "--title=t"], cwd=REPO,
        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(open(f"{out}.json").read())
    assert list(saved) == ["small", "paper"] and list(saved["small"]) == ["CMMA"]
    assert list(saved["paper"]) == ["CVAE σ=0.05"]  # a label may hold "="
    assert saved["small"]["CMMA"][1]["epochs"] == [2.0, 4.0, 6.0]  # batch 16 over 256 faces
    from PIL import Image
    image = np.asarray(Image.open(f"{out}.png").convert("RGB"))
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # lines, text, not a blank page
    bad = run_command([sys.executable, "launch/learning_curves.py", "--run=nolabel=x"], cwd=REPO, env=env)
    assert bad.returncode != 0 and "expected panel/label=workdir" in bad.stderr
