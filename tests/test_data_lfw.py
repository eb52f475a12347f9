"""Tests for cmma_jax/data/lfw.py, on small fixtures written here in the released files' format.

Neither LFWcrop nor lfw_attributes.txt can be downloaded in CI, so each test writes a folder:
`lfwcrop_color/faces/<Person_Name>_<NNNN>.ppm` (64x64 colour PPM) and `lfw_attributes.txt` (a
header line; a tab-separated line `#, person, imagenum, <73 names>`; one tab-separated row per
image: name, image number, 73 scores).
"""

import os
import pathlib
import warnings

import numpy as np
import pytest
from PIL import Image

from cmma_jax.data import _images
from cmma_jax.data import lfw
from cmma_jax.data import pipeline

PEOPLE = ["Aaron Eckhart", "Abdullah Gul", "Zico", "Ana Paula Gerard", "Jean-Claude Van Damme"]


def write_fixture(root, num_rows=40, *, seed=0):
    """Writes an LFW folder with `num_rows` faces; returns (root, rows, scores, images)."""
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    faces = root / "lfwcrop_color" / "faces"
    faces.mkdir(parents=True)
    rows, images = [], []
    counts = {}
    for i in range(num_rows):
        person = PEOPLE[i % len(PEOPLE)]
        counts[person] = counts.get(person, 0) + 1
        rows.append((person, counts[person]))
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(faces / f"{person.replace(' ', '_')}_{counts[person]:04d}.ppm")
        images.append(image)
    scores = rng.normal(0.0, 1.5, (num_rows, 73)).astype(np.float32)
    lines = [
        "# lfw attributes file version 1.0",
        "\t".join(["#", "person", "imagenum", *lfw.FILE_ATTRIBUTE_NAMES]),
    ]
    for (person, n), row in zip(rows, scores):
        lines.append("\t".join([person, str(n)] + [f"{v:.6f}" for v in row]))
    (root / "lfw_attributes.txt").write_text("\n".join(lines) + "\n")
    # Faces without a row are not used.
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(faces / "Nobody_0001.ppm")
    return root, rows, np.round(scores, 6), np.stack(images)


def build(root, data_dir, **kwargs):
    kwargs.setdefault("num_train", 24)
    kwargs.setdefault("num_validation", 6)
    b = lfw.Lfw(source_dir=str(root), data_dir=str(data_dir), num_workers=0, **kwargs)
    b.download_and_prepare(file_format="array_record")
    return b


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("lfw"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def builder(fixture, data_dir):
    return build(fixture[0], data_dir)


def test_attribute_file_parses(fixture):
    root, rows, scores, _ = fixture
    table = lfw.read_attribute_file(root / "lfw_attributes.txt")
    assert len(table.names) == 73
    assert table.names[:3] == ("Male", "Asian", "White")
    assert "Mouth_Slightly_Open" in table.names and "5_o'_Clock_Shadow" in table.names
    assert table.names == lfw.ATTRIBUTE_NAMES
    assert list(zip(table.people, table.imagenums)) == rows
    np.testing.assert_allclose(table.scores, scores, atol=1e-6)
    assert table.filenames[3] == "Ana_Paula_Gerard_0001.ppm"
    assert lfw.face_filename("Jean-Claude Van Damme", 12) == "Jean-Claude_Van_Damme_0012.ppm"


def test_header_without_hash_field(tmp_path):
    root, _, scores, _ = write_fixture(tmp_path, 5)
    path = root / "lfw_attributes.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].split("\t", 1)[1]  # "person\timagenum\t..." with no leading "#" field
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(lfw.read_attribute_file(path).scores, scores, atol=1e-6)


def test_splits_follow_the_paper_in_file_order(builder, fixture):
    _, rows, scores, images = fixture
    sources = builder.as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 24, "validation": 6, "test": 10}
    offsets = {"train": 0, "validation": 24, "test": 30}
    for split, offset in offsets.items():
        source = sources[split]
        for i in range(len(source)):
            record = source[i]
            person, n = rows[offset + i]
            assert record["filename"].decode() == lfw.face_filename(person, n)
            np.testing.assert_allclose(record["attributes"], scores[offset + i], atol=1e-6)
            np.testing.assert_array_equal(record["image"], images[offset + i])
    assert list(builder.info.metadata["attribute_names"]) == list(lfw.ATTRIBUTE_NAMES)


def test_paper_split_sizes():
    split = lfw.paper_split(13_143)
    assert [(split == k).sum() for k in range(3)] == [10_000, 1_000, 2_143]
    assert (
        np.all(split[:10_000] == 0)
        and np.all(split[10_000:11_000] == 1)
        and np.all(split[11_000:] == 2)
    )
    with pytest.raises(
        ValueError, match=r"needs more than 10000 \+ 1000 rows.*has 40.*smaller num_train"
    ):
        lfw.paper_split(40)


def test_pipeline_scores_raw_and_binarised(builder, fixture, data_dir):
    root, _, scores, _ = fixture
    kwargs = dict(
        batch_size=5,
        data_dir=str(data_dir),
        source_dir=str(root),
        shard_index=0,
        shard_count=1,
        options={"num_train": 24, "num_validation": 6},
    )
    raw = pipeline.load("lfw", "test", encoding="raw", **kwargs)
    binary = pipeline.load("lfw", "test", encoding="binary", **kwargs)
    signed = pipeline.load("lfw", "test", encoding="signed", **kwargs)
    assert raw.attribute_names == lfw.ATTRIBUTE_NAMES
    r = np.concatenate([b["attributes"] for b in raw.iterator])
    b = np.concatenate([b["attributes"] for b in binary.iterator])
    s = np.concatenate([b["attributes"] for b in signed.iterator])
    np.testing.assert_allclose(r, scores[30:40], atol=1e-6)
    np.testing.assert_array_equal(b, (scores[30:40] > 0).astype(np.float32))
    np.testing.assert_array_equal(s, 2 * b - 1)
    assert (
        pipeline.attribute_names(
            "lfw",
            data_dir=str(data_dir),
            source_dir=str(root),
            options={"num_train": 24, "num_validation": 6},
        )
        == lfw.ATTRIBUTE_NAMES
    )


# --- bad input -------------------------------------------------------------------------------


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"LFW folder .*absent does not exist"):
        build(tmp_path / "absent", tmp_path / "out")
    root, *_ = write_fixture(tmp_path / "a", 5)
    os.remove(root / "lfw_attributes.txt")
    with pytest.raises(
        FileNotFoundError, match=r"lfw_attributes.txt not found.*download lfw_attributes.txt"
    ):
        build(root, tmp_path / "out", num_train=2, num_validation=1)
    root, *_ = write_fixture(tmp_path / "b", 5)
    os.rename(root / "lfwcrop_color", root / "elsewhere")
    with pytest.raises(
        FileNotFoundError, match=r"lfwcrop_color/faces not found.*lfwcrop_color.zip"
    ):
        build(root, tmp_path / "out", num_train=2, num_validation=1)


def _edit_lines(root, edit):
    path = root / "lfw_attributes.txt"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda l: l[:1], r"has 1 line\(s\)"),
        (
            lambda l: [l[0], l[1].replace("person", "name")] + l[2:],
            r"line 2: the tab-separated column names must start with 'person' and 'imagenum'",
        ),
        (
            lambda l: [l[0], l[1].rsplit("\t", 1)[0]] + l[2:],
            r"line 2: 72 attribute names, expected 73",
        ),
        (
            lambda l: l[:4] + [l[4].rsplit("\t", 1)[0]] + l[5:],
            r"line 5: 72 attribute scores for 73 attribute names \(row 'Zico'\)",
        ),
        (
            lambda l: l[:3] + ["\t".join(["Abdullah Gul", "one"] + l[3].split("\t")[2:])] + l[4:],
            r"line 4: expected an integer image number and real-valued scores, got 'one'",
        ),
        (
            lambda l: l[:2] + [l[2].rsplit("\t", 1)[0] + "\tnan"] + l[3:],
            r"line 3: non-finite score",
        ),
        (lambda l: l[:2], r"lists no images"),
    ],
    ids=[
        "truncated",
        "no-person-column",
        "names-count",
        "short-row",
        "bad-imagenum",
        "nan",
        "no-rows",
    ],
)
def test_malformed_attribute_file(tmp_path, edit, message):
    root, *_ = write_fixture(tmp_path, 5)
    _edit_lines(root, edit)
    with pytest.raises(ValueError, match=message) as info:
        build(root, tmp_path / "out", num_train=2, num_validation=1)
    assert "lfw_attributes.txt" in str(info.value)


def test_too_few_rows_for_the_paper_split(tmp_path):
    root, *_ = write_fixture(tmp_path, 5)
    with pytest.raises(
        ValueError, match=r"needs more than 10000 \+ 1000 rows in lfw_attributes.txt.*has 5"
    ):
        lfw.Lfw(
            source_dir=str(root), data_dir=str(tmp_path / "out"), num_workers=0
        ).download_and_prepare(file_format="array_record")


def test_image_listed_but_absent(tmp_path):
    root, *_ = write_fixture(tmp_path, 12)
    os.remove(root / "lfwcrop_color" / "faces" / "Zico_0001.ppm")
    with pytest.raises(
        FileNotFoundError,
        match=(
            r"1 image\(s\) listed in .*lfw_attributes.txt are missing"
            r" .*Zico_0001.ppm.*max_bad_images=1"
        ),
    ):
        build(root, tmp_path / "out", num_train=6, num_validation=2)
    with pytest.warns(UserWarning, match=r"Skipping 1 image\(s\).*Zico_0001.ppm"):
        b = build(root, tmp_path / "out2", num_train=6, num_validation=2, max_bad_images=1)
    # The split is by row, before skipping: row 2 (Zico_0001) was in train.
    assert {k: len(v) for k, v in b.as_data_source().items()} == {
        "train": 5,
        "validation": 2,
        "test": 4,
    }


def test_corrupt_image(tmp_path):
    root, *_ = write_fixture(tmp_path, 12)
    (root / "lfwcrop_color" / "faces" / "Abdullah_Gul_0002.ppm").write_bytes(
        b"P6\n64 64\n255\n" + b"\0" * 100
    )
    with pytest.raises(
        _images.UnreadableImageError,
        match=r"Cannot decode image .*Abdullah_Gul_0002.ppm.*max_bad_images=1",
    ):
        build(root, tmp_path / "out", num_train=6, num_validation=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = build(root, tmp_path / "out2", num_train=6, num_validation=2, max_bad_images=1)
    assert any(
        "Skipped 1 unreadable image(s)" in str(w.message)
        and "Abdullah_Gul_0002.ppm" in str(w.message)
        for w in caught
    )
    assert b.info.metadata["skipped_images"] == ["Abdullah_Gul_0002.ppm"]
