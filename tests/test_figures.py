"""Tests of cmma_jax.figures: grids, the attribute vectors of the papers' figures, per-dataset
defaults and errors, and every figure end to end on tiny trained models."""

import os

import numpy as np
import pytest
from PIL import Image

from cmma_jax import figures
from cmma_jax.workdirs import load_model
from cmma_jax.data import reading
from cmma_jax.data import celeba, lfw, synthetic_faces

import eval_helpers

NAMES = ("Male", "Pale_Skin", "Eyeglasses", "Big_Nose")


def _raw(rows):
    return np.asarray(rows, np.float32)


def test_defaults_exist_in_each_datasets_attributes():
    for dataset, names in (("celeba", celeba.ATTRIBUTE_NAMES), ("lfw", lfw.ATTRIBUTE_NAMES),
                           ("synthetic_faces", synthetic_faces.ATTRIBUTE_NAMES)):
        d = figures.figure_defaults(dataset)
        requested = list(d["rows"]) + list(d["columns"]) + list(d["edits"]) + [d["remove"]]
        figures.attribute_indices(requested + list(d["arithmetic"]), names, dataset)
    assert figures.figure_defaults("lfw")["rows"] == ("Male", "Asian")  # the paper's
    assert figures.figure_defaults("celeba")["rows"] == ("Male", "Pale_Skin")
    assert figures.figure_defaults("celeba")["columns"] == (
        "Mouth_Slightly_Open", "Eyeglasses", "Bushy_Eyebrows", "Big_Nose", "Pointy_Nose",
        "Big_Lips")
    with pytest.raises(ValueError, match="No figure defaults for dataset 'mnist'"):
        figures.figure_defaults("mnist")


def test_an_unknown_attribute_names_the_available_ones():
    with pytest.raises(ValueError, match=r"Unknown attribute\(s\) \['Asian'\] for celeba; its "
                                         r"attributes are: .*Male.*Pale_Skin"):
        figures.attribute_indices(["Male", "Asian"], celeba.ATTRIBUTE_NAMES, "celeba")


def test_figure_4_rows_and_columns_binary():
    # Faces: (Male, Pale_Skin, Eyeglasses, Big_Nose)
    raw = _raw([[1, 1, 1, -1], [1, 1, 1, 1], [1, -1, -1, 1], [-1, -1, -1, -1], [-1, 1, -1, -1],
                [-1, 1, -1, -1]])
    attrs, rows, cols = figures.attribute_grid_inputs(raw, NAMES, ("Male", "Pale_Skin"),
                                                      ("Eyeglasses", "Big_Nose"), "binary")
    assert attrs.shape == (4, 3, 4)
    assert rows == ["not Male, Pale_Skin", "not Male, not Pale_Skin", "Male, Pale_Skin",
                    "Male, not Pale_Skin"]  # the paper's order: Female Asian first
    assert cols == ["no change", "+Eyeglasses", "+Big_Nose"]
    np.testing.assert_array_equal(attrs[:, 0, :2], [[0, 1], [0, 0], [1, 1], [1, 0]])
    # "mode": the males with pale skin mostly wear glasses; the other rows mostly do not.
    np.testing.assert_array_equal(attrs[:, 0, 2], [0, 0, 1, 0])
    np.testing.assert_array_equal(attrs[:, 1, 2], [1, 1, 1, 1])  # column: switched on
    np.testing.assert_array_equal(attrs[:, 2, 3], [1, 1, 1, 1])
    np.testing.assert_array_equal(attrs[:, 1, 3], attrs[:, 0, 3])  # one attribute at a time
    zeros, _, _ = figures.attribute_grid_inputs(raw, NAMES, ("Male", "Pale_Skin"),
                                                ("Eyeglasses",), "binary", base="zeros")
    np.testing.assert_array_equal(zeros[:, 0, 2:], 0)


def test_figure_4_in_signed_and_raw_encodings():
    raw = _raw([[2.0, -1.5, 0.5, -0.5], [-1.0, 0.5, -2.5, 1.5], [1.0, 1.5, -0.5, -0.5]])
    signed, _, _ = figures.attribute_grid_inputs(raw, NAMES, ("Male", "Pale_Skin"),
                                                 ("Eyeglasses",), "signed")
    assert set(np.unique(signed)) <= {-1.0, 1.0}
    on, off = figures.on_off_values(raw, "raw")
    np.testing.assert_allclose(on[:2], [1.5, 1.0])  # the mean of the positive scores
    np.testing.assert_allclose(off[:2], [-1.0, -1.5])
    scores, _, _ = figures.attribute_grid_inputs(raw, NAMES, ("Male", "Pale_Skin"),
                                                 ("Eyeglasses",), "raw")
    np.testing.assert_allclose(scores[2, 0, :2], [1.5, 1.0])
    np.testing.assert_allclose(scores[:, 1, 2], 0.5)


def test_toggles_and_arithmetic_triples():
    raw = _raw([[1, 1, 1, -1], [1, -1, -1, 1], [-1, -1, -1, -1], [1, 1, -1, -1]])
    on, off = figures.on_off_values(raw, "binary")
    toggled = figures.toggled_attributes(raw, 2, "binary", on, off)
    np.testing.assert_array_equal(toggled[:, 2], [0, 1, 1, 1])  # glasses off where on, and back
    np.testing.assert_array_equal(toggled[:, :2], (raw[:, :2] > 0))
    assert figures.arithmetic_triples(raw, NAMES, ("Male", "Pale_Skin"), 5) == [(0, 1, 2)]
    with pytest.raises(ValueError, match="No face with neither Male nor Eyeglasses"):
        figures.arithmetic_triples(raw[:2], NAMES, ("Male", "Eyeglasses"), 1)


@pytest.fixture(scope="module")
def drawn(tiny_data_dir, tmp_path_factory):
    workdirs = eval_helpers.trained_workdirs(tiny_data_dir, tmp_path_factory)
    out = tmp_path_factory.mktemp("figures")
    lines = []
    settings = figures.FigureSettings(pool_size=32, faces=(0, 3, 5), num_triples=2,
                                      traverse_values=(-3.0, 3.0, 5))
    written = figures.generate_figures([workdirs[n] for n in eval_helpers.MODEL_NAMES],
                                       str(out), settings, log=lines.append)
    return workdirs, written, lines


def test_every_figure_is_written(drawn):
    workdirs, written, lines = drawn
    assert sorted(written) == ["arithmetic_vlae", "edits", "faces_from_attributes",
                               "remove_Eyeglasses", "traversals_vlae"]
    assert all(os.path.exists(p) for p in written.values()) and len(lines) == 5
    tile = 64 + 2
    # Figure 4: four models, each 4 rows x 7 columns of faces, tiled two to a row (a panel is
    # wider than 7 faces, so a third does not fit in 1,200 pixels): two rows of panels.
    fig4 = Image.open(written["faces_from_attributes"])
    assert 2 * 7 * tile < fig4.width <= 1200 and fig4.height > 2 * 4 * tile
    # Figure 6: cmma, cvae and the conditional vlae (no cgan), 6 rows x 3 faces each: one row.
    edits = Image.open(written["edits"])
    assert 3 * 3 * tile < edits.width <= 1200 and 6 * tile < edits.height < 2 * 6 * tile
    # Traversals: 4 layers x 3 faces rows, 5 values.
    trav = Image.open(written["traversals_vlae"])
    assert trav.height > 12 * tile and trav.width > 5 * tile


def test_the_no_change_edit_is_the_reconstruction(drawn):
    workdirs = drawn[0]
    model = load_model(workdirs["cmma"])
    chunk = next(iter(reading.SplitReader(model.config.data, "test", batch_size=4)))
    y = chunk.attributes(model.encoding)
    same = model.model_lib.edit(model.params, chunk.images, y, y, config=model.config)
    recon = model.model_lib.reconstruct(model.params, chunk.images, y, config=model.config)
    np.testing.assert_allclose(same, recon, atol=1e-6)


def test_a_typo_in_an_attribute_fails_before_any_model_is_loaded(drawn, tmp_path):
    workdirs = drawn[0]
    settings = figures.FigureSettings(rows=("Male", "Asian"))  # no Asian in CelebA names
    with pytest.raises(ValueError, match=r"\['Asian'\].*its attributes are: Arched_Eyebrows"):
        figures.generate_figures([workdirs["cmma"]], str(tmp_path), settings)
    with pytest.raises(ValueError, match="Unknown figure"):
        figures.FigureSettings(figures=("samples",))


def test_exclusions_are_read_off_the_data_and_switching_on_clears_them():
    from cmma_jax.data import exclusions

    # 40 faces: (No_Eyewear, Eyeglasses, Male, Smiling, Rare). Glasses and no eyewear never
    # meet; Male and Smiling are independent; Rare is on one face, too rare to judge.
    rng = np.random.default_rng(0)
    glasses = np.arange(40) < 16
    male, smiling = rng.random(40) < 0.5, rng.random(40) < 0.5
    rare = np.arange(40) == 39
    raw = np.where(np.stack([~glasses, glasses, male, smiling, rare], 1), 1.0, -1.0)
    # Independence would put no-eyewear and glasses together on 24 · 16 / 40 = 9.6 faces, below
    # MIN_EXPECTED = 10: too few faces to judge. Twice the faces (19.2 expected): excluded.
    assert exclusions.MIN_EXPECTED == 10.0 and not exclusions.exclusions(raw).any()
    expected = np.zeros((5, 5), bool)
    expected[0, 1] = expected[1, 0] = True
    raw2 = np.concatenate([raw, raw])
    np.testing.assert_array_equal(exclusions.exclusions(raw2), expected)
    # A pair seen together on 2 of 32 faces with glasses (6%) is not excluded.
    raw3 = raw2.copy()
    raw3[:2, 0] = 1.0
    assert not exclusions.exclusions(raw3)[1, 0]
    # Switching Eyeglasses on clears No_Eyewear; the others stay; off -> on values of the encoding.
    on, off = np.ones(5, np.float32), np.zeros(5, np.float32)
    row = np.array([1, 0, 1, 0, 0], np.float32)
    np.testing.assert_array_equal(exclusions.switch_on(row, 1, expected, on, off),
                                  [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(row, [1, 0, 1, 0, 0])  # not changed in place
    with pytest.raises(ValueError, match=r"\[N, A\]"):
        exclusions.exclusions(np.ones(3))


def test_figure_columns_and_edits_switch_the_excluded_attributes_off():
    from cmma_jax.data import exclusions

    # (Male, Pale_Skin, Eyeglasses, Big_Nose), with Big_Nose standing for "No_Eyewear": it is
    # absent on every face with glasses and present on every face without, over 80 faces.
    glasses = np.arange(80) % 3 == 0
    male = np.arange(80) % 2 == 0
    pale = np.arange(80) % 5 < 2
    raw = np.where(np.stack([male, pale, glasses, ~glasses], 1), 1.0, -1.0)
    attrs, _, cols = figures.attribute_grid_inputs(raw, NAMES, ("Male", "Pale_Skin"),
                                                   ("Eyeglasses",), "binary")
    np.testing.assert_array_equal(attrs[:, 0, 2:], [[0, 1]] * 4)   # a typical row: no glasses
    np.testing.assert_array_equal(attrs[:, 1, 2:], [[1, 0]] * 4)   # +Eyeglasses: and not "none"
    on, off = figures.on_off_values(raw, "binary")
    excluded = exclusions.exclusions(raw)
    toggled = figures.toggled_attributes(raw[:3], 2, "binary", on, off, excluded)
    # Face 0 loses its glasses (nothing else changes: LFW's groups are not exhaustive, a face
    # may have none of them); faces 1 and 2 get glasses and lose "no eyewear".
    np.testing.assert_array_equal(toggled[:, 2:], [[0, 0], [1, 0], [1, 0]])
    np.testing.assert_array_equal(toggled[:, :2], raw[:3, :2] > 0)


def test_the_classifier_verdict_goes_beside_the_figures(drawn, tiny_data_dir, tmp_path):
    import json

    from cmma_jax import classifier
    from conftest import TINY_DATA_OPTIONS

    config = eval_helpers.classifier_config(tiny_data_dir, num_steps=2)
    config.data.options = dict(TINY_DATA_OPTIONS)
    config.training.batch_size = 8
    classifier.train_classifier(config, str(tmp_path / "classifier"))
    workdirs = drawn[0]
    settings = figures.FigureSettings(figures=("attributes", "edits"), pool_size=32,
                                      faces=(0, 3), classifier_workdir=str(tmp_path /
                                                                           "classifier"),
                                      verdict_faces=8)
    written = figures.generate_figures([workdirs["cmma"], workdirs["cgan"]], str(tmp_path / "f"),
                                       settings, log=lambda _: None)
    assert sorted(written) == ["edits", "edits_verdicts", "faces_from_attributes",
                               "faces_from_attributes_verdicts"]
    judged = json.load(open(tmp_path / "f" / "faces_from_attributes_verdicts.json"))
    assert judged["attributes"] == list(figures.figure_defaults("synthetic_faces")["columns"])
    assert len(judged["models"]) == 2  # both sample
    for row in judged["models"].values():
        for verdict in row.values():
            assert 0 <= verdict["off"] <= 1 and 0 <= verdict["on"] <= 1 and verdict["n"] <= 8
    edits = json.load(open(tmp_path / "f" / "edits_verdicts.json"))
    assert len(edits["models"]) == 1  # the CGAN cannot edit
    assert "| real faces with it (classifier recall) |" in open(written["edits_verdicts"]).read()
