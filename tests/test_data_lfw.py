"""Tests for cmma_jax/data/lfw.py, on small fixtures written here in the released files' format.

Neither LFWcrop nor lfw_attributes.txt can be downloaded in CI, so each test writes a folder:
`lfwcrop_color/faces/<Person_Name>_<NNNN>.ppm` (64x64 colour PPM) and `lfw_attributes.txt` (a
header line; a tab-separated line `#, person, imagenum, <73 names>`; one tab-separated row per
image: name, image number, 73 scores).
"""

import json
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
        prepared_dir=str(data_dir),
        data_dir=str(root),
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
            prepared_dir=str(data_dir),
            data_dir=str(root),
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
        (
            # A duplicated row (the same face, perhaps with other scores) would put one face in
            # the training and the test split.
            lambda l: l[:5] + [l[3]] + l[5:],
            r"line 6: image \d+ of '[^']+' is listed again \(first on line 4\); each image must"
            r" have one row",
        ),
    ],
    ids=[
        "truncated",
        "no-person-column",
        "names-count",
        "short-row",
        "bad-imagenum",
        "nan",
        "no-rows",
        "duplicate-row",
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


# --- the 250x250 person-folder layouts (lfw/, lfw-deepfunneled/) ------------------------------


def write_person_fixture(
    root, num_rows=12, *, folder="lfw-deepfunneled", binary=False, nested=False, seed=1
):
    """Writes an LFW folder of 250x250 JPEGs in person folders (`folder`/<Person>/<Person>_NNNN.jpg)
    and an attribute file: real scores in lfw_attributes.txt, or +-1 in lfw_attributes_binary.txt.

    Returns (root, rows, values, paths): the (person, n) rows, the values written and each row's
    JPEG.
    """
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    images_dir = root / folder / folder if nested else root / folder
    rows, paths = [], []
    counts = {}
    for i in range(num_rows):
        person = PEOPLE[i % len(PEOPLE)]
        counts[person] = counts.get(person, 0) + 1
        rows.append((person, counts[person]))
        name = person.replace(" ", "_")
        (images_dir / name).mkdir(parents=True, exist_ok=True)
        # Smooth colour noise: JPEG keeps it well and every crop differs.
        small = rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)
        path = images_dir / name / f"{name}_{counts[person]:04d}.jpg"
        Image.fromarray(small).resize((250, 250), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    if binary:
        values = np.where(rng.random((num_rows, 73)) < 0.4, 1.0, -1.0).astype(np.float32)
        header, filename = "# 12 rows: 1 = among the two thirds ...", "lfw_attributes_binary.txt"
        fmt = lambda v: str(int(v))  # noqa: E731
    else:
        values = np.round(rng.normal(0.0, 1.5, (num_rows, 73)), 6).astype(np.float32)
        header, filename = "# lfw attributes file version 1.0", "lfw_attributes.txt"
        fmt = lambda v: f"{v:.6f}"  # noqa: E731
    lines = [header, "\t".join(["#", "person", "imagenum", *lfw.FILE_ATTRIBUTE_NAMES])]
    for (person, n), row in zip(rows, values):
        lines.append("\t".join([person, str(n)] + [fmt(v) for v in row]))
    (root / filename).write_text("\n".join(lines) + "\n")
    # Images without a row are not used.
    (images_dir / "Nobody").mkdir()
    Image.new("RGB", (250, 250)).save(images_dir / "Nobody" / "Nobody_0001.jpg")
    return root, rows, values, paths


def expected_face(path, box):
    return lfw.crop_face(_images.read_image(path), box)


def assert_records(builder, rows, values, paths, box, sizes=(6, 2, 4)):
    sources = builder.as_data_source()
    assert tuple(len(sources[s]) for s in lfw.SPLITS) == sizes
    offset = 0
    for split in lfw.SPLITS:
        source = sources[split]
        for i in range(len(source)):
            record = source[i]
            person, n = rows[offset + i]
            assert record["filename"].decode() == lfw.face_filename(person, n, ".jpg")
            np.testing.assert_array_equal(record["attributes"], values[offset + i])
            assert record["image"].shape == (64, 64, 3)
            np.testing.assert_array_equal(record["image"], expected_face(paths[offset + i], box))
        offset += len(source)


@pytest.mark.parametrize(
    "folder, binary, nested, box",
    [
        ("lfw-deepfunneled", True, False, lfw.DEEPFUNNELED_BOX),
        ("lfw-deepfunneled", False, True, lfw.DEEPFUNNELED_BOX),
        ("lfw", False, False, lfw.LFWCROP_BOX),
        ("lfw", True, True, lfw.LFWCROP_BOX),
    ],
    ids=["deepfunneled-binary", "deepfunneled-scores-nested", "lfw-scores", "lfw-binary-nested"],
)
def test_person_folder_layouts(tmp_path, folder, binary, nested, box):
    root, rows, values, paths = write_person_fixture(
        tmp_path / "src", folder=folder, binary=binary, nested=nested
    )
    b = build(root, tmp_path / "out", num_train=6, num_validation=2)
    assert_records(b, rows, values, paths, box)
    meta = b.info.metadata
    assert meta["layout"] == folder
    assert meta["attribute_values"] == ("binary" if binary else "scores")
    assert os.path.basename(meta["attribute_file"]) == (
        "lfw_attributes_binary.txt" if binary else "lfw_attributes.txt"
    )
    assert tuple(meta["crop_box"]) == box
    assert list(meta["attribute_names"]) == list(lfw.ATTRIBUTE_NAMES)


def test_binary_file_through_the_pipeline(tmp_path):
    root, _, values, _ = write_person_fixture(tmp_path / "src", binary=True)
    kwargs = dict(
        batch_size=4,
        prepared_dir=str(tmp_path / "out"),
        data_dir=str(root),
        shard_index=0,
        shard_count=1,
        options={"num_train": 6, "num_validation": 2, "num_workers": 0},
    )

    def read(encoding):
        loaded = pipeline.load("lfw", "test", encoding=encoding, **kwargs)
        return np.concatenate([b["attributes"] for b in loaded.iterator])

    raw, binary = read("raw"), read("binary")
    np.testing.assert_array_equal(raw, values[8:12])  # stored as in the file: +-1
    np.testing.assert_array_equal(binary, (values[8:12] > 0).astype(np.float32))


def test_crop_lands_on_the_box():
    # A 250x250 image, black, white inside the deep-funneled box, a red dot at the box's centre.
    left, top, right, bottom = (int(v) for v in lfw.DEEPFUNNELED_BOX)
    assert (right - left, bottom - top) == (100, 100)
    assert ((left + right) / 2, (top + bottom) / 2) == (125.0, 130.0)
    image = np.zeros((250, 250, 3), np.uint8)
    image[top:bottom, left:right] = 255
    image[128:132, 123:127] = (255, 0, 0)
    face = lfw.crop_face(image, lfw.DEEPFUNNELED_BOX)
    assert face.shape == (64, 64, 3)
    # The box fills the output: white to its edges (Lanczos reaches at most 2 pixels outside).
    inner = face[2:-2, 2:-2].astype(int)
    redness = inner[..., 0] - inner[..., 1]
    assert (inner[redness < 20] > 230).all()
    assert face[0:1].mean() > 120 and face[-1:].mean() > 120
    assert face[:, 0:1].mean() > 120 and face[:, -1:].mean() > 120
    # The red dot lands at the centre of the 64x64 face.
    ys, xs = np.nonzero((face[..., 0].astype(int) - face[..., 1]) > 100)
    assert abs(ys.mean() - 31.5) < 1 and abs(xs.mean() - 31.5) < 1
    # A box 10 pixels further down shows the black below the white square.
    shifted = lfw.crop_face(image, (left, top + 10, right, bottom + 10))
    assert shifted[-5:].mean() < 20
    # The box is in pixels of 250x250 and scales with the image: a 500x500 copy gives the same.
    big = np.asarray(Image.fromarray(image).resize((500, 500), Image.NEAREST))
    assert np.abs(lfw.crop_face(big, lfw.DEEPFUNNELED_BOX).astype(int) - face).mean() < 3
    # The original lfw/ images get LFWcrop's box: corners (83, 92) and (166, 175), 84x84.
    assert lfw.CROP_BOXES == {
        "lfw": (83.0, 92.0, 167.0, 176.0),
        "lfw-deepfunneled": (75.0, 80.0, 175.0, 180.0),
    }
    image = np.zeros((250, 250, 3), np.uint8)
    image[92:176, 83:167] = 255
    assert lfw.crop_face(image, lfw.LFWCROP_BOX)[2:-2, 2:-2].min() > 230


def test_layout_choice_and_errors(tmp_path):
    # Several layouts in one folder: LFWcrop first, then lfw/, then lfw-deepfunneled/; `layout`
    # picks one.
    root, _, _, deep_paths = write_person_fixture(tmp_path / "src", folder="lfw-deepfunneled")
    # The same rows in lfw/, other images; lfw_attributes.txt is rewritten with other values.
    root, rows, values, lfw_paths = write_person_fixture(tmp_path / "src", folder="lfw", seed=5)
    assert lfw.find_layout(root).name == "lfw"
    assert lfw.find_layout(root, "lfw-deepfunneled").image_dir == str(root / "lfw-deepfunneled")
    b = build(root, tmp_path / "out", num_train=6, num_validation=2, layout="lfw-deepfunneled")
    assert b.info.metadata["layout"] == "lfw-deepfunneled"
    assert_records(b, rows, values, deep_paths, lfw.DEEPFUNNELED_BOX)
    # Another crop box.
    b = build(root, tmp_path / "out", num_train=6, num_validation=2, crop_box=[50, 50, 200, 200])
    assert b.info.metadata["layout"] == "lfw"
    assert b.info.metadata["crop_box"] == [50.0, 50.0, 200.0, 200.0]
    assert_records(b, rows, values, lfw_paths, (50, 50, 200, 200))
    b = build(root, tmp_path / "out", num_train=6, num_validation=2)
    assert_records(b, rows, values, lfw_paths, lfw.LFWCROP_BOX)
    with pytest.raises(ValueError, match=r"Unknown LFW layout 'lfwcrop_grey'"):
        build(root, tmp_path / "out", layout="lfwcrop_grey")
    with pytest.raises(
        FileNotFoundError, match=r"lfwcrop_color/faces not found \(layout='lfwcrop'\)"
    ):
        build(root, tmp_path / "out", num_train=6, num_validation=2, layout="lfwcrop")
    with pytest.raises(ValueError, match=r"crop_box .* must satisfy 0 <= left < right <= 250"):
        build(root, tmp_path / "out", crop_box=(0, 0, 300, 100))
    with pytest.raises(ValueError, match=r"crop_box must be 4 numbers"):
        build(root, tmp_path / "out", crop_box=(0, 0, 100))
    # LFWcrop faces are cropped already.
    crop_root, *_ = write_fixture(tmp_path / "crop", 12)
    with pytest.raises(ValueError, match=r"crop_box applies to the 250x250 layouts"):
        build(crop_root, tmp_path / "out", num_train=6, num_validation=2, crop_box=(0, 0, 99, 99))
    (crop_root / "lfw-deepfunneled").mkdir()
    assert lfw.find_layout(crop_root).name == "lfwcrop"
    # No layout at all: the error names the three.
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "lfw_attributes.txt").write_text(
        (root / "lfw_attributes.txt").read_text()
    )
    with pytest.raises(
        FileNotFoundError,
        match=r"No LFW faces in .*empty: lfwcrop_color/faces not found, nor lfw/ or"
        r" lfw-deepfunneled/.*<Person_Name>/<Person_Name>_NNNN.jpg",
    ):
        build(tmp_path / "empty", tmp_path / "out", num_train=6, num_validation=2)


def test_attribute_file_choice(tmp_path):
    # Both files: the released one (real scores) is read, unless attribute_file names the other.
    root, rows, scores, paths = write_person_fixture(tmp_path / "src")
    binary_root, _, binary, _ = write_person_fixture(tmp_path / "bin", binary=True)
    (root / "lfw_attributes_binary.txt").write_text(
        (binary_root / "lfw_attributes_binary.txt").read_text()
    )
    b = build(root, tmp_path / "out", num_train=6, num_validation=2)
    assert b.info.metadata["attribute_values"] == "scores"
    assert_records(b, rows, scores, paths, lfw.DEEPFUNNELED_BOX)
    b = build(
        root,
        tmp_path / "out",
        num_train=6,
        num_validation=2,
        attribute_file="lfw_attributes_binary.txt",
    )
    assert b.info.metadata["attribute_values"] == "binary"
    assert_records(b, rows, binary, paths, lfw.DEEPFUNNELED_BOX)
    assert lfw.attribute_names_in(binary_root) == lfw.ATTRIBUTE_NAMES
    assert lfw.attribute_names_in(tmp_path) is None
    with pytest.raises(
        FileNotFoundError, match=r"other.txt \(attribute_file='other.txt'\) not found"
    ):
        build(root, tmp_path / "out", attribute_file="other.txt")
    os.remove(root / "lfw_attributes.txt")
    os.remove(root / "lfw_attributes_binary.txt")
    with pytest.raises(
        FileNotFoundError,
        match=r"lfw_attributes.txt not found \(nor lfw_attributes_binary.txt\).*download",
    ):
        build(root, tmp_path / "out", num_train=6, num_validation=2)


def test_max_rows(tmp_path):
    root, rows, values, paths = write_person_fixture(tmp_path / "src", 20)
    b = build(root, tmp_path / "out", num_train=6, num_validation=2, max_rows=12)
    assert_records(b, rows[:12], values[:12], paths[:12], lfw.DEEPFUNNELED_BOX)
    with pytest.raises(ValueError, match=r"max_rows must be None \(all rows\) or >= 1"):
        build(root, tmp_path / "out", max_rows=0)


def test_jpeg_absent_or_corrupt(tmp_path):
    root, rows, values, paths = write_person_fixture(tmp_path / "src")
    os.remove(paths[2])  # Zico_0001.jpg, in train
    paths[5].write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # Aaron_Eckhart_0002.jpg, in train
    with pytest.raises(
        FileNotFoundError,
        match=r"1 image\(s\) listed in .*lfw_attributes.txt are missing from .*lfw-deepfunneled:"
        r" Zico/Zico_0001.jpg.*max_bad_images=1",
    ):
        build(root, tmp_path / "out", num_train=6, num_validation=2)
    with pytest.raises(
        _images.UnreadableImageError,
        match=r"Cannot decode image .*Aaron_Eckhart_0002.jpg.*max_bad_images=2",
    ), pytest.warns(UserWarning, match=r"Skipping 1 image\(s\).*Zico/Zico_0001.jpg"):
        build(root, tmp_path / "out", num_train=6, num_validation=2, max_bad_images=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = build(root, tmp_path / "out2", num_train=6, num_validation=2, max_bad_images=2)
    assert b.info.metadata["skipped_images"] == [
        "Zico/Zico_0001.jpg",
        "Aaron_Eckhart/Aaron_Eckhart_0002.jpg",
    ]
    keep = [i for i in range(12) if i not in (2, 5)]
    assert_records(
        b, [rows[i] for i in keep], values[keep], [paths[i] for i in keep],
        lfw.DEEPFUNNELED_BOX, sizes=(4, 2, 4),
    )


def test_options_are_the_builders_keywords():
    import inspect

    params = set(inspect.signature(lfw.Lfw.__init__).parameters) - {"self", "config", "kwargs"}
    assert set(lfw.OPTIONS) == params - {"source_dir"}


# --- the real data, when ../shared/data/lfw is present -----------------------------------------

REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


@pytest.mark.skipif(not (REAL / "lfw-deepfunneled").is_dir(), reason=f"{REAL} absent")
def test_real_faces(tmp_path):
    """The first 300 rows of the shared deep-funneled LFW with the binary attribute file."""
    b = build(REAL, tmp_path / "out", num_train=200, num_validation=50, max_rows=300)
    sources = b.as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 200, "validation": 50, "test": 50}
    meta = b.info.metadata
    assert meta["layout"] == "lfw-deepfunneled" and meta["attribute_values"] == "binary"
    assert list(meta["attribute_names"]) == list(lfw.ATTRIBUTE_NAMES)
    table = lfw.read_attribute_file(REAL / "lfw_attributes_binary.txt").head(300)
    assert set(np.unique(table.scores)) == {-1.0, 1.0}
    faces = []
    offset = 0
    for split in lfw.SPLITS:
        source = sources[split]
        for i in range(len(source)):
            record = source[i]
            row = offset + i
            person, n = table.people[row], table.imagenums[row]
            assert record["filename"].decode() == lfw.face_filename(person, n, ".jpg")
            np.testing.assert_array_equal(record["attributes"], table.scores[row])
            faces.append(record["image"])
        offset += len(source)
    faces = np.stack(faces).astype(np.float32)
    first = lfw.image_path("lfw-deepfunneled", table.people[0], table.imagenums[0])
    first = REAL / "lfw-deepfunneled" / first
    np.testing.assert_array_equal(faces[0], expected_face(first, lfw.DEEPFUNNELED_BOX))
    # Real faces: every one has contrast, and the crop is mostly skin in the middle (the mean
    # face's centre is brighter and redder than its corners).
    assert faces.reshape(len(faces), -1).std(axis=1).min() > 10
    mean = faces.mean(axis=0)
    centre = mean[24:40, 24:40]
    corners = np.stack([mean[:8, :8], mean[:8, -8:], mean[-8:, :8], mean[-8:, -8:]])
    assert centre.mean() > corners.mean()
    assert centre[..., 0].mean() > centre[..., 2].mean() + 15  # skin: red above blue


# --- issue #12: images far from the layout's size, replaced images -----------------------------


@pytest.mark.parametrize(
    "expected, good, bad",
    [
        (_images.CELEBA_SIZE, [(178, 218), (89, 109), (40, 49), (178, 178)],
         [(1, 1), (39, 48), (218, 178), (100, 218)]),
        (_images.LFW_SIZE, [(250, 250), (125, 125), (96, 96), (250, 210)],
         [(1, 1), (95, 95), (250, 100), (64, 64)]),
        (_images.LFWCROP_SIZE, [(64, 64), (32, 32), (64, 54)],
         [(1, 1), (31, 31), (64, 20), (20, 64)]),
    ],
)
def test_how_far_from_the_expected_size_an_image_may_be(expected, good, bad):
    assert [expected.problem(w, h) for w, h in good] == [None] * len(good)
    assert all(expected.problem(w, h) is not None for w, h in bad)


def test_a_tiny_lfwcrop_face_is_a_bad_image(tmp_path):
    root, rows, scores, images = write_fixture(tmp_path / "src", 12)
    Image.new("RGB", (1, 1)).save(root / lfw.FACES_DIR / "Zico_0001.ppm")  # row 2
    with pytest.raises(
        _images.BadImageSizeError,
        match=r"Zico_0001.ppm is 1x1 \(width x height\), far from LFWcrop's faces \(64x64 or a"
        r" rescaled copy\): its short side is under 32 px.*max_bad_images=1",
    ):
        build(root, tmp_path / "out", num_train=6, num_validation=2)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image\(s\).*Zico_0001.ppm"):
        b = build(root, tmp_path / "out2", num_train=6, num_validation=2, max_bad_images=1)
    assert b.info.metadata["skipped_images"] == ["Zico_0001.ppm"]
    assert len(b.as_data_source(split="train")) == 5


def test_a_person_folder_jpeg_far_from_250x250_is_a_bad_image(tmp_path):
    root, rows, values, paths = write_person_fixture(tmp_path / "src")
    Image.new("RGB", (250, 100)).save(paths[3])  # a panorama
    Image.open(paths[4]).resize((125, 125)).save(paths[4])  # half size: fine
    with pytest.raises(
        _images.BadImageSizeError,
        match=r"Ana_Paula_Gerard_0001.jpg is 250x100 .*far from LFW's person-folder JPEGs"
        r" \(250x250 or a rescaled copy\): its aspect .* by more than 25%.*max_bad_images=1",
    ):
        build(root, tmp_path / "out", num_train=6, num_validation=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = build(root, tmp_path / "out2", num_train=6, num_validation=2, max_bad_images=1)
    assert b.info.metadata["skipped_images"] == ["Ana_Paula_Gerard/Ana_Paula_Gerard_0001.jpg"]


def test_a_replaced_image_is_prepared_afresh(tmp_path):
    root, rows, values, paths = write_person_fixture(tmp_path / "src")
    first = build(root, tmp_path / "out", num_train=6, num_validation=2)
    replacement = np.random.default_rng(7).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    Image.fromarray(replacement).save(paths[1], quality=90)  # Abdullah_Gul_0001.jpg, in place
    second = build(root, tmp_path / "out", num_train=6, num_validation=2)
    assert second.builder_config.name != first.builder_config.name
    assert second.data_dir != first.data_dir
    np.testing.assert_array_equal(
        second.as_data_source(split="train")[1]["image"],
        expected_face(paths[1], lfw.DEEPFUNNELED_BOX),
    )
    assert not np.array_equal(
        first.as_data_source(split="train")[1]["image"],
        second.as_data_source(split="train")[1]["image"],
    )
    # The same for LFWcrop faces: a face overwritten with other pixels, same size.
    crop_root, *_ = write_fixture(tmp_path / "crop", 12)
    name = lfw.make_config(crop_root).name
    face = crop_root / lfw.FACES_DIR / "Zico_0001.ppm"
    stat = face.stat()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(face)
    os.utime(face, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as if a second later
    assert face.stat().st_size == stat.st_size
    assert lfw.make_config(crop_root).name != name


def test_new_modification_times_alone_keep_the_name_and_the_prepared_copy(tmp_path):
    """The same files touched (a copy without -p, a folder mounted afresh each session): the
    content fingerprint is read again, gives the same name, and nothing is prepared again."""
    root, *_ = write_person_fixture(tmp_path / "src")
    first = build(root, tmp_path / "out", num_train=6, num_validation=2)
    prepared = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    for path in [p for p in root.rglob("*") if p.is_file()]:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 86_400 * 10**9))
    second = build(root, tmp_path / "out", num_train=6, num_validation=2)
    assert second.builder_config.name == first.builder_config.name
    assert second.data_dir == first.data_dir
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == prepared
    # An edited attribute file (same size, same modification time) still gives another name.
    attribute_file = root / "lfw_attributes.txt"
    stat = attribute_file.stat()
    text = attribute_file.read_text()
    last = text[-2]  # the last digit of the last score
    attribute_file.write_text(text[:-2] + ("1" if last != "1" else "2") + "\n")
    os.utime(attribute_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert attribute_file.stat().st_size == stat.st_size
    assert lfw.make_config(root).name != first.builder_config.name


def test_the_content_digest_is_remembered_and_a_bad_record_is_no_error(tmp_path, monkeypatch):
    from cmma_jax.data import _builder  # pylint: disable=g-import-not-at-top

    root, *_ = write_person_fixture(tmp_path / "src")
    image_dir = str(root / "lfw-deepfunneled")
    monkeypatch.setenv("CMMA_JAX_CACHE_DIR", str(tmp_path / "cache"))
    digest = _builder.image_content_fingerprint(image_dir)
    record = tmp_path / "cache" / "folder_digests.json"
    known = json.loads(record.read_text())
    assert list(known.values()) == [digest]
    # The record is what a second call reads (no image is read): a planted value comes back.
    record.write_text(json.dumps({k: "planted" for k in known}))
    assert _builder.image_content_fingerprint(image_dir) == "planted"
    # A damaged record, or a cache folder that cannot be made: the digest is computed.
    record.write_text("{not json")
    assert _builder.image_content_fingerprint(image_dir) == digest
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("CMMA_JAX_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    assert _builder.image_content_fingerprint(image_dir) == digest


@pytest.mark.skipif(not (REAL / "lfw-deepfunneled").is_dir(), reason=f"{REAL} absent")
def test_the_image_fingerprint_of_13233_jpegs_reads_no_image_once_known(monkeypatch):
    """Once the folder's state is recorded, the digest costs only `stat`s: no image is opened
    (counted, not timed, so that a loaded machine cannot fail it)."""
    import builtins  # pylint: disable=g-import-not-at-top

    from cmma_jax.data import _builder  # pylint: disable=g-import-not-at-top

    image_dir = lfw.find_layout(REAL, "lfw-deepfunneled").image_dir
    first = _builder.image_content_fingerprint(image_dir)  # reads the images, or finds the record
    opened = []

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(_builder, "open", counting_open, raising=False)
    assert _builder.image_content_fingerprint(image_dir) == first
    assert not [p for p in opened if p.startswith(image_dir)]


def test_links_back_to_a_containing_folder_are_skipped_not_followed(tmp_path, monkeypatch):
    """`ln -s . loopX` inside the image folder made the scan follow ~2^40 paths (a hang)."""
    from cmma_jax.data import _builder  # pylint: disable=g-import-not-at-top

    root, *_ = write_person_fixture(tmp_path / "src")
    image_dir = root / "lfw-deepfunneled"
    monkeypatch.setenv("CMMA_JAX_CACHE_DIR", str(tmp_path / "cache"))
    plain = _builder._scan_files(str(image_dir))
    digest = _builder.image_content_fingerprint(str(image_dir))
    os.symlink(".", image_dir / "loopX")
    os.symlink(".", image_dir / "loopY")
    person = next(p for p in image_dir.iterdir() if p.is_dir() and not p.is_symlink())
    os.symlink("..", person / "up")
    # A link to a folder elsewhere is still followed.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "extra.txt").write_text("x")
    os.symlink(tmp_path / "elsewhere", image_dir / "linked")
    real_scandir, calls = os.scandir, []

    def counting_scandir(path):
        calls.append(path)
        if len(calls) > 100:  # the fixture has a dozen folders: a loop is being followed
            raise RecursionError(f"scanned {len(calls)} folders")
        return real_scandir(path)

    monkeypatch.setattr(_builder.os, "scandir", counting_scandir)
    files = _builder._scan_files(str(image_dir))
    assert [f[0] for f in files] == sorted([f[0] for f in plain] + ["linked/extra.txt"])
    os.remove(image_dir / "linked")
    assert _builder.image_content_fingerprint(str(image_dir)) == digest
