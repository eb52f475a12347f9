"""Tests for cmma_jax/data/celeba.py on the real faces in ../shared/data/celeba.

The shared folder is only read. Error cases use small folders in a temporary directory whose
images are symbolic links to the shared JPEGs (or files the tests write).
"""

import os
import pathlib
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from cmma_jax.data import _images
from cmma_jax.data import celeba
from cmma_jax.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "celeba"

pytestmark = pytest.mark.skipif(
    not (SHARED / "list_attr_celeba.txt").is_file(),
    reason=f"the shared CelebA copy is not at {SHARED} (CI provides it beside the checkout)",
)


def parse_attributes(path):
    """An independent reading of list_attr_celeba.txt: {filename: int array}, names, file order."""
    with open(path) as f:
        lines = f.read().splitlines()
    names = lines[1].split()
    rows = {}
    order = []
    for line in lines[2:]:
        fields = line.split()
        if fields:
            rows[fields[0]] = np.array([int(v) for v in fields[1:]])
            order.append(fields[0])
    return names, rows, order


@pytest.fixture(scope="module")
def shared_attributes():
    return parse_attributes(SHARED / "list_attr_celeba.txt")


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def builder(prepared_dir):
    b = celeba.CelebA(source_dir=str(SHARED), data_dir=prepared_dir)
    b.download_and_prepare(file_format="array_record")
    return b


def make_folder(root, num_images, *, partition=None, attribute_lines=None, link=True):
    """A CelebA-layout folder with the first `num_images` shared faces (symlinked)."""
    root = pathlib.Path(root)
    (root / "img_align_celeba").mkdir(parents=True)
    with open(SHARED / "list_attr_celeba.txt") as f:
        lines = f.read().splitlines()
    rows = lines[2 : 2 + num_images]
    if attribute_lines is None:
        attribute_lines = [str(num_images), lines[1]] + rows
    (root / "list_attr_celeba.txt").write_text("\n".join(attribute_lines) + "\n")
    for row in rows:
        name = row.split()[0]
        if link:
            os.symlink(SHARED / "img_align_celeba" / name, root / "img_align_celeba" / name)
    if partition is not None:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{row.split()[0]} {p}\n" for row, p in zip(rows, partition))
        )
    return root


def build(root, data_dir, **kwargs):
    b = celeba.CelebA(source_dir=str(root), data_dir=str(data_dir), num_workers=0, **kwargs)
    b.download_and_prepare(file_format="array_record")
    return b


def test_known_faces(builder, shared_attributes):
    names, _, _ = shared_attributes
    assert tuple(names) == celeba.ATTRIBUTE_NAMES
    train = builder.as_data_source(split="train")
    male, smiling = names.index("Male"), names.index("Smiling")
    first = train[0]
    assert first["filename"] == b"000001.jpg"
    assert first["attributes"][smiling] == 1 and first["attributes"][male] == -1  # a smiling woman
    seventh = train[6]
    assert seventh["filename"] == b"000007.jpg" and seventh["attributes"][male] == 1


def test_every_record_matches_the_attribute_file_in_order(builder, shared_attributes):
    _, rows, order = shared_attributes
    sources = builder.as_data_source()
    # No partition file in the shared copy: first 8,000 train, next 500 validation, last 500 test.
    expected = {"train": order[:8000], "validation": order[8000:8500], "test": order[8500:]}
    for split, filenames in expected.items():
        source = sources[split]
        assert len(source) == len(filenames)
        for i in range(0, len(source), 7):  # every 7th record keeps the test quick
            record = source[i]
            assert record["filename"].decode() == filenames[i]
            np.testing.assert_array_equal(
                record["attributes"], rows[filenames[i]].astype(np.float32)
            )
        assert source[len(source) - 1]["filename"].decode() == filenames[-1]
    assert builder.info.metadata["partition"] == "file_order_18ths"
    assert builder.info.metadata["skipped_images"] == []


def test_crop_is_relative_to_the_image_size(builder):
    record = builder.as_data_source(split="train")[0]
    image = Image.open(SHARED / "img_align_celeba" / "000001.jpg").convert("RGB")
    w, h = image.size
    assert (w, h) == (89, 109)
    side = 0.8 * w
    box = (0.5 * w - side / 2, 0.55 * h - side / 2, 0.5 * w + side / 2, 0.55 * h + side / 2)
    expected = np.asarray(image.resize((64, 64), Image.LANCZOS, box=box))
    np.testing.assert_array_equal(record["image"], expected)
    # The same relative crop of the image at official size gives nearly the same face.
    big = image.resize((178, 218), Image.BICUBIC)
    np.testing.assert_allclose(
        _images.crop_celeba(big).astype(float), expected.astype(float), atol=60
    )
    assert np.abs(_images.crop_celeba(big).astype(float) - expected).mean() < 8


def test_pipeline_yields_the_attributes_in_order(builder, prepared_dir, shared_attributes):
    _, rows, order = shared_attributes
    data = pipeline.load(
        "celeba",
        "validation",
        batch_size=100,
        data_dir=str(SHARED),
        prepared_dir=prepared_dir,
        shard_index=0,
        shard_count=1,
    )
    assert data.attribute_names == celeba.ATTRIBUTE_NAMES
    batches = list(data.iterator)
    assert len(batches) == 5
    attributes = np.concatenate([b["attributes"] for b in batches])
    expected = np.stack([rows[name] > 0 for name in order[8000:8500]]).astype(np.float32)
    np.testing.assert_array_equal(attributes, expected)
    assert batches[0]["image"].dtype == np.float32 and batches[0]["image"].shape == (100, 64, 64, 3)
    assert 0.0 <= batches[0]["image"].min() and batches[0]["image"].max() <= 1.0


def test_rebuild_is_identical_and_partition_file_is_used(tmp_path):
    partition = [0, 1, 2, 0, 0, 2, 1, 0, 0, 0, 2, 0]
    root = make_folder(tmp_path / "celeba", 12, partition=partition)
    a = build(root, tmp_path / "a")
    b = build(root, tmp_path / "b")
    assert a.info.metadata["partition"] == "official"
    for split, code in (("train", 0), ("validation", 1), ("test", 2)):
        sa, sb = a.as_data_source(split=split), b.as_data_source(split=split)
        expected = [f"{i + 1:06d}.jpg" for i, p in enumerate(partition) if p == code]
        assert [sa[i]["filename"].decode() for i in range(len(sa))] == expected
        for i in range(len(sa)):
            np.testing.assert_array_equal(sa[i]["image"], sb[i]["image"])


def test_split_by_file_order():
    split = celeba.split_by_file_order(9000)
    assert (split == 0).sum() == 8000 and np.all(split[:8000] == 0)
    assert np.all(split[8000:8500] == 1) and np.all(split[8500:] == 2)
    split = celeba.split_by_file_order(202_599)
    assert (split == 1).sum() == (split == 2).sum() == round(202_599 / 18)


def test_config_name_follows_the_folder(tmp_path):
    root = make_folder(tmp_path / "celeba", 3)
    first = celeba.make_config(root).name
    assert first == celeba.make_config(str(root)).name
    assert first != celeba.make_config(root, max_bad_images=1).name
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 2\n")
    assert first != celeba.make_config(root).name


# --- bad input -------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"CelebA folder .*nowhere does not exist.*source_dir"
    ):
        build(tmp_path / "nowhere", tmp_path / "out")


def test_missing_image_folder(tmp_path):
    root = make_folder(tmp_path / "celeba", 3)
    shutil.rmtree(root / "img_align_celeba")
    with pytest.raises(
        FileNotFoundError, match=r"img_align_celeba not found.*extract img_align_celeba.zip"
    ):
        build(root, tmp_path / "out")


def test_missing_attribute_file(tmp_path):
    root = make_folder(tmp_path / "celeba", 3)
    os.remove(root / "list_attr_celeba.txt")
    with pytest.raises(
        FileNotFoundError, match=r"list_attr_celeba.txt not found.*copy list_attr_celeba.txt"
    ):
        build(root, tmp_path / "out")


def _attribute_lines(num_rows=3):
    with open(SHARED / "list_attr_celeba.txt") as f:
        lines = f.read().splitlines()
    return [str(num_rows), lines[1]] + lines[2 : 2 + num_rows]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda l: ["three"] + l[1:], r"line 1: expected the number of rows, got 'three'"),
        (lambda l: ["5"] + l[1:], r"line 1: says 5 rows but the file has 3"),
        (
            lambda l: [l[0], " ".join(l[1].split()[:-1])] + l[2:],
            r"line 2: expected CelebA's 40 attribute names.*got 39",
        ),
        (
            lambda l: l[:3] + [l[3].rsplit(" ", 1)[0]] + l[4:],
            r"line 4: 39 attribute values for 40 attribute names \(row '000002.jpg'\)",
        ),
        (
            lambda l: l[:2] + [l[2].replace(" 1", " 2", 1)] + l[3:],
            r"line 3: attribute values must be 1 or -1, got \[2\]",
        ),
        (
            lambda l: l[:2] + [l[2].replace(" 1", " yes", 1)] + l[3:],
            r"line 3: attribute values must be integers",
        ),
        (lambda l: l[:1], r"has 1 line\(s\)"),
        (lambda l: l[:3] + [l[2]], r"lists 1 file\(s\) twice"),
    ],
    ids=[
        "count-not-int",
        "count-mismatch",
        "names",
        "short-row",
        "bad-value",
        "non-integer",
        "truncated",
        "duplicate",
    ],
)
def test_malformed_attribute_file(tmp_path, edit, message):
    lines = edit(_attribute_lines())
    if "twice" in message:
        lines[0] = str(len(lines) - 2)
    root = make_folder(tmp_path / "celeba", 3, attribute_lines=lines)
    with pytest.raises(ValueError, match=message) as info:
        build(root, tmp_path / "out")
    assert "list_attr_celeba.txt" in str(info.value)


def test_malformed_partition_file(tmp_path):
    root = make_folder(tmp_path / "celeba", 3)
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 7\n000003.jpg 0\n")
    with pytest.raises(
        ValueError, match=r"list_eval_partition.txt, line 2: expected 'FILENAME SPLIT'.*delete it"
    ):
        build(root, tmp_path / "out")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    with pytest.raises(ValueError, match=r"has no row for 1 of the 3 images.*'000003.jpg'"):
        build(root, tmp_path / "out2")


def test_image_listed_but_absent(tmp_path):
    root = make_folder(tmp_path / "celeba", 40)
    os.remove(root / "img_align_celeba" / "000005.jpg")
    with pytest.raises(
        FileNotFoundError,
        match=(
            r"1 image\(s\) listed in .*list_attr_celeba.txt are missing from .*: 000005.jpg\."
            r" .*max_bad_images=1"
        ),
    ):
        build(root, tmp_path / "out")
    with pytest.warns(UserWarning, match=r"Skipping 1 image\(s\) .*absent.*000005.jpg"):
        b = build(root, tmp_path / "out2", max_bad_images=1)
    names = [
        s["filename"].decode()
        for split in ("train", "validation", "test")
        for s in b.as_data_source(split=split)
    ]
    assert len(names) == 39 and "000005.jpg" not in names
    assert b.info.metadata["skipped_images"] == ["000005.jpg"]


def test_corrupt_jpeg(tmp_path):
    root = make_folder(tmp_path / "celeba", 40)
    for name, size in (("000003.jpg", 200), ("000011.jpg", 0)):
        target = root / "img_align_celeba" / name
        data = (SHARED / "img_align_celeba" / name).read_bytes()[:size]
        os.remove(target)
        target.write_bytes(data)  # a truncated and an empty JPEG
    with pytest.raises(
        _images.UnreadableImageError, match=r"Cannot decode image .*000003.jpg.*max_bad_images=1"
    ):
        build(root, tmp_path / "out")
    with pytest.raises(_images.UnreadableImageError, match=r"000011.jpg.*max_bad_images=2"):
        build(root, tmp_path / "out1", max_bad_images=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = build(root, tmp_path / "out2", max_bad_images=2)
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert any(
        "Skipped 2 unreadable image(s) of" in m and "000003.jpg" in m and "000011.jpg" in m
        for m in messages
    )
    assert b.info.metadata["skipped_images"] == ["000003.jpg", "000011.jpg"]
    assert sum(len(b.as_data_source(split=s)) for s in ("train", "validation", "test")) == 38


def test_image_with_the_wrong_aspect():
    with pytest.raises(ValueError, match="too wide for the CelebA crop"):
        _images.crop_celeba(np.zeros((50, 200, 3), np.uint8))


# --- the upstream tfds celeb_a, mocked ----------------------------------------------------------


def test_upstream_celeb_a_has_the_same_output_format(tmp_path):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    with tfds.testing.mock_data(num_examples=24):
        data = pipeline.load(
            "celeb_a",
            "train",
            batch_size=8,
            prepared_dir=str(tmp_path),
            shuffle=False,
            encoding="signed",
            shard_index=0,
            shard_count=1,
        )
        batch = next(data.iterator)
        source = tfds.data_source("celeb_a", split="train", data_dir=str(tmp_path))
        records = [source[i] for i in range(8)]
    assert data.attribute_names == celeba.ATTRIBUTE_NAMES
    assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.float32
    assert batch["attributes"].shape == (8, 40)
    expected = np.array(
        [[1.0 if r["attributes"][n] else -1.0 for n in celeba.ATTRIBUTE_NAMES] for r in records]
    )
    np.testing.assert_array_equal(batch["attributes"], expected)
    np.testing.assert_allclose(
        batch["image"][0], _images.crop_celeba(records[0]["image"]) / 255.0, atol=1e-6
    )
    with pytest.raises(ValueError, match="takes no data_dir"):
        pipeline.load(
            "celeb_a", "train", batch_size=8, data_dir=str(SHARED), prepared_dir=str(tmp_path)
        )


# --- issue #12: images far from CelebA's size, replaced images, folders too small ----------------


def test_an_image_far_from_celebas_size_is_a_bad_image(tmp_path):
    root = make_folder(tmp_path / "celeba", 40)
    images = root / "img_align_celeba"
    full = Image.open(SHARED / "img_align_celeba" / "000002.jpg").resize((178, 218))
    for name, image in (
        ("000007.jpg", Image.new("RGB", (1, 1))),  # a flat black "face"
        ("000009.jpg", full.transpose(Image.Transpose.ROTATE_90)),  # 218x178: on its side
        ("000002.jpg", full),  # the official 178x218: fine, as the shared 89x109 are
    ):
        os.remove(images / name)
        image.save(images / name)
    with pytest.raises(
        _images.BadImageSizeError,
        match=r"000007.jpg is 1x1 \(width x height\), far from CelebA's aligned images"
        r" \(178x218 or a rescaled copy\): its short side is under 40 px.*max_bad_images=1",
    ):
        build(root, tmp_path / "out")
    with pytest.raises(
        _images.BadImageSizeError,
        match=r"000009.jpg is 218x178 .*its aspect \(width / height = 1.22\) differs from 0.817"
        r" by more than 25%.*max_bad_images=2",
    ):
        build(root, tmp_path / "out1", max_bad_images=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = build(root, tmp_path / "out2", max_bad_images=2)
    assert any(
        "Skipped 2 unreadable image(s)" in str(w.message) and "000007.jpg" in str(w.message)
        for w in caught
    )
    assert b.info.metadata["skipped_images"] == ["000007.jpg", "000009.jpg"]
    names = [
        s["filename"].decode()
        for split in ("train", "validation", "test")
        for s in b.as_data_source(split=split)
    ]
    assert len(names) == 38 and "000002.jpg" in names


def test_a_replaced_image_is_prepared_afresh(tmp_path):
    root = make_folder(tmp_path / "celeba", 20)
    first = build(root, tmp_path / "out")
    target = root / "img_align_celeba" / "000004.jpg"
    os.remove(target)
    shutil.copy(SHARED / "img_align_celeba" / "000017.jpg", target)  # same size and aspect
    second = build(root, tmp_path / "out")
    assert second.builder_config.name != first.builder_config.name
    assert second.data_dir != first.data_dir
    train = second.as_data_source(split="train")
    row = [train[i]["filename"].decode() for i in range(len(train))].index("000004.jpg")
    expected = _images.crop_celeba(_images.read_image(SHARED / "img_align_celeba" / "000017.jpg"))
    np.testing.assert_array_equal(train[row]["image"], expected)
    # Unchanged files keep the name (and the prepared copy).
    assert celeba.make_config(root).name == second.builder_config.name


def test_a_folder_too_small_for_a_split(tmp_path):
    root = make_folder(tmp_path / "celeba", 8)  # round(8 / 18) = 0 validation and test rows
    kwargs = dict(data_dir=str(root), prepared_dir=str(tmp_path / "out"), shard_index=0,
                  shard_count=1)
    with pytest.raises(
        ValueError,
        match=r"The 'validation' split of 'celeba' has no faces: the folder is too small to give"
        r" it any. The splits have: train 8 faces. Use a larger folder",
    ):
        pipeline.load("celeba", "validation", batch_size=4, **kwargs)
    with pytest.raises(
        ValueError,
        match=r"The 'train' split of 'celeba' has 8 examples: fewer than one global batch of 64 x"
        r" 1 shard\(s\) .*needs at least 64 faces. The splits have: train 8 faces. Use a batch"
        r" size of at most 8, or a folder with at least 64 faces in its train split.",
    ):
        pipeline.load("celeba", "train", batch_size=64, **kwargs)
