"""Tests of cmma_jax.reproduce: the whole protocol end to end on the tiny preset (two seeds, the
CMMA and the CVAE, a tiny classifier), a rerun that redoes nothing, a seed added later, a refused
change of preset, and the across-seed arithmetic against numpy."""

import json
import math
import os

import numpy as np
import pytest

from cmma_jax import checkpoints, classifier, evaluate, figures, reproduce, train
from conftest import TINY_DATA_OPTIONS, run_command

TRAINING = {"training.batch_size": 8, "training.num_steps": 2, "training.log_every": 1,
            "training.checkpoint_every": 2, "training.sample_every": 2}
CLASSIFIER = {"model.features": (4, 4), "model.hidden": 8, "model.input_pool": 4,
              "training.batch_size": 16, "training.log_every": 2, "training.eval_every": 100,
              "training.checkpoint_every": 100, "training.num_eval": 16}


def _settings(data_dir, seeds=(0, 1), **changes):
    values = dict(
        dataset="synthetic_faces", prepared_dir=data_dir, preset="tiny", seeds=seeds,
        models=("cvae", "cmma"),  # put back in the order cmma, cvae
        classifier_steps=4, classifier_overrides=CLASSIFIER, overrides=TRAINING,
        data_options=TINY_DATA_OPTIONS,
        evaluation=evaluate.EvalSettings(
            num_test=8, batch_size=8, iwae_samples=(1, 4), iwae_sample_chunk=4,
            parzen_num_test=4, parzen_num_validation=4, parzen_samples=4, parzen_batch=2,
            parzen_sample_chunk=4, parzen_sigmas=(0.05, 0.2, 0.8), show_progress=False),
        figures=figures.FigureSettings(figures=("attributes",), pool_size=32,
                                       num_faces=2))
    values.update(changes)
    return reproduce.ReproduceSettings(**values)


class _Calls:
    """Counts the calls of the stages' library functions (and still runs them)."""

    def __init__(self, monkeypatch):
        self.counts = {}
        for module, name in ((train, "train_and_evaluate"), (classifier, "train_classifier"),
                             (evaluate, "evaluate_workdirs"), (figures, "generate_figures")):
            self._wrap(monkeypatch, module, name)

    def _wrap(self, monkeypatch, module, name):
        original = getattr(module, name)

        def counted(*args, **kwargs):
            self.counts[name] = self.counts.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


@pytest.fixture(scope="module")
def run(tiny_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reproduce") / "run")
    mp = pytest.MonkeyPatch()
    calls = _Calls(mp)
    try:
        report = reproduce.reproduce(_settings(tiny_data_dir, seeds=(0,)), workdir,
                                     command="pytest run")
    finally:
        mp.undo()
    return workdir, report, calls.counts


def test_the_protocol_runs_end_to_end_into_its_layout(run):
    workdir, report, counts = run
    assert counts == {"train_and_evaluate": 2, "train_classifier": 1, "evaluate_workdirs": 1,
                      "generate_figures": 1}
    for seed in (0,):
        for model in ("cmma", "cvae"):
            path = os.path.join(workdir, f"seed_{seed}", model)
            assert checkpoints.latest_step(path) == 2
            with open(os.path.join(path, "config.json")) as f:
                assert json.load(f)["training"]["seed"] == seed
        results = os.path.join(workdir, "evaluation", f"seed_{seed}")
        for name in ("results.json", "results.md", "per_face.npz"):
            assert os.path.exists(os.path.join(results, name))
        with open(os.path.join(results, "results.json")) as f:
            results = json.load(f)
        assert [m["model"] for m in results["models"]] == ["cmma", "cvae"]
        assert results["models"][0]["fidelity"] is not None
        assert os.path.exists(os.path.join(workdir, "figures", f"seed_{seed}",
                                           "faces_from_attributes.png"))
        # The protocol's classifier judges the figure's columns beside it.
        assert os.path.exists(os.path.join(workdir, "figures", f"seed_{seed}",
                                           "faces_from_attributes_verdicts.md"))
    assert checkpoints.latest_step(os.path.join(workdir, "classifier")) == 4
    assert report["seeds"] == [0] and report["models"] == ["cmma", "cvae"]
    assert math.isfinite(report["across_seeds"]["cmma"]["bound"]["mean"])
    text = open(os.path.join(workdir, "report.md")).read()
    for needle in ("Across seeds", "cmma − cvae: bound", "IWAE K=4", "## Seed 0", "## Time",
                   "`pytest run`", "train seed_0 cmma"):
        assert needle in text, needle
    with open(os.path.join(workdir, "report.json")) as f:
        assert json.load(f)["seeds"] == [0]
    with open(os.path.join(workdir, "reproduce.json")) as f:
        record = json.load(f)
    assert record["settings"]["models"] == ["cmma", "cvae"]
    assert record["runs"][0]["command"] == "pytest run"


def test_a_rerun_redoes_nothing_and_a_new_seed_only_its_own_work(run, tiny_data_dir,
                                                                  monkeypatch):
    workdir, _, _ = run
    checkpoint = os.path.join(workdir, "seed_0", "cmma", "checkpoints")
    before = {n: os.path.getmtime(os.path.join(checkpoint, n)) for n in os.listdir(checkpoint)}
    results = os.path.join(workdir, "evaluation", "seed_0", "results.json")
    results_mtime = os.path.getmtime(results)
    calls = _Calls(monkeypatch)
    reproduce.reproduce(_settings(tiny_data_dir, seeds=(0,)), workdir)
    assert calls.counts == {}
    assert {n: os.path.getmtime(os.path.join(checkpoint, n))
            for n in os.listdir(checkpoint)} == before
    assert os.path.getmtime(results) == results_mtime

    # Seed 1 alone on the command line: the workdir's seeds become 0, 1.
    report = reproduce.reproduce(_settings(tiny_data_dir, seeds=(1,)), workdir)
    assert calls.counts == {"train_and_evaluate": 2, "evaluate_workdirs": 1,
                            "generate_figures": 1}
    assert report["seeds"] == [0, 1]
    assert report["across_seeds"]["cvae"]["bound"]["n"] == 2
    bound = report["across_seeds"]["cmma"]["bound"]
    assert bound["n"] == 2 and math.isfinite(bound["mean"]) and bound["stderr"] > 0
    quantities = {d["quantity"] for d in report["differences"]["across_seeds"]}
    assert {"bound", "iwae_1", "iwae_4", "parzen", "fidelity_accuracy",
            "fidelity_auc"} <= quantities
    text = open(os.path.join(workdir, "report.md")).read()
    for needle in ("## Seed 0", "## Seed 1", "√2"):
        assert needle in text, needle


def test_a_changed_preset_is_refused_naming_the_field(run, tiny_data_dir):
    workdir, _, _ = run
    with open(os.path.join(workdir, "reproduce.json")) as f:
        before = f.read()
    with pytest.raises(ValueError, match=r"preset: 'tiny' -> 'small'"):
        reproduce.reproduce(_settings(tiny_data_dir, preset="small"), workdir)
    with pytest.raises(ValueError, match=r"data_options"):
        reproduce.reproduce(_settings(tiny_data_dir, data_options={"num_train": 64}), workdir)
    with open(os.path.join(workdir, "reproduce.json")) as f:
        assert f.read() == before  # nothing recorded for a refused run


def test_training_finished_reads_the_checkpoint_step(run):
    workdir, _, _ = run
    path = os.path.join(workdir, "seed_0", "cvae")
    assert reproduce.training_finished(path, 2)
    assert not reproduce.training_finished(path, 4)  # raised num_steps: training continues
    assert checkpoints.latest_step(os.path.join(workdir, "nowhere")) is None


def test_settings_differences_allow_more_steps_only():
    base = {"dataset": "lfw", "preset": "small", "data_options": {}, "classifier_steps": 100,
            "classifier_overrides": {}, "overrides": {"training.num_steps": 10}}
    more = dict(base, overrides={"training.num_steps": 20}, classifier_steps=200)
    assert reproduce.settings_differences(base, more) == []
    fewer = dict(base, overrides={"training.num_steps": 5})
    assert reproduce.settings_differences(base, fewer) == [
        "overrides: {'training.num_steps': 10} -> {'training.num_steps': 5}"]
    assert reproduce.settings_differences(base, dict(base, dataset="celeba")) == [
        "dataset: 'lfw' -> 'celeba'"]


def test_settings_put_cmma_first_and_refuse_reserved_overrides():
    settings = reproduce.ReproduceSettings(models=("cgan", "cmma", "cvae"), preset="tiny")
    assert settings.models == ("cmma", "cgan", "cvae")
    with pytest.raises(ValueError, match="training.seed"):
        reproduce.ReproduceSettings(overrides={"training.seed": 3})
    with pytest.raises(ValueError, match="models"):
        reproduce.ReproduceSettings(models=("cmma", "gan"))
    config = reproduce.model_config(reproduce.ReproduceSettings(
        preset="tiny", overrides={"training.num_steps": 7, "model.feed_attributes_to_encoder":
                                  True}, data_options={"num_train": 64}), "cvae", 5)
    assert (config.training.seed, config.training.num_steps) == (5, 7)
    assert config.data.options.num_train == 64


def _fake_results(bounds, iwae, parzen, acc, auc, diffs):
    """A results dict of `evaluate_workdirs` for cmma and cvae with these means."""
    models = []
    for i, name in enumerate(("cmma", "cvae")):
        models.append({
            "model": name, "step": 2, "workdir": name,
            "bound": {"nats": bounds[i], "stderr": 1.0, "bits_per_dim": -bounds[i] / 8517.0,
                      "bits_per_dim_stderr": 1e-4},
            "iwae": {"1": {"nats": iwae[i], "stderr": 1.0}, "10": {"nats": iwae[i] + 5,
                                                                   "stderr": 1.0}},
            "parzen": {"nats": parzen[i], "stderr": 2.0, "sigma": 0.1},
            "fidelity": {"mean_accuracy": acc[i], "mean_auc": auc[i]}})
    comparisons = [{"estimator": e, "a": "cmma", "b": "cvae", "difference": d, "stderr": 0.5,
                    "num_images": 10, "a_better_fraction": 0.6} for e, d in diffs.items()]
    return {"models": models, "comparisons": comparisons,
            "real": {"fidelity": {"mean_accuracy": 0.9, "mean_auc": 0.95}}}


def test_the_across_seed_summary_matches_numpy():
    a = _fake_results((100.0, 90.0), (110.0, 95.0), (50.0, 60.0), (0.8, 0.7), (0.85, 0.75),
                      {"bound": 10.0, "iwae_1": 15.0, "parzen": -10.0})
    b = _fake_results((130.0, 97.0), (140.0, 99.0), (55.0, 58.0), (0.9, 0.6), (0.95, 0.70),
                      {"bound": 33.0, "iwae_1": 41.0, "parzen": -3.0})
    summary = reproduce.summarize_seeds({3: b, 1: a})
    assert summary["seeds"] == [1, 3] and summary["models"] == ["cmma", "cvae"]

    def check(got, values):
        values = np.asarray(values, np.float64)
        assert got["n"] == len(values)
        np.testing.assert_allclose(got["mean"], values.mean())
        np.testing.assert_allclose(got["stderr"], values.std(ddof=1) / np.sqrt(len(values)))

    across = summary["across_seeds"]
    check(across["cmma"]["bound"], [100.0, 130.0])
    check(across["cvae"]["iwae_10"], [100.0, 104.0])
    check(across["cvae"]["parzen"], [60.0, 58.0])
    check(across["cmma"]["fidelity_auc"], [0.85, 0.95])
    check(across["cmma"]["bound_bits_per_dim"], [-100.0 / 8517.0, -130.0 / 8517.0])
    diffs = {d["quantity"]: d for d in summary["differences"]["across_seeds"]}
    check(diffs["bound"], [10.0, 33.0])
    check(diffs["iwae_1"], [15.0, 41.0])
    check(diffs["parzen"], [-10.0, -3.0])
    check(diffs["fidelity_accuracy"], [0.8 - 0.7, 0.9 - 0.6])
    assert diffs["bound"]["values"] == [10.0, 33.0]  # in seed order
    per_seed = summary["differences"]["per_seed"]["1"]
    assert per_seed[0]["stderr"] == 0.5 and per_seed[0]["num_images"] == 10
    assert summary["per_seed"]["3"]["cvae"]["bound"] == {"value": 97.0, "stderr": 1.0}
    assert summary["real"]["fidelity_accuracy"]["mean"] == pytest.approx(0.9)
    one = reproduce.summarize_seeds({0: a})
    assert one["across_seeds"]["cmma"]["bound"] == {"mean": 100.0, "stderr": None, "n": 1}
    text = reproduce.markdown(summary, settings=_settings("x").to_dict(), runs=[], timings={},
                              pending={5: "cmma not trained"}, results_by_seed={1: a, 3: b})
    assert "+21.5 ± 11.5" in text  # bound difference: mean 21.5, stderr 23/sqrt(2)/sqrt(2)
    assert "seed 5 (cmma not trained)" in text


def test_the_door_parses_the_settings_and_refuses_a_changed_preset(run, tiny_data_dir):
    import subprocess
    import sys

    workdir, _, _ = run
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = [sys.executable, "launch/reproduce.py", f"--workdir={workdir}",
            "--dataset=synthetic_faces", f"--prepared_dir={tiny_data_dir}", "--preset=tiny",
            "--seeds=0,1", "--models=cmma,cvae", "--num_steps=2",
            "--override=training.batch_size=8,training.log_every=1,"
            "training.checkpoint_every=2,training.sample_every=2",
            "--classifier_steps=4",
            "--classifier_override=model.features=(4,4),model.hidden=8,model.input_pool=4,"
            "training.batch_size=16,training.log_every=2,training.eval_every=100,"
            "training.checkpoint_every=100,training.num_eval=16",
            "--data_options=" + ",".join(f"{k}={v}" for k, v in TINY_DATA_OPTIONS.items()),
            "--num_test=8", "--iwae_samples=1,4", "--parzen_num_test=4",
            "--parzen_num_validation=4", "--parzen_samples=4", "--parzen_sigmas=0.05,0.2,0.8",
            "--stages=report"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = run_command(args, cwd=repo, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pending" not in result.stdout, result.stdout
    with open(os.path.join(workdir, "report.json")) as f:
        report = json.load(f)
    assert report["seeds"] == [0, 1]  # the workdir's seeds, not only the command's
    assert report["runs"][-1]["command"].startswith("python launch/reproduce.py --workdir=")
    result = run_command(args[:6] + ["--preset=small"] + args[7:], cwd=repo, env=env)
    assert result.returncode != 0
    assert "preset: 'tiny' -> 'small'" in result.stderr


def test_max_epochs_sets_the_budget_and_the_rule_applies_to_models_with_a_bound(tiny_data_dir):
    settings = _settings(tiny_data_dir, models=("cmma", "cgan", "vlae"), max_epochs=2.5,
                         overrides={**TRAINING, "training.stop_patience": 3,
                                    "training.stop_min_delta": 20.0})
    for model in ("cmma", "cgan", "vlae"):
        config = reproduce.model_config(settings, model, 0)
        # 256 tiny training faces at batch 8: 2.5 epochs are 80 steps.
        assert config.training.num_steps == math.ceil(2.5 * TINY_DATA_OPTIONS["num_train"] / 8)
        # The CGAN and the MMD-VLAE have no validation bound: they train the budget.
        assert config.training.stop_patience == (3 if model == "cmma" else None), model
    with pytest.raises(ValueError, match="max_epochs"):
        _settings(tiny_data_dir, max_epochs=0)


def test_a_run_stopped_by_the_convergence_rule_counts_as_trained(tmp_path):
    from cmma_jax import convergence

    workdir = str(tmp_path / "cmma")
    os.makedirs(os.path.join(checkpoints.directory(workdir), "6"))
    assert not reproduce.training_finished(workdir, 20)
    convergence.write_stopped(workdir, {"rule": convergence.BUDGET, "step": 6})
    assert not reproduce.training_finished(workdir, 20)  # a budget of 6 steps is not 20
    convergence.write_stopped(workdir, {"rule": convergence.CONVERGED, "step": 6})
    assert reproduce.training_finished(workdir, 20)
    assert reproduce.loaded_step(workdir) == 6
    os.makedirs(os.path.join(checkpoints.directory(convergence.best_workdir(workdir)), "2"))
    assert reproduce.loaded_step(workdir) == 2


def test_two_reproductions_on_one_workdir_keep_every_record(tmp_path):
    """Two runs on one workdir (one training, one evaluating) each read the records, then write
    them: before the records were locked and read again, the second write lost the first's."""
    workdir = str(tmp_path)
    settings = reproduce.ReproduceSettings(preset="tiny")
    first, second = {"runs": []}, {"runs": []}  # both read reproduce.json before either wrote
    a = reproduce._record_run(workdir, first, settings, "python a", ("train",))
    b = reproduce._record_run(workdir, second, settings, "python b", ("evaluate",))
    reproduce._finish_run(workdir, a, 12.0)
    record = reproduce._finish_run(workdir, b, 3.0)
    assert [(r["command"], r["seconds"]) for r in record["runs"]] == [("python a", 12.0),
                                                                       ("python b", 3.0)]
    timings_a, timings_b = reproduce._Timings(workdir), reproduce._Timings(workdir)
    with timings_a.time("train seed_0 cmma"):
        with timings_b.time("evaluate seed_0"):
            pass
    stored = json.load(open(os.path.join(workdir, "timings.json")))
    assert sorted(stored) == ["evaluate seed_0", "train seed_0 cmma"]


def test_a_damaged_final_checkpoint_is_trained_again_not_skipped(run, tiny_data_dir, tmp_path,
                                                                  capsys):
    import shutil

    workdir, _, _ = run
    path = str(tmp_path / "cmma")
    shutil.copytree(os.path.join(workdir, "seed_0", "cmma"), path)
    assert reproduce.training_finished(path, 2)
    state_dir = os.path.join(checkpoints.step_directory(path, 2), "state")
    largest = max((os.path.join(r, f) for r, _, names in os.walk(state_dir) for f in names),
                  key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.seek(os.path.getsize(largest) // 2)
        f.write(b"\xff" * 8)
    assert not reproduce.training_finished(path, 2)
    assert "is damaged: trained again" in capsys.readouterr().out
    # What the train stage then does: the trainer moves it aside and trains it again.
    train.train_and_evaluate(reproduce.model_config(_settings(tiny_data_dir, seeds=(0,)),
                                                    "cmma", 0), path)
    assert reproduce.training_finished(path, 2)
    assert checkpoints.verify(path, 2) is True
