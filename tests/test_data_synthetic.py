"""Tests for cmma_jax/data/synthetic_faces.py (and the renderer behind it)."""


import numpy as np
import pytest

from cmma_jax.data import _parallel
from cmma_jax.data import _render
from cmma_jax.data import celeba
from cmma_jax.data import synthetic_faces
from conftest import kill_and_expect_no_survivors, wait_for

SIZES = {"num_train": 240, "num_validation": 40, "num_test": 40}


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    config = synthetic_faces.make_config(**SIZES, seed=3)
    b = synthetic_faces.SyntheticFaces(
        config=config, data_dir=str(tmp_path_factory.mktemp("tfds")), num_workers=0
    )
    b.download_and_prepare(file_format="array_record")
    return b


def test_names_are_celeba_names_and_cover_the_papers_figures():
    names = synthetic_faces.ATTRIBUTE_NAMES
    assert len(names) >= 12
    assert len(set(names)) == len(names)
    assert set(names) <= set(celeba.ATTRIBUTE_NAMES)
    for required in (
        "Male",
        "Pale_Skin",
        "Eyeglasses",
        "Mouth_Slightly_Open",
        "Smiling",
        "Mustache",
        "Big_Nose",
        "Pointy_Nose",
        "Bushy_Eyebrows",
        "Big_Lips",
        "Black_Hair",
        "Blond_Hair",
    ):
        assert required in names


def test_prepared_splits_shapes_and_metadata(builder):
    sources = builder.as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 240, "validation": 40, "test": 40}
    example = sources["train"][0]
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert example["attributes"].shape == (len(synthetic_faces.ATTRIBUTE_NAMES),)
    assert set(np.unique(example["attributes"])) <= {-1.0, 1.0}
    assert list(builder.info.metadata["attribute_names"]) == list(synthetic_faces.ATTRIBUTE_NAMES)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_records_are_the_rendered_examples_in_order(builder, split):
    source = builder.as_data_source(split=split)
    images, attributes = synthetic_faces.render_split(builder.builder_config, split, 0, len(source))
    for i in range(len(source)):
        record = source[i]
        assert record["index"] == i
        np.testing.assert_array_equal(record["image"], images[i])
        np.testing.assert_array_equal(record["attributes"], attributes[i])


def test_splits_are_different_faces(builder):
    train = builder.as_data_source(split="train")[0]["image"]
    test = builder.as_data_source(split="test")[0]["image"]
    assert not np.array_equal(train, test)


def test_deterministic_and_independent_of_split_sizes_and_workers():
    small = synthetic_faces.make_config(num_train=10, num_validation=0, num_test=0, seed=7)
    large = synthetic_faces.make_config(num_train=5000, num_validation=0, num_test=0, seed=7)
    a_images, a_attributes = synthetic_faces.render_split(small, "train", 0, 10)
    b_images, b_attributes = synthetic_faces.render_split(large, "train", 0, 10)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_attributes, b_attributes)
    other_seed = synthetic_faces.make_config(num_train=10, num_validation=0, num_test=0, seed=8)
    c_images, _ = synthetic_faces.render_split(other_seed, "train", 0, 10)
    assert not np.array_equal(a_images, c_images)
    # Rendering in worker processes gives the same bytes, in the same order.
    chunks = [(7, 0, 0, 5, 0.25), (7, 0, 5, 10, 0.25)]  # (seed, split, start, stop, jitter)
    serial = list(_parallel.ordered_map(_render.render_range_compressed, chunks, 0))
    parallel = list(_parallel.ordered_map(_render.render_range_compressed, chunks, 2))
    assert [s[0] for s in serial] == [p[0] for p in parallel]


def test_attribute_frequencies_and_exclusive_hair_colours(builder):
    source = builder.as_data_source(split="train")
    attributes = np.stack([source[i]["attributes"] for i in range(len(source))]) > 0
    frequency = attributes.mean(axis=0)
    assert np.all(frequency > 0.08) and np.all(frequency < 0.92), dict(
        zip(synthetic_faces.ATTRIBUTE_NAMES, frequency)
    )
    hair = [
        synthetic_faces.ATTRIBUTE_NAMES.index(n)
        for n in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
    ]
    assert attributes[:, hair].sum(axis=1).max() == 1


@pytest.mark.parametrize("name", _render.ATTRIBUTE_NAMES)
def test_every_attribute_is_visible(name):
    """Flipping one attribute of a face (all else fixed) changes a visible patch of pixels."""
    for index in range(6):
        spec = _render.sample_face(_render.example_rng(0, 0, index))
        off = _render.render_face(spec.replace_attribute(name, False)).astype(np.int32)
        on = _render.render_face(spec.replace_attribute(name, True)).astype(np.int32)
        changed = np.abs(on - off).max(axis=-1) > 40
        assert changed.sum() >= 6, f"{name} changes only {changed.sum()} pixels of face {index}"


def test_nuisance_varies_among_faces_with_the_same_attributes():
    spec = _render.sample_face(_render.example_rng(0, 0, 0))
    other = _render.sample_face(_render.example_rng(0, 0, 1))
    same_attributes = _render.FaceSpec(
        attributes=spec.attributes, hair=spec.hair, nuisance=other.nuisance
    )
    a = _render.render_face(spec).astype(np.int32)
    b = _render.render_face(same_attributes).astype(np.int32)
    assert np.abs(a - b).mean() > 10


def test_replace_attribute_keeps_hair_colours_exclusive():
    spec = _render.sample_face(_render.example_rng(0, 0, 0)).replace_attribute("Blond_Hair", True)
    spec = spec.replace_attribute("Black_Hair", True)
    assert (
        spec.hair == "Black_Hair"
        and spec.attributes["Black_Hair"]
        and not spec.attributes["Blond_Hair"]
    )
    with pytest.raises(KeyError, match="Unknown attribute"):
        spec.replace_attribute("Wearing_Hat", True)


def test_jitter_scales_the_pose_alone():
    """`jitter` draws the same faces at a pose scaled about its centre: 0 aligned, 1 the draws of
    release 1.0.0 (the full ranges), and every other nuisance value and attribute unchanged."""
    rng = lambda: _render.example_rng(0, 0, 3)  # noqa: E731
    full, aligned, quarter = (_render.sample_face(rng(), j) for j in (1.0, 0.0, 0.25))
    assert full == _render.sample_face(rng())  # 1 is the default of the renderer
    assert full.attributes == aligned.attributes == quarter.attributes
    for name, value in full.nuisance.items():
        centre = _render.POSE_NUISANCE.get(name)
        if centre is None:
            assert aligned.nuisance[name] == quarter.nuisance[name] == value, name
        else:
            assert aligned.nuisance[name] == centre, name
            assert quarter.nuisance[name] == pytest.approx(centre + 0.25 * (value - centre)), name
    # Over many faces the full pose spans its ranges; the default draws aligned faces, a quarter
    # draws a quarter of the ranges.
    specs = [_render.sample_face(_render.example_rng(0, 0, i), 1.0) for i in range(300)]
    dx = np.array([s.nuisance["dx"] for s in specs])
    assert dx.min() < -4.5 and dx.max() > 4.5
    config = synthetic_faces.make_config(num_train=300, num_validation=0, num_test=0)
    assert config.jitter == synthetic_faces.DEFAULT_JITTER == 0.0
    pose = {(s.nuisance["dx"], s.nuisance["dy"], s.nuisance["scale"], s.nuisance["angle"])
            for s in synthetic_faces.split_specs(config, "train", 0, 300)}
    assert pose == {(0.0, 0.0, 0.9, 0.0)}
    quarter = synthetic_faces.make_config(num_train=300, num_validation=0, num_test=0, jitter=0.25)
    dx = np.array([s.nuisance["dx"] for s in synthetic_faces.split_specs(quarter, "train", 0, 300)])
    assert -1.25 <= dx.min() < -1.1 and 1.1 < dx.max() <= 1.25
    # Records are rendered with the variant's jitter, and the variants are named apart.
    full_config = synthetic_faces.make_config(num_train=2, num_validation=0, num_test=0, jitter=1)
    assert full_config.name.endswith("_jitter1") and config.name != full_config.name
    images, _ = synthetic_faces.render_split(full_config, "train", 0, 2)
    np.testing.assert_array_equal(images[1], _render.render_face(specs[1]))
    assert synthetic_faces.config_from_options({"jitter": 1.0}).jitter == 1.0
    for bad in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="jitter must be"):
            synthetic_faces.make_config(jitter=bad)


def test_default_config_and_bad_sizes():
    assert synthetic_faces.make_config().name == "default"
    assert synthetic_faces.make_config().split_sizes() == synthetic_faces.DEFAULT_SIZES
    assert sum(synthetic_faces.DEFAULT_SIZES.values()) >= 20_000
    with pytest.raises(ValueError, match="non-negative"):
        synthetic_faces.make_config(num_train=-1)


def test_render_processes_die_with_a_killed_preparation(tmp_path):
    """Issue #12: no process of ours outlives a `kill -9`ed run, preparing included."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top

    import psutil  # pylint: disable=g-import-not-at-top

    script = (
        "import sys\n"
        "from cmma_jax.data import pipeline\n"
        "pipeline.prepare('synthetic_faces', prepared_dir=sys.argv[1],"
        " options={'num_train': 20000, 'num_validation': 10, 'num_test': 10, 'seed': 9,"
        " 'num_workers': 2})\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    children = []
    try:
        def started():
            nonlocal children
            children = psutil.Process(run.pid).children(recursive=True)
            return len(children) >= 2

        wait_for(started, [run], "the render processes")
    finally:
        kill_and_expect_no_survivors(run, children)
