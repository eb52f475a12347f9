"""Tests for cmma_jax/data/reading.py: a split in fixed-size chunks."""

import numpy as np
import pytest
from conftest import TINY_DATA_OPTIONS

from cmma_jax.data import pipeline
from cmma_jax.data import reading


def data_section(prepared_dir, **fields):
    """The `data` section of a tiny model's config (`cmma_jax.configs`, tiny data)."""
    from cmma_jax.configs import base  # pylint: disable=g-import-not-at-top

    data = base.get_base_config().data
    data.prepared_dir = prepared_dir
    data.options = dict(TINY_DATA_OPTIONS)
    data.update(fields)
    return data


def test_chunks_from_arrays_pad_the_last_chunk():
    x = np.arange(7, dtype=np.float32).reshape(7, 1, 1, 1) * np.ones((1, 2, 2, 3), np.float32)
    y = np.arange(7, dtype=np.float32)[:, None]
    chunks = reading.chunks_from_arrays(x, y, 3)
    assert [(c.start, c.num_valid, c.size) for c in chunks] == [(0, 3, 3), (3, 3, 3), (6, 1, 3)]
    np.testing.assert_array_equal(chunks[2].indices, [6, 7, 8])
    np.testing.assert_array_equal(chunks[2].raw_attributes[:, 0], [6, 6, 6])  # padding repeats
    np.testing.assert_array_equal(chunks[1].binary_attributes[:, 0], [1, 1, 1])


def test_split_reader_gives_the_same_faces_whatever_the_chunk_size(tiny_data_dir):
    data_config = data_section(tiny_data_dir)
    a = list(reading.SplitReader(data_config, "test", batch_size=5, limit=13))
    b = list(reading.SplitReader(data_config, "test", batch_size=32))
    assert [c.num_valid for c in a] == [5, 5, 3] and a[-1].size == 5
    assert sum(c.num_valid for c in b) == 32
    faces_a = np.concatenate([c.images[: c.num_valid] for c in a])
    np.testing.assert_array_equal(faces_a, b[0].images[:13])
    raw = np.concatenate([c.raw_attributes[: c.num_valid] for c in a])
    assert set(np.unique(raw)) <= {-1.0, 1.0}  # raw CelebA-style values


def test_split_reader_reads_the_loaders_faces_in_file_order(tiny_data_dir):
    reader = reading.split_chunks(data_section(tiny_data_dir), "validation", batch_size=12)
    assert len(reader) == 3 and reader.num_examples == 32
    chunks = list(reader)
    assert [(c.start, c.num_valid, c.size) for c in chunks] == [(0, 12, 12), (12, 12, 12),
                                                                 (24, 8, 12)]
    np.testing.assert_array_equal(chunks[-1].images[8:], np.repeat(chunks[-1].images[7:8], 4, 0))
    with pipeline.load("synthetic_faces", "validation", batch_size=32, encoding="raw",
                       prepared_dir=tiny_data_dir, options=TINY_DATA_OPTIONS, shard_index=0,
                       shard_count=1) as data:
        whole = next(data.iterator)
    np.testing.assert_array_equal(
        np.concatenate([c.images[: c.num_valid] for c in chunks]), whole["image"])
    np.testing.assert_array_equal(
        np.concatenate([c.raw_attributes[: c.num_valid] for c in chunks]), whole["attributes"])
    np.testing.assert_array_equal(chunks[0].attributes("signed"), chunks[0].raw_attributes)
    assert reader.attribute_names == pipeline.attribute_names("synthetic_faces")


def test_the_train_split_comes_in_its_shuffled_order_for_the_seed(tiny_data_dir):
    def first_faces(seed):
        reader = reading.SplitReader(data_section(tiny_data_dir), "train", batch_size=16,
                                     limit=16, seed=seed)
        return next(iter(reader)).images

    with pipeline.load("synthetic_faces", "train", batch_size=16, seed=3, encoding="raw",
                       prepared_dir=tiny_data_dir, options=TINY_DATA_OPTIONS, shard_index=0,
                       shard_count=1) as data:
        shuffled = next(data.iterator)["image"]
    # limit 16 reads with batch 16, so the first chunk is the loader's first batch.
    np.testing.assert_array_equal(first_faces(3), shuffled)
    assert not np.array_equal(first_faces(0), shuffled)


def test_split_reader_errors(tiny_data_dir):
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        reading.SplitReader(data_section(tiny_data_dir), "dev", batch_size=4)
    with pytest.raises(ValueError, match=r"config.data"):
        reading.SplitReader({"data": data_section(tiny_data_dir)}, "test", batch_size=4)
    with pytest.raises(ValueError, match="3 images but 2 attribute rows"):
        reading.chunks_from_arrays(np.zeros((3, 2, 2, 3)), np.zeros((2, 1)), 2)
