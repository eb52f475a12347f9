"""The scripts of examples/ run as a researcher would run them (small sizes)."""

import pathlib
import sys

from PIL import Image

from conftest import run_command

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
    result = run_command([sys.executable, *map(str, args)], cwd=str(REPO))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_own_model_with_the_cmma_bound_and_an_mmd_penalty_trains():
    out = _run("examples/own_model_cmma_bound.py", "--steps", "60").splitlines()
    bounds = [float(line.split("bound ")[1].split()[0]) for line in out if "bound" in line]
    assert len(bounds) >= 2 and bounds[-1] > bounds[0]  # the bound rises


def test_iwae_and_parzen_of_your_own_sampler():
    out = _run("examples/evaluate_own_sampler.py")
    assert "IWAE bound by K:" in out and "Parzen: sigma" in out
    import ast
    bounds = ast.literal_eval(out.split("IWAE bound by K: ")[1].splitlines()[0])
    assert bounds[1] <= bounds[10] <= bounds[100]  # tightens with K (one draw each; wide gaps)


def test_faces_from_attributes_from_a_workdir(tiny_data_dir, tmp_path):
    from cmma_jax import train
    from test_train import tiny_config

    workdir = tmp_path / "cmma"
    train.train_and_evaluate(tiny_config(tiny_data_dir, num_steps=2), str(workdir))
    _run("examples/generate_from_workdir.py", workdir, tmp_path / "faces.png")
    assert Image.open(tmp_path / "faces.png").width > 5 * 64
