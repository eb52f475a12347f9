"""Tests for cmma_jax/data/pipeline.py, on a small synthetic_faces variant."""

import json
import os

import numpy as np
import pytest

from cmma_jax.data import pipeline
from cmma_jax.data import synthetic_faces

OPTIONS = {"num_train": 250, "num_validation": 50, "num_test": 50, "seed": 1, "num_workers": 0}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    pipeline.prepare("synthetic_faces", data_dir=path, options=OPTIONS)
    return path


@pytest.fixture(scope="module")
def index_of(data_dir):
    """Identifies examples in batches: uint8 image bytes -> (split, index)."""
    table = {}
    for split in pipeline.SPLITS:
        source = pipeline.data_source("synthetic_faces", split, data_dir=data_dir, options=OPTIONS)
        for i in range(len(source)):
            table[source[i]["image"].tobytes()] = (split, i)
    return table


def load(data_dir, split="train", **kwargs):
    kwargs.setdefault("shard_index", 0)
    kwargs.setdefault("shard_count", 1)
    return pipeline.load("synthetic_faces", split, data_dir=data_dir, options=OPTIONS, **kwargs)


def indices(batch, index_of):
    images = np.round(batch["image"] * 255.0).astype(np.uint8)
    return [index_of[image.tobytes()][1] for image in images]


def test_batch_format(data_dir):
    data = load(data_dir, batch_size=32)
    assert data.num_examples == 250 and data.batches_per_epoch == 7
    assert data.attribute_names == synthetic_faces.ATTRIBUTE_NAMES
    for _ in range(9):  # past the end of the first epoch: the shape never changes
        batch = next(data.iterator)
        assert set(batch) == {"image", "attributes"}
        assert batch["image"].shape == (32, 64, 64, 3) and batch["image"].dtype == np.float32
        assert batch["attributes"].shape == (32, 20) and batch["attributes"].dtype == np.float32
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert set(np.unique(batch["attributes"])) <= {0.0, 1.0}


def test_evaluation_is_one_ordered_pass_without_the_remainder(data_dir, index_of):
    data = load(data_dir, "validation", batch_size=16)
    batches = list(data.iterator)
    assert len(batches) == data.batches_per_epoch == 3  # 50 // 16, the last 2 examples dropped
    assert sum((indices(b, index_of) for b in batches), []) == list(range(48))
    source = pipeline.data_source(
        "synthetic_faces", "validation", data_dir=data_dir, options=OPTIONS
    )
    expected = np.stack([source[i]["attributes"] for i in range(16)]) > 0
    np.testing.assert_array_equal(batches[0]["attributes"], expected.astype(np.float32))


def test_training_repeats_and_reshuffles_every_epoch(data_dir, index_of):
    data = load(data_dir, batch_size=50, seed=4)
    epochs = [sum((indices(next(data.iterator), index_of) for _ in range(5)), []) for _ in range(2)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(250))
    assert epochs[0] != epochs[1] and epochs[0] != list(range(250))


def test_same_seed_same_batches_other_seed_other_order(data_dir, index_of):
    a = [indices(next(load(data_dir, batch_size=25, seed=7).iterator), index_of)]
    b = [indices(next(load(data_dir, batch_size=25, seed=7).iterator), index_of)]
    c = [indices(next(load(data_dir, batch_size=25, seed=8).iterator), index_of)]
    assert a == b and a != c


def test_shards_split_each_global_batch(data_dir, index_of):
    # 3 processes with 4 examples each see exactly the global batches of 12 that one process
    # sees, each its own consecutive rows: the global batch does not depend on the process count.
    whole = load(data_dir, batch_size=12, seed=5, shard_index=0, shard_count=1)
    shards = [load(data_dir, batch_size=4, seed=5, shard_index=s, shard_count=3)
              for s in range(3)]
    assert [d.num_examples_per_shard for d in shards] == [80, 80, 80]  # 250 // 12 batches
    assert all(d.batches_per_epoch == whole.batches_per_epoch == 20 for d in shards)
    for _ in range(25):  # into the second epoch
        rows = [indices(next(d.iterator), index_of) for d in shards]
        assert rows[0] + rows[1] + rows[2] == indices(next(whole.iterator), index_of)
        assert not (set(rows[0]) & set(rows[1]) or set(rows[0]) & set(rows[2]))


def test_evaluation_shards_make_the_same_number_of_batches(data_dir, index_of):
    # One pass: only whole global batches, so that no process waits for another's extra batch.
    shards = [list(load(data_dir, "validation", batch_size=8, shard_index=s, shard_count=2)
                   .iterator) for s in range(2)]
    assert [len(b) for b in shards] == [3, 3]  # 50 // 16 global batches
    seen = sum((indices(b, index_of) for batches in shards for b in batches), [])
    assert sorted(seen) == list(range(48))


def test_resumed_iterator_yields_the_same_batches(data_dir):
    data = load(data_dir, batch_size=40, seed=3)
    for _ in range(7):  # across the epoch boundary (6 batches per epoch)
        next(data.iterator)
    state = json.loads(json.dumps(pipeline.get_state(data)))  # as stored in a checkpoint
    expected = [next(data.iterator) for _ in range(8)]
    resumed = load(data_dir, batch_size=40, seed=3)
    pipeline.set_state(resumed, state)
    for want, got in zip(expected, (next(resumed.iterator) for _ in range(8))):
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["attributes"], got["attributes"])
    # A state from another configuration is refused.
    other = load(data_dir, batch_size=40, seed=4)
    with pytest.raises(ValueError, match="Sampler in checkpoint does not match"):
        other.iterator.set_state(state)


def test_worker_processes_are_deterministic_and_resumable(data_dir, index_of):
    kwargs = dict(batch_size=25, seed=5, worker_count=1)
    with load(data_dir, **kwargs) as data:
        first = [next(data.iterator) for _ in range(3)]
        state = data.iterator.get_state()
        expected = [next(data.iterator) for _ in range(12)]  # past one epoch of 10 batches
    epoch = sum((indices(b, index_of) for b in (first + expected)[:10]), [])
    assert sorted(epoch) == list(range(250))
    # A second run (fresh worker processes) resumed from the state continues identically.
    with load(data_dir, **kwargs) as resumed:
        resumed.iterator.set_state(state)
        for want in expected:
            got = next(resumed.iterator)
            assert type(got["image"]) is np.ndarray
            np.testing.assert_array_equal(want["image"], got["image"])


def test_attribute_encodings(data_dir):
    batches = {
        e: next(load(data_dir, batch_size=10, encoding=e, shuffle=False).iterator)
        for e in pipeline.ENCODINGS
    }
    raw = batches["raw"]["attributes"]
    assert set(np.unique(raw)) == {-1.0, 1.0}
    np.testing.assert_array_equal(batches["signed"]["attributes"], raw)
    np.testing.assert_array_equal(batches["binary"]["attributes"], (raw + 1) / 2)
    np.testing.assert_array_equal(
        pipeline.encode_attributes(np.array([[-0.3, 0.0, 2.5]]), "binary"), [[0.0, 0.0, 1.0]]
    )
    np.testing.assert_array_equal(
        pipeline.encode_attributes(np.array([[-0.3, 0.0, 2.5]]), "signed"), [[-1.0, -1.0, 1.0]]
    )


def test_attribute_names_without_building(tmp_path):
    assert (
        pipeline.attribute_names("synthetic_faces", data_dir=tmp_path)
        == synthetic_faces.ATTRIBUTE_NAMES
    )
    assert len(pipeline.attribute_names("celeba", data_dir=tmp_path)) == 40
    assert len(pipeline.attribute_names("lfw", data_dir=tmp_path)) == 73
    assert os.listdir(tmp_path) == []


def test_default_shard_is_the_jax_process(data_dir):
    data = pipeline.load(
        "synthetic_faces", "test", batch_size=10, data_dir=data_dir, options=OPTIONS
    )
    assert data.num_examples_per_shard == 50 and len(list(data.iterator)) == 5


def test_prepared_once_then_reused(data_dir):
    builder = pipeline.get_builder("synthetic_faces", data_dir=data_dir, options=OPTIONS)
    files = sorted(os.listdir(builder.data_dir))
    stamps = [os.stat(os.path.join(builder.data_dir, f)).st_mtime_ns for f in files]
    load(data_dir, batch_size=10)
    assert [os.stat(os.path.join(builder.data_dir, f)).st_mtime_ns for f in files] == stamps


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        pipeline.load("mnist", "train", batch_size=8)
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        load(data_dir, "dev", batch_size=8)
    with pytest.raises(ValueError, match="Unknown attribute encoding 'onehot'"):
        load(data_dir, batch_size=8, encoding="onehot")
    with pytest.raises(
        ValueError, match=r"Unknown option\(s\) \['size'\] for dataset 'synthetic_faces'"
    ):
        pipeline.load(
            "synthetic_faces", "train", batch_size=8, data_dir=data_dir, options={"size": 3}
        )
    with pytest.raises(ValueError, match="takes no source_dir"):
        pipeline.load(
            "synthetic_faces", "train", batch_size=8, data_dir=data_dir, source_dir="/tmp"
        )
    with pytest.raises(
        ValueError, match=r"50 examples: fewer than one global batch of 32 x 2 shard\(s\)"
    ):
        load(data_dir, "test", batch_size=32, shard_index=0, shard_count=2)
    with pytest.raises(ValueError, match="shard_index must be in"):
        load(data_dir, batch_size=8, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="Pass both shard_index and shard_count"):
        pipeline.load(
            "synthetic_faces",
            "train",
            batch_size=8,
            data_dir=data_dir,
            options=OPTIONS,
            shard_index=0,
        )
    with pytest.raises(ValueError, match="num_epochs must be"):
        load(data_dir, batch_size=8, num_epochs=0)
