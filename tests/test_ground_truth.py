"""Tests of the ground truth for edits and layers (issue #15): cmma_jax/evaluate/ground_truth.py
and its door, launch/ground_truth.py.

The command is run once, as a user runs it, on the tiny models and the tiny classifier that the
evaluation tests share (`eval_helpers`), and its numbers are checked against references computed
here independently: the true counterfactuals rendered from specs switched by hand, the models'
outputs and the classifier's verdicts recomputed and scored with numpy; the ridge probe against
its closed form and against factors it must (an exact linear function) or cannot (noise) predict.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from cmma_jax import classifier, workdirs as workdirs_lib
from cmma_jax.data import _render, pipeline, synthetic_faces
from cmma_jax.evaluate import ground_truth as gt
from conftest import TINY_DATA_OPTIONS, run_command

import eval_helpers

REPO = eval_helpers.repo_root()
NUM_FACES = 8
PROBE_TRAIN, PROBE_TEST = 24, 16
CHECKED = ("Eyeglasses", "Blond_Hair", "Male")  # attributes recomputed here (a hair colour too)
VARIANT = synthetic_faces.config_from_options(TINY_DATA_OPTIONS)
HAIR = _render.HAIR_COLOURS[:-1]


@pytest.fixture(scope="module")
def models(tiny_data_dir, tmp_path_factory):
    return eval_helpers.trained_workdirs(tiny_data_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return eval_helpers.trained_classifier(tmp_path_factory)[0]


def _command(args, expect_ok=True):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = run_command([sys.executable, "launch/ground_truth.py", *args], cwd=REPO, env=env)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def run(models, classifier_dir, tmp_path_factory):
    """launch/ground_truth.py on the four tiny models (the cgan can neither edit nor encode)."""
    out = tmp_path_factory.mktemp("ground_truth")
    result = _command([
        f"--workdirs={models['cmma']},{models['cvae']},{models['vlae']},{models['cgan']}",
        f"--classifier_workdir={classifier_dir}", f"--output_dir={out}",
        f"--num_faces={NUM_FACES}", "--batch_size=8", f"--probe_num_train={PROBE_TRAIN}",
        f"--probe_num_test={PROBE_TEST}", "--figure_attributes=Eyeglasses,Blond_Hair",
        "--figure_faces=4", "--ridge_alphas=0.001,0.1,10"])
    with open(out / gt.JSON_FILE) as f:
        return out, json.load(f), result


def _switched_by_hand(spec, name):
    """The counterfactual spec, written out here: the attribute flipped; a hair colour switched
    on clears the others, the face's hair colour switched off gives red hair."""
    attributes, hair = dict(spec.attributes), spec.hair
    value = not attributes[name]
    if name in HAIR:
        for h in HAIR:
            attributes[h] = False
        hair = name if value else "red"
    attributes[name] = value
    return _render.FaceSpec(attributes=attributes, hair=hair, nuisance=spec.nuisance)


@pytest.fixture(scope="module")
def reference(models):
    """For the cmma and each attribute of CHECKED: the faces, the true counterfactuals and the
    model's edit, reconstruction and regeneration (temperature 0), clipped to [0, 1]."""
    model = workdirs_lib.load_model(models["cmma"])
    assert model.name == "cmma"
    lib, config = model.model_lib, model.config
    edit = jax.jit(lambda p, x, a, b: lib.edit(p, x, a, b, config=config))
    recon = jax.jit(lambda p, x, a: lib.reconstruct(p, x, a, config=config))
    sample = jax.jit(lambda p, a: lib.sample(p, a, jax.random.key(1), 0.0, config=config))
    # The test split of the models' data (seed 0, split 2), drawn here at its pose jitter.
    specs = [_render.sample_face(_render.example_rng(0, 2, i), synthetic_faces.DEFAULT_JITTER)
             for i in range(NUM_FACES)]
    originals = np.stack([_render.render_face(s) for s in specs]).astype(np.float32) / 255.0
    raw = np.stack([s.attribute_vector() for s in specs])
    y = pipeline.encode_attributes(raw, model.encoding)
    out = {}
    for name in CHECKED:
        cf_specs = [_switched_by_hand(s, name) for s in specs]
        cf = np.stack([_render.render_face(s) for s in cf_specs]).astype(np.float32) / 255.0
        cf_raw = np.stack([s.attribute_vector() for s in cf_specs])
        y_to = pipeline.encode_attributes(cf_raw, model.encoding)
        out[name] = {
            "originals": originals, "cf": cf, "cf_raw": cf_raw,
            "to_on": cf_raw[:, synthetic_faces.ATTRIBUTE_NAMES.index(name)] > 0,
            "edit": np.clip(np.asarray(edit(model.params, originals, y, y_to)), 0, 1),
            "reconstruction": np.clip(np.asarray(recon(model.params, originals, y)), 0, 1),
            "regeneration": np.clip(np.asarray(sample(model.params, y_to)), 0, 1),
        }
    return out


def _mse(a, b):
    return np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))


def test_the_command_writes_the_tables_and_the_figures(run, models):
    out, results, result = run
    assert sorted(os.listdir(out)) == sorted([gt.JSON_FILE, gt.MARKDOWN_FILE,
                                              gt.EDIT_FIGURE_FILE, gt.PROBE_FIGURE_FILE])
    assert "Wrote" in result.stdout and gt.MARKDOWN_FILE in result.stdout
    edits = results["edits"]
    assert edits["num_faces"] == NUM_FACES
    assert edits["attributes"] == list(synthetic_faces.ATTRIBUTE_NAMES)
    assert [m["model"] for m in edits["models"]] == ["cmma", "cvae", "vlae"]
    assert any("cgan" in n and "cannot edit" in n for n in results["notes"])
    assert any("cgan" in n and "cannot encode" in n for n in results["notes"])
    specs = synthetic_faces.split_specs(VARIANT, "test", 0, NUM_FACES)
    for name in edits["attributes"]:
        cf = edits["counterfactuals"]["per_attribute"][name]
        on = sum(not s.attributes[name] for s in specs)
        assert (cf["num_to_on"], cf["num_to_off"]) == (on, NUM_FACES - on)
        for m in edits["models"]:
            entry = m["per_attribute"][name]
            for kind in gt.OUTPUTS:
                assert entry[kind]["num_faces"] == NUM_FACES
                assert entry[kind]["to_on"]["num_faces"] == on
                assert set(entry["classifier"][kind]) == {"target", "target_to_on",
                                                          "target_to_off", "others"}
    probes = results["probes"]
    assert [r["label"] for r in probes["rows"]] == ["cmma z", "cvae z", "vlae z_1", "vlae z_2",
                                                    "vlae z_3", "vlae z_4"]
    vlae_config, _ = workdirs_lib.read_workdir(models["vlae"])
    from cmma_jax.models import vlae
    assert [r["dim"] for r in probes["rows"][2:]] == list(vlae.latent_dims(vlae_config))
    nuisance = [f for f in probes["factors"] if probes["kinds"][f] == "nuisance"]
    assert probes["factors"][:20] == list(synthetic_faces.ATTRIBUTE_NAMES)
    assert len(nuisance) == len(specs[0].nuisance) + len(synthetic_faces.PERIODIC_NUISANCE)
    assert (probes["train"], probes["test"]) == (
        {"split": "validation", "start": 0, "stop": PROBE_TRAIN},
        {"split": "test", "start": 0, "stop": PROBE_TEST})
    for row in probes["rows"]:
        assert set(row["scores"]) == set(probes["factors"])
        assert set(row["alphas"].values()) <= {0.001, 0.1, 10.0}
    table = open(out / gt.MARKDOWN_FILE).read()
    for heading in ("### Edits, all attributes pooled", "### Edits per attribute",
                    "true counterfactual (ceiling)", "### What each latent layer knows",
                    "| light_angle_cos |", "| cmma (`"):
        assert heading in table, heading
    figure = Image.open(out / gt.EDIT_FIGURE_FILE)
    # Two blocks of input, counterfactual and three edits, 4 faces of 64 px: narrow and tall.
    assert figure.width <= 1000 and figure.height > 2 * 5 * 64
    heat = Image.open(out / gt.PROBE_FIGURE_FILE)
    assert heat.width <= 1400 and heat.height > 2 * 6 * 20


def test_the_edit_scores_are_numpy_on_the_true_counterfactuals(run, reference):
    """The cmma's MSE, PSNR, changed-pixel MSE, both directions and the fraction of faces its
    edit wins, against numpy on images recomputed here."""
    _, results, _ = run
    cmma = results["edits"]["models"][0]
    for name, ref in reference.items():
        entry = cmma["per_attribute"][name]
        cf_entry = results["edits"]["counterfactuals"]["per_attribute"][name]
        changed = np.any(ref["cf"] != ref["originals"], axis=-1)
        assert cf_entry["change_mse"] == pytest.approx(_mse(ref["originals"], ref["cf"]).mean(),
                                                       rel=1e-6)
        assert cf_entry["changed_pixels"] == pytest.approx(changed.mean(), rel=1e-9)
        errors = {}
        for kind in gt.OUTPUTS:
            per_face = _mse(ref[kind], ref["cf"])
            errors[kind] = per_face
            got = entry[kind]
            assert got["mse"] == pytest.approx(per_face.mean(), rel=1e-4), (name, kind)
            assert got["psnr"] == pytest.approx(10 * math.log10(1 / per_face.mean()), abs=1e-3)
            assert got["mse_stderr"] == pytest.approx(
                per_face.std(ddof=1) / math.sqrt(NUM_FACES), rel=1e-3)
            for direction, faces in (("to_on", ref["to_on"]), ("to_off", ~ref["to_on"])):
                assert got[direction]["num_faces"] == faces.sum()
                if faces.any():
                    assert got[direction]["mse"] == pytest.approx(per_face[faces].mean(),
                                                                  rel=1e-4)
                else:
                    assert got[direction]["mse"] is None
            sq = ((ref[kind].astype(np.float64) - ref["cf"]) ** 2).sum(-1)
            changed_mse = np.mean([sq[i][changed[i]].sum() / (3 * changed[i].sum())
                                   for i in range(NUM_FACES)])
            assert got["mse_changed"] == pytest.approx(changed_mse, rel=1e-4)
        for other in ("reconstruction", "regeneration"):
            assert entry[f"beats_{other}"] == np.mean(errors["edit"] < errors[other])
    # Pooled over attributes: every attribute has the same faces.
    per_attribute = [cmma["per_attribute"][a]["edit"]["mse"]
                     for a in results["edits"]["attributes"]]
    assert cmma["overall"]["edit"]["mse"] == pytest.approx(np.mean(per_attribute), rel=1e-9)


def test_the_classifier_verdict_and_its_ceiling(run, reference, classifier_dir):
    """Target and other-attribute accuracies of the true counterfactuals (the ceiling) and of the
    cmma's outputs, recomputed with the classifier here."""
    _, results, _ = run
    c_config, _, c_params = classifier.load_classifier(classifier_dir)
    names = synthetic_faces.ATTRIBUTE_NAMES
    for name, ref in reference.items():
        j = names.index(name)
        labels = ref["cf_raw"] > 0
        others = [k for k in range(len(names)) if k != j]

        def verdict(images):
            p = np.asarray(classifier.predict(c_params, images, config=c_config)) > 0.5
            target = p[:, j] == labels[:, j]
            on = ref["to_on"]
            return {"target": target.mean(),
                    "target_to_on": target[on].mean() if on.any() else None,
                    "target_to_off": target[~on].mean() if (~on).any() else None,
                    "others": (p[:, others] == labels[:, others]).mean()}

        expected = verdict(ref["cf"])
        got = results["edits"]["counterfactuals"]["per_attribute"][name]["classifier"]
        for k, v in expected.items():
            assert got[k] == (None if v is None else pytest.approx(v, abs=1e-9)), (name, k)
        cmma = results["edits"]["models"][0]["per_attribute"][name]["classifier"]
        for kind in gt.OUTPUTS:
            for k, v in verdict(ref[kind]).items():
                if v is None:
                    assert cmma[kind][k] is None
                else:  # a probability within float noise of 0.5 could flip: one face in 8
                    assert abs(cmma[kind][k] - v) <= 1 / NUM_FACES + 1e-9, (name, kind, k)
    # Hair colour and glasses are drawn large: the classifier sees them switched on the true
    # counterfactuals (judged against the original attributes, this would be near 0).
    per_attribute = results["edits"]["counterfactuals"]["per_attribute"]
    assert np.mean([per_attribute[n]["classifier"]["target"]
                    for n in ("Blond_Hair", "Eyeglasses")]) >= 0.75


def test_the_probe_rows_are_ridge_probes_of_the_encoded_faces(run, models):
    """The vlae's four rows: its posterior means of the faces, encoded here, probed for the
    factors read here from the specs."""
    _, results, _ = run
    model = workdirs_lib.load_model(models["vlae"])
    probes = results["probes"]
    features, factors = {}, {}
    for part, split, n in (("train", "validation", PROBE_TRAIN), ("test", "test", PROBE_TEST)):
        images, raw = synthetic_faces.render_split(VARIANT, split, 0, n)
        y = pipeline.encode_attributes(raw, model.encoding)
        means, _ = model.model_lib.encode(model.params, images.astype(np.float32) / 255.0, y,
                                          config=model.config)
        features[part] = [np.asarray(m) for m in means]
        specs = synthetic_faces.split_specs(VARIANT, split, 0, n)
        columns = []
        for f in probes["factors"]:
            if f in synthetic_faces.ATTRIBUTE_NAMES:
                columns.append([float(s.attributes[f]) for s in specs])
            elif f.endswith(("_cos", "_sin")) and f[:-4] in synthetic_faces.PERIODIC_NUISANCE:
                fn = np.cos if f.endswith("_cos") else np.sin
                columns.append([fn(s.nuisance[f[:-4]]) for s in specs])
            else:
                columns.append([s.nuisance[f] for s in specs])
        factors[part] = np.array(columns).T
    kinds = [probes["kinds"][f] for f in probes["factors"]]
    for layer in range(4):
        row = probes["rows"][2 + layer]
        expected = gt.probe(features["train"][layer], factors["train"], features["test"][layer],
                            factors["test"], kinds, alphas=(0.001, 0.1, 10.0))
        got = np.array([np.nan if row["scores"][f] is None else row["scores"][f]
                        for f in probes["factors"]])
        np.testing.assert_allclose(got, expected["score"], rtol=1e-4, atol=1e-5)


def test_ridge_regression_is_the_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0, 100.0]) + 5.0
    y = rng.normal(size=(40, 3))
    test_x = rng.normal(size=(9, 6)) * 4.0
    alpha = 0.3
    mean, std = x.mean(0), x.std(0)
    xs = (x - mean) / std
    w = np.linalg.solve(xs.T @ xs + alpha * len(x) * np.eye(6), xs.T @ (y - y.mean(0)))
    expected = (test_x - mean) / std @ w + y.mean(0)
    np.testing.assert_allclose(gt.ridge_regression(x, y, test_x, alpha), expected, rtol=1e-9,
                               atol=1e-12)
    # More features than faces (the dual side of the SVD) and one target.
    x_wide, y_wide = rng.normal(size=(5, 12)), rng.normal(size=5)
    xs = (x_wide - x_wide.mean(0)) / x_wide.std(0)
    w = np.linalg.solve(xs.T @ xs + 2.0 * 5 * np.eye(12), xs.T @ (y_wide - y_wide.mean()))
    np.testing.assert_allclose(gt.ridge_regression(x_wide, y_wide, x_wide, 2.0),
                               xs @ w + y_wide.mean(), rtol=1e-9, atol=1e-12)


def test_a_probe_finds_a_linear_factor_and_not_noise():
    rng = np.random.default_rng(1)
    n, d = 1500, 6
    x = rng.normal(size=(2 * n, d)) * rng.uniform(0.1, 10, size=d)
    w = rng.normal(size=d)
    signal = x @ w
    factors = np.stack([signal + 3.0,                                   # exact linear: R² 1
                        rng.normal(size=2 * n),                         # noise: R² 0
                        (signal > 0).astype(float),                     # linear class: 1
                        (rng.uniform(size=2 * n) < 0.3).astype(float)],  # random class: 0.5
                       axis=1)
    kinds = ["nuisance", "nuisance", "attribute", "attribute"]
    scores = gt.probe(x[:n], factors[:n], x[n:], factors[n:], kinds,
                      alphas=(1e-6, 1e-3, 1.0, 100.0))
    assert scores["score"][0] > 0.9999 and scores["alpha"][0] == 1e-6
    assert abs(scores["score"][1]) < 0.02
    assert scores["score"][2] > 0.95 and scores["accuracy"][2] > 0.95
    assert abs(scores["score"][3] - 0.5) < 0.05
    assert np.isnan(scores["accuracy"][0])


def test_the_scores_by_hand():
    assert gt.psnr(0.01) == pytest.approx(20.0) and gt.psnr(0.0) == float("inf")
    predicted = np.array([[1, 1], [0, 1], [1, 1], [0, 0], [0, 1]], bool)
    labels = np.array([[1, 1], [1, 1], [0, 1], [0, 1], [0, 1]], bool)
    # Column 0: recall of positives 1/2, of negatives 2/3; column 1: positives only, 4/5.
    np.testing.assert_allclose(gt.balanced_accuracy(predicted, labels), [(1 / 2 + 2 / 3) / 2,
                                                                         4 / 5])
    t = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0], [4.0, 2.0]])
    p = np.array([[1.5, 2.0], [2.0, 2.0], [3.0, 2.0], [3.0, 1.0]])
    r2 = gt.r_squared(p, t)
    assert r2[0] == pytest.approx(1 - (0.25 + 1.0) / 5.0) and np.isnan(r2[1])
    # A constant whose float mean is not exactly itself (0.9 repeated: the aligned faces' scale)
    # is still constant: NaN, not whatever a rounding-sized ss_tot gives.
    t = np.full((7, 1), 0.9)
    assert np.sum((t - t.mean(axis=0)) ** 2) > 0 and np.isnan(gt.r_squared(t + 0.1, t)[0])
    a = np.zeros((2, 2, 2, 3))
    b = np.ones((2, 2, 2, 3))
    b[1] = 2.0
    mask = np.array([[[True, False], [False, False]], [[False, False], [False, False]]])
    np.testing.assert_allclose(gt.per_face_mse(b, a), [1.0, 4.0])
    masked = gt.per_face_masked_mse(b, a, mask)
    assert masked[0] == 1.0 and np.isnan(masked[1])


def test_the_factor_table_reads_the_specs():
    specs = synthetic_faces.split_specs(VARIANT, "test", 0, 5)
    names, kinds, values = gt.factor_table(specs)
    assert values.shape == (5, len(names)) and len(kinds) == len(names)
    for i, s in enumerate(specs):
        for j, n in enumerate(names):
            if kinds[j] == "attribute":
                assert values[i, j] == float(s.attributes[n])
            elif n == "light_angle_sin":
                assert values[i, j] == pytest.approx(math.sin(s.nuisance["light_angle"]))
            elif n in s.nuisance:
                assert values[i, j] == s.nuisance[n]
    assert "bg_angle" not in names and {"bg_angle_cos", "bg_angle_sin"} <= set(names)


def _fake_workdir(source, target, **data):
    os.makedirs(target)
    shutil.copy(os.path.join(source, workdirs_lib.ATTRIBUTES_FILE), target)
    config = json.load(open(os.path.join(source, workdirs_lib.CONFIG_FILE)))
    config["data"].update(data)
    json.dump(config, open(os.path.join(target, workdirs_lib.CONFIG_FILE), "w"))
    return str(target)


def test_bad_inputs_are_refused_with_the_problem_and_the_fix(models, classifier_dir, tmp_path):
    celeba = _fake_workdir(models["cmma"], tmp_path / "celeba", name="celeba")
    with pytest.raises(gt.InputError, match=r"trained on 'celeba'.*--dataset=synthetic_faces"):
        gt.ground_truth([models["cmma"], celeba])
    other_seed = _fake_workdir(models["cmma"], tmp_path / "seed3",
                               options={**TINY_DATA_OPTIONS, "seed": 3})
    with pytest.raises(gt.InputError, match="different seeds.*seed 3"):
        gt.ground_truth([models["cmma"], other_seed])
    with pytest.raises(gt.InputError, match="--classifier_workdir"):
        gt.ground_truth([classifier_dir])
    with pytest.raises(ValueError, match="unknown attribute.*Wearing_Hat"):
        gt.GroundTruthSettings(attributes=("Wearing_Hat",))
    with pytest.raises(ValueError, match="at least 10 training"):
        gt.GroundTruthSettings(probe_num_train=5)
    # The door says the same, without a traceback.
    result = _command([f"--workdirs={celeba}", f"--output_dir={tmp_path / 'out'}"],
                      expect_ok=False)
    assert result.returncode != 0
    assert "trained on 'celeba'" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "out")
