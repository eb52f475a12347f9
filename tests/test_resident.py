"""Tests of the device-resident input path (cmma_jax.data.resident) and the trainer on it."""

import collections
import json
import os
import shutil

import jax
import numpy as np
import pytest

from cmma_jax import train
from cmma_jax.data import pipeline, resident

from conftest import TINY_DATA_OPTIONS
from test_train import _assert_same_params, tiny_config

BATCH = 8


@pytest.fixture(scope="module")
def split(tiny_data_dir):
    source = pipeline.data_source("synthetic_faces", "train", prepared_dir=tiny_data_dir,
                                  options=TINY_DATA_OPTIONS)
    return resident.read_split(source)


def _iterator(split, seed=0, encoding="binary"):
    images, attributes = split
    return resident.ResidentIterator(images, attributes, batch_size=BATCH, seed=seed,
                                     encoding=encoding)


def _keys(batch):
    """One hashable key per row (its image bytes and attributes)."""
    images = np.asarray(batch["image"])
    attributes = np.asarray(batch["attributes"])
    return [images[i].tobytes() + attributes[i].tobytes() for i in range(images.shape[0])]


def test_the_split_is_read_as_the_grain_path_reads_it(split, tiny_data_dir):
    images, attributes = split
    assert images.dtype == np.uint8 and images.shape == (256, 64, 64, 3)
    assert attributes.dtype == np.float32 and attributes.shape[0] == 256
    with pipeline.load("synthetic_faces", "train", batch_size=32, prepared_dir=tiny_data_dir,
                       options=TINY_DATA_OPTIONS, shuffle=False, num_epochs=1, encoding="raw") as grain_data:
        first = next(grain_data.iterator)
    np.testing.assert_array_equal(first["image"], images[:32].astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(first["attributes"], attributes[:32])


@pytest.mark.parametrize("encoding", pipeline.ENCODINGS)
def test_batches_are_well_formed_and_encoded_like_the_grain_path(split, encoding):
    images, attributes = split
    it = _iterator(split, seed=3, encoding=encoding)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(3), 0), 256))
    for b in range(3):
        batch = next(it)
        assert set(batch) == {"image", "attributes"}
        assert batch["image"].shape == (BATCH, 64, 64, 3)
        assert batch["attributes"].shape == (BATCH, attributes.shape[1])
        assert batch["image"].dtype == np.float32 and batch["attributes"].dtype == np.float32
        assert isinstance(batch["image"], jax.Array)  # stays on the device
        x = np.asarray(batch["image"])
        assert 0.0 <= x.min() and x.max() <= 1.0
        idx = perm[b * BATCH:(b + 1) * BATCH]
        # The grain path's conversion (_ToModelInputs) of the same examples.
        np.testing.assert_array_equal(x, images[idx].astype(np.float32) * np.float32(1 / 255))
        np.testing.assert_array_equal(np.asarray(batch["attributes"]),
                                      pipeline.encode_attributes(attributes[idx], encoding))


def test_one_epoch_holds_every_example_once_and_epochs_differ(split):
    it = _iterator(split)
    assert it.batches_per_epoch == 256 // BATCH
    everything = collections.Counter(
        _keys({"image": split[0].astype(np.float32) * np.float32(1 / 255),
               "attributes": pipeline.encode_attributes(split[1], "binary")}))
    epochs = []
    for _ in range(2):
        keys = []
        for _ in range(it.batches_per_epoch):
            keys += _keys(next(it))
        assert collections.Counter(keys) == everything
        epochs.append(keys)
    assert epochs[0] != epochs[1]


def test_the_same_seed_gives_the_same_batches_and_another_seed_others(split):
    a, b, c = _iterator(split, seed=5), _iterator(split, seed=5), _iterator(split, seed=6)
    for _ in range(4):
        x, y, z = next(a), next(b), next(c)
        np.testing.assert_array_equal(np.asarray(x["image"]), np.asarray(y["image"]))
        np.testing.assert_array_equal(np.asarray(x["attributes"]),
                                      np.asarray(y["attributes"]))
    assert not np.array_equal(np.asarray(x["image"]), np.asarray(z["image"]))


def test_a_restored_position_gives_the_next_batches(split):
    first = _iterator(split)
    for _ in range(37):  # past the end of the first epoch (32 batches)
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    fresh = _iterator(split)
    fresh.set_state(state)
    for _ in range(5):
        np.testing.assert_array_equal(np.asarray(next(first)["image"]),
                                      np.asarray(next(fresh)["image"]))
    with pytest.raises(ValueError, match="another iterator"):
        _iterator(split, seed=1).set_state(state)
    with pytest.raises(ValueError, match="device-resident"):
        fresh.set_state({"sampler": 3})


def test_the_setting_and_the_auto_decision():
    assert resident.parse_setting(None) == "auto"
    assert resident.parse_setting("auto") == "auto"
    assert resident.parse_setting("true") is True and resident.parse_setting(True) is True
    assert resident.parse_setting("false") is False
    with pytest.raises(ValueError, match="device_resident"):
        resident.parse_setting("maybe")
    gib = 2**30
    assert resident.resolve("auto", gib, device_memory=8 * gib, process_count=1)
    assert not resident.resolve("auto", 3 * gib, device_memory=8 * gib, process_count=1)
    assert not resident.resolve("auto", 1, device_memory=None, process_count=1)  # CPU
    assert not resident.resolve("auto", gib, device_memory=8 * gib, process_count=2)
    assert not resident.resolve("auto", gib, device_memory=8 * gib, process_count=1,
                                parallelism="pmap")
    assert resident.resolve("true", 1, device_memory=None, process_count=1)
    with pytest.raises(ValueError, match="one process"):
        resident.resolve("true", 1, device_memory=None, process_count=2)
    assert not resident.resolve("false", 1, device_memory=8 * gib, process_count=1)


def test_auto_keeps_the_grain_path_on_cpu(tiny_data_dir):
    if resident.device_memory_bytes() is not None:
        pytest.skip("this device reports its memory")
    config = tiny_config(tiny_data_dir)
    loaded = train.load_data(config, "train", batch_size=BATCH)
    try:
        assert isinstance(loaded.iterator, pipeline.BatchIterator)
    finally:
        loaded.close()
    config.data.device_resident = "true"
    loaded = train.load_data(config, "train", batch_size=BATCH)
    try:
        assert isinstance(loaded.iterator, resident.ResidentIterator)
        assert loaded.batches_per_epoch == 256 // BATCH
    finally:
        loaded.close()


def _resident_config(tiny_data_dir, **training):
    config = tiny_config(tiny_data_dir, **training)
    config.data.device_resident = "true"
    return config


def test_a_resident_run_stopped_and_resumed_ends_like_an_uninterrupted_one(
        tiny_data_dir, tmp_path):
    straight_dir, resumed_dir = str(tmp_path / "straight"), str(tmp_path / "resumed")
    straight = train.train_and_evaluate(_resident_config(tiny_data_dir), straight_dir)
    assert int(straight.step) == 8
    with open(os.path.join(straight_dir, "checkpoints", "8", "data", "metadata")) as f:
        assert json.load(f)["position"] == 8
    train.train_and_evaluate(_resident_config(tiny_data_dir, num_steps=5), resumed_dir)
    shutil.rmtree(os.path.join(resumed_dir, "checkpoints", "5"))
    resumed = train.train_and_evaluate(_resident_config(tiny_data_dir), resumed_dir)
    assert int(resumed.step) == 8
    _assert_same_params(resumed, straight, rtol=1e-6, atol=1e-7)
