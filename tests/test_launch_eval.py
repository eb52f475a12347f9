"""The evaluation doors end to end, as a user runs them: launch/train_classifier.py, then
launch/evaluate.py with that classifier, and launch/generate.py, on tiny trained models. (The doors
only parse flags; the errors they can show are tested in-process, e.g. an unknown attribute in
test_figures.py.)"""

import json
import os
import subprocess
import sys

import pytest

from conftest import TINY_DATA_OPTIONS, run_command

import eval_helpers

REPO = eval_helpers.repo_root()


def _run(args, expect_ok=True):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = run_command([sys.executable, *args], env=env,
                            cwd=REPO)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def workdirs(tiny_data_dir, tmp_path_factory):
    return eval_helpers.trained_workdirs(tiny_data_dir, tmp_path_factory)


def test_train_a_classifier_then_evaluate_with_it(workdirs, tiny_data_dir, tmp_path):
    classifier_dir = tmp_path / "classifier"
    options = [f"--config.data.options.{k}={v}" for k, v in TINY_DATA_OPTIONS.items()]
    result = _run(["launch/train_classifier.py", f"--workdir={classifier_dir}",
                   "--dataset=synthetic_faces", f"--prepared_dir={tiny_data_dir}", *options,
                   "--num_steps=4", "--config.training.batch_size=8",
                   "--config.model.input_pool=4", "--config.training.log_every=2"])
    assert "Done at step 4: validation accuracy" in result.stdout
    assert os.path.isdir(classifier_dir / "checkpoints" / "4")

    out = tmp_path / "results"
    result = _run(["launch/evaluate.py", f"--workdirs={workdirs['cmma']}",
                   f"--classifier_workdir={classifier_dir}", f"--output_dir={out}",
                   "--num_test=8", "--batch_size=8", "--iwae_samples=1,3",
                   "--iwae_sample_chunk=3", "--parzen_num_test=4", "--parzen_num_validation=4",
                   "--parzen_samples=4", "--parzen_batch=4", "--parzen_sample_chunk=4",
                   "--parzen_sigmas=0.1,0.3"])
    assert "results.md" in result.stdout
    assert "[cmma] Parzen test: 4/4 (100%)" in result.stderr  # progress lines
    results = json.load(open(out / "results.json"))
    (cmma,) = results["models"]
    assert {"bound", "iwae", "parzen", "fidelity"} <= set(cmma)
    assert results["settings"]["iwae_samples"] == [1, 3]
    table = open(out / "results.md").read()
    assert "| cmma (`" in table and "IWAE K=3 (nats)" in table


def test_generate_draws_the_chosen_figures(workdirs, tmp_path):
    result = _run(["launch/generate.py", f"--workdirs={workdirs['cmma']},{workdirs['cvae']}",
                   f"--output_dir={tmp_path}", "--figures=attributes,edits", "--faces=0,2",
                   "--columns=Eyeglasses,Smiling", "--pool_size=32", "--png_colors=64"])
    assert "Wrote 2 figure(s)" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["edits.png", "faces_from_attributes.png"]
