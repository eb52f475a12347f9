"""Tests for cmma_jax/data/pipeline.py, on a small synthetic_faces variant."""

import json
import os
import tempfile

import numpy as np
import pytest

from cmma_jax.data import pipeline
from cmma_jax.data import synthetic_faces
from conftest import kill_and_expect_no_survivors, wait_exit, wait_for

OPTIONS = {"num_train": 250, "num_validation": 50, "num_test": 50, "seed": 1, "num_workers": 0}


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    pipeline.prepare("synthetic_faces", prepared_dir=path, options=OPTIONS)
    return path


@pytest.fixture(scope="module")
def index_of(prepared_dir):
    """Identifies examples in batches: uint8 image bytes -> (split, index)."""
    table = {}
    for split in pipeline.SPLITS:
        source = pipeline.data_source(
            "synthetic_faces", split, prepared_dir=prepared_dir, options=OPTIONS
        )
        for i in range(len(source)):
            table[source[i]["image"].tobytes()] = (split, i)
    return table


def load(prepared_dir, split="train", **kwargs):
    kwargs.setdefault("shard_index", 0)
    kwargs.setdefault("shard_count", 1)
    return pipeline.load(
        "synthetic_faces", split, prepared_dir=prepared_dir, options=OPTIONS, **kwargs
    )


def indices(batch, index_of):
    images = np.round(batch["image"] * 255.0).astype(np.uint8)
    return [index_of[image.tobytes()][1] for image in images]


def test_batch_format(prepared_dir):
    data = load(prepared_dir, batch_size=32)
    assert data.num_examples == 250 and data.batches_per_epoch == 7
    assert data.attribute_names == synthetic_faces.ATTRIBUTE_NAMES
    for _ in range(9):  # past the end of the first epoch: the shape never changes
        batch = next(data.iterator)
        assert set(batch) == {"image", "attributes"}
        assert batch["image"].shape == (32, 64, 64, 3) and batch["image"].dtype == np.float32
        assert batch["attributes"].shape == (32, 20) and batch["attributes"].dtype == np.float32
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert set(np.unique(batch["attributes"])) <= {0.0, 1.0}


def test_evaluation_is_one_ordered_pass_without_the_remainder(prepared_dir, index_of):
    data = load(prepared_dir, "validation", batch_size=16)
    batches = list(data.iterator)
    assert len(batches) == data.batches_per_epoch == 3  # 50 // 16, the last 2 examples dropped
    assert sum((indices(b, index_of) for b in batches), []) == list(range(48))
    source = pipeline.data_source(
        "synthetic_faces", "validation", prepared_dir=prepared_dir, options=OPTIONS
    )
    expected = np.stack([source[i]["attributes"] for i in range(16)]) > 0
    np.testing.assert_array_equal(batches[0]["attributes"], expected.astype(np.float32))


def test_training_repeats_and_reshuffles_every_epoch(prepared_dir, index_of):
    data = load(prepared_dir, batch_size=50, seed=4)
    epochs = [sum((indices(next(data.iterator), index_of) for _ in range(5)), []) for _ in range(2)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(250))
    assert epochs[0] != epochs[1] and epochs[0] != list(range(250))


def test_same_seed_same_batches_other_seed_other_order(prepared_dir, index_of):
    a = [indices(next(load(prepared_dir, batch_size=25, seed=7).iterator), index_of)]
    b = [indices(next(load(prepared_dir, batch_size=25, seed=7).iterator), index_of)]
    c = [indices(next(load(prepared_dir, batch_size=25, seed=8).iterator), index_of)]
    assert a == b and a != c


def test_shards_split_each_global_batch(prepared_dir, index_of):
    # 3 processes with 4 examples each see exactly the global batches of 12 that one process
    # sees, each its own consecutive rows: the global batch does not depend on the process count.
    whole = load(prepared_dir, batch_size=12, seed=5, shard_index=0, shard_count=1)
    shards = [load(prepared_dir, batch_size=4, seed=5, shard_index=s, shard_count=3)
              for s in range(3)]
    assert [d.num_examples_per_shard for d in shards] == [80, 80, 80]  # 250 // 12 batches
    assert all(d.batches_per_epoch == whole.batches_per_epoch == 20 for d in shards)
    for _ in range(25):  # into the second epoch
        rows = [indices(next(d.iterator), index_of) for d in shards]
        assert rows[0] + rows[1] + rows[2] == indices(next(whole.iterator), index_of)
        assert not (set(rows[0]) & set(rows[1]) or set(rows[0]) & set(rows[2]))


def test_evaluation_shards_make_the_same_number_of_batches(prepared_dir, index_of):
    # One pass: only whole global batches, so that no process waits for another's extra batch.
    shards = [list(load(prepared_dir, "validation", batch_size=8, shard_index=s, shard_count=2)
                   .iterator) for s in range(2)]
    assert [len(b) for b in shards] == [3, 3]  # 50 // 16 global batches
    seen = sum((indices(b, index_of) for batches in shards for b in batches), [])
    assert sorted(seen) == list(range(48))


def test_resumed_iterator_yields_the_same_batches(prepared_dir):
    data = load(prepared_dir, batch_size=40, seed=3)
    for _ in range(7):  # across the epoch boundary (6 batches per epoch)
        next(data.iterator)
    state = json.loads(json.dumps(pipeline.get_state(data)))  # as stored in a checkpoint
    expected = [next(data.iterator) for _ in range(8)]
    resumed = load(prepared_dir, batch_size=40, seed=3)
    pipeline.set_state(resumed, state)
    for want, got in zip(expected, (next(resumed.iterator) for _ in range(8))):
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["attributes"], got["attributes"])
    # A state from another configuration is refused.
    other = load(prepared_dir, batch_size=40, seed=4)
    with pytest.raises(ValueError, match="Sampler in checkpoint does not match"):
        other.iterator.set_state(state)


def test_worker_processes_are_deterministic_and_resumable(prepared_dir, index_of):
    kwargs = dict(batch_size=25, seed=5, worker_count=1)
    with load(prepared_dir, **kwargs) as data:
        first = [next(data.iterator) for _ in range(3)]
        state = data.iterator.get_state()
        expected = [next(data.iterator) for _ in range(12)]  # past one epoch of 10 batches
    epoch = sum((indices(b, index_of) for b in (first + expected)[:10]), [])
    assert sorted(epoch) == list(range(250))
    # A second run (fresh worker processes) resumed from the state continues identically.
    with load(prepared_dir, **kwargs) as resumed:
        resumed.iterator.set_state(state)
        for want in expected:
            got = next(resumed.iterator)
            assert type(got["image"]) is np.ndarray
            np.testing.assert_array_equal(want["image"], got["image"])


def test_attribute_encodings(prepared_dir):
    batches = {
        e: next(load(prepared_dir, batch_size=10, encoding=e, shuffle=False).iterator)
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
        pipeline.attribute_names("synthetic_faces", prepared_dir=tmp_path)
        == synthetic_faces.ATTRIBUTE_NAMES
    )
    assert len(pipeline.attribute_names("celeba", prepared_dir=tmp_path)) == 40
    assert len(pipeline.attribute_names("lfw", prepared_dir=tmp_path)) == 73
    assert os.listdir(tmp_path) == []


def test_an_unprepared_builder_leaves_no_temporary_directory(tmp_path, monkeypatch):
    # tfds looks an unprepared builder up on its bucket, and left an empty directory in the
    # temporary folder each time.
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    for name in ("synthetic_faces", "celeba", "lfw"):
        builder = pipeline.get_builder(name, prepared_dir=tmp_path / "prepared")
        assert builder.info.features is not None
    assert os.listdir(temp) == []


def test_default_shard_is_the_jax_process(prepared_dir):
    data = pipeline.load(
        "synthetic_faces", "test", batch_size=10, prepared_dir=prepared_dir, options=OPTIONS
    )
    assert data.num_examples_per_shard == 50 and len(list(data.iterator)) == 5


def test_prepared_once_then_reused(prepared_dir):
    builder = pipeline.get_builder("synthetic_faces", prepared_dir=prepared_dir, options=OPTIONS)
    files = sorted(os.listdir(builder.data_dir))
    stamps = [os.stat(os.path.join(builder.data_dir, f)).st_mtime_ns for f in files]
    load(prepared_dir, batch_size=10)
    assert [os.stat(os.path.join(builder.data_dir, f)).st_mtime_ns for f in files] == stamps


def test_bad_arguments(prepared_dir):
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        pipeline.load("mnist", "train", batch_size=8)
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        load(prepared_dir, "dev", batch_size=8)
    with pytest.raises(ValueError, match="Unknown attribute encoding 'onehot'"):
        load(prepared_dir, batch_size=8, encoding="onehot")
    with pytest.raises(
        ValueError, match=r"Unknown option\(s\) \['size'\] for dataset 'synthetic_faces'"
    ):
        pipeline.load(
            "synthetic_faces", "train", batch_size=8, prepared_dir=prepared_dir, options={"size": 3}
        )
    with pytest.raises(ValueError, match="takes no data_dir"):
        pipeline.load(
            "synthetic_faces", "train", batch_size=8, prepared_dir=prepared_dir, data_dir="/tmp"
        )
    with pytest.raises(
        ValueError, match=r"50 examples: fewer than one global batch of 32 x 2 shard\(s\)"
    ):
        load(prepared_dir, "test", batch_size=32, shard_index=0, shard_count=2)
    with pytest.raises(ValueError, match="shard_index must be in"):
        load(prepared_dir, batch_size=8, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="Pass both shard_index and shard_count"):
        pipeline.load(
            "synthetic_faces",
            "train",
            batch_size=8,
            prepared_dir=prepared_dir,
            options=OPTIONS,
            shard_index=0,
        )
    with pytest.raises(ValueError, match="num_epochs must be"):
        load(prepared_dir, batch_size=8, num_epochs=0)


# --- from a config's data section ---------------------------------------------------------------


def section(prepared_dir, **fields):
    """A config's `data` section for the small variant (as `cmma_jax.configs` lays it out)."""
    data = {
        "name": "synthetic_faces",
        "data_dir": None,
        "prepared_dir": prepared_dir,
        "attribute_encoding": "binary",
        "num_attributes": None,
        "options": dict(OPTIONS),
        "worker_count": 0,
    }
    data.update(fields)
    return data


def test_load_split_gives_the_batches_of_load(prepared_dir):
    import ml_collections  # pylint: disable=g-import-not-at-top

    # None options are the builder's defaults: left out, even one the builder does not take.
    config = ml_collections.ConfigDict(
        section(prepared_dir, attribute_encoding="signed",
                options={**OPTIONS, "max_bad_images": None})
    )
    for split, seed in (("train", 7), ("validation", 3)):
        got = pipeline.load_split(config, split, batch_size=25, seed=seed, shard_index=0,
                                  shard_count=1)
        want = load(prepared_dir, split, batch_size=25, seed=seed, encoding="signed")
        assert got.attribute_names == want.attribute_names
        for _ in range(2):
            a, b = next(got.iterator), next(want.iterator)
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["attributes"], b["attributes"])
    # Without a shard: JAX's process (one here), like `load`.
    assert pipeline.load_split(section(prepared_dir), "test", batch_size=10,
                               seed=0).num_examples_per_shard == 50


def test_options_a_builder_does_not_take_are_an_error():
    # celeba's split is its partition file's: num_train is not silently dropped (issue #12).
    with pytest.raises(
        ValueError,
        match=r"data\.options\.num_train=5: dataset 'celeba' does not take this option; it takes"
        r" max_bad_images, num_workers",
    ):
        pipeline.builder_options({"name": "celeba", "options": {"num_train": 5}})
    with pytest.raises(ValueError, match=r"data\.options\.num_test=16: dataset 'lfw'"):
        pipeline.builder_options(
            {"name": "lfw", "options": {"num_train": 20, "num_test": 16}}
        )
    with pytest.raises(ValueError, match=r"'celeb_a' does not take these options; it takes no"):
        pipeline.builder_options({"name": "celeb_a", "options": {"seed": 1, "num_train": 2}})
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        pipeline.builder_options({"name": "mnist", "options": {}})
    # Unset (None) options are the builder's defaults, whatever the builder takes.
    unset = {"num_train": None, "num_validation": None, "num_test": None}
    assert pipeline.builder_options({"name": "celeba", "options": unset}) is None
    assert pipeline.builder_options({"name": "lfw", "options": {**unset, "num_train": 9}}) == {
        "num_train": 9
    }
    assert pipeline.builder_options({"name": "synthetic_faces"}) is None


def test_prepare_and_attribute_names_from_config(prepared_dir, tmp_path):
    builder = pipeline.prepare_from_config(section(prepared_dir))
    assert builder.data_dir == pipeline.get_builder(
        "synthetic_faces", prepared_dir=prepared_dir, options=OPTIONS
    ).data_dir
    assert (
        pipeline.attribute_names_from_config(section(prepared_dir))
        == synthetic_faces.ATTRIBUTE_NAMES
    )
    assert len(pipeline.attribute_names_from_config(
        section(str(tmp_path), name="lfw", options={"num_train": None}))) == 73
    assert os.listdir(tmp_path) == []
    pipeline.check_num_attributes(section(prepared_dir, num_attributes=20), range(20))
    with pytest.raises(ValueError, match=r"data.num_attributes=3 but dataset 'synthetic_faces'"
                       r" has 20 attributes; set --config.data.num_attributes=20"):
        pipeline.check_num_attributes(section(prepared_dir, num_attributes=3), range(20))


def test_a_whole_config_is_refused(prepared_dir):
    with pytest.raises(ValueError, match=r"data section of the config \(config.data\)"):
        pipeline.load_split({"data": section(prepared_dir), "training": {}}, "train",
                            batch_size=8, seed=0)


def test_the_registry_reads_each_builders_options():
    from cmma_jax.data import celeba, registry  # pylint: disable=g-import-not-at-top

    assert pipeline.DATASETS == ("synthetic_faces", "celeba", "celeb_a", "lfw")
    assert registry.get("synthetic_faces").options == synthetic_faces.OPTIONS
    assert registry.get("celeba").options == celeba.OPTIONS
    assert registry.get("celeb_a").options == ()
    assert registry.get("celeba").attribute_names == celeba.ATTRIBUTE_NAMES
    assert [registry.get(n).reads_folder for n in pipeline.DATASETS] == [False, True, False, True]
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        registry.get("mnist")


# --- siblings of issue #12: bad inputs, concurrent preparation, processes that outlive a run -----


def test_a_split_too_small_for_the_batch_says_what_each_split_has_and_needs(prepared_dir):
    with pytest.raises(ValueError) as raised:
        load(prepared_dir, "test", batch_size=64)
    message = str(raised.value)
    assert "The 'test' split of 'synthetic_faces' has 50 examples" in message
    assert "that split needs at least 64 faces" in message
    assert "The splits have: train 250, validation 50, test 50 faces." in message
    assert "Use a batch size of at most 50, or --config.data.options.num_test=64" in message
    # Sharded over processes: the global batch is what the split needs.
    with pytest.raises(ValueError) as raised:
        load(prepared_dir, "validation", batch_size=20, shard_index=1, shard_count=3)
    message = str(raised.value)
    assert "fewer than one global batch of 20 x 3 shard(s)" in message
    assert "that split needs at least 60 faces" in message
    assert "The splits have: train 250, validation 50, test 50 faces." in message
    assert "a batch size of at most 16 per process" in message
    assert "--config.data.options.num_validation=60" in message


def test_the_config_lists_every_builder_option_and_no_other():
    from cmma_jax.configs import base  # pylint: disable=g-import-not-at-top
    from cmma_jax.data import registry  # pylint: disable=g-import-not-at-top

    taken = set().union(*(d.options for d in registry.REGISTRY.values()))
    assert set(base.data_config().options.keys()) == taken


_PREPARE_SCRIPT = """
import json, logging, os, sys, time
logging.basicConfig(level=logging.WARNING)
from cmma_jax.data import pipeline
prepared_dir, go, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
builder = pipeline.prepare("synthetic_faces", prepared_dir=prepared_dir, options=options)
source = builder.as_data_source(split="train")
print("prepared", len(source), flush=True)
"""


def _communicate_all(processes):
    """Each process's (stdout, stderr), the pipes drained meanwhile (a full pipe would stall a
    process); fails if they hang (`conftest.wait_exit`)."""
    import threading  # pylint: disable=g-import-not-at-top

    results = [None] * len(processes)

    def drain(i, p):
        results[i] = p.communicate()

    threads = [threading.Thread(target=drain, args=(i, p), daemon=True)
               for i, p in enumerate(processes)]
    for t in threads:
        t.start()
    wait_exit(processes)
    for t in threads:
        t.join()
    return results


def _wait_for_line(process, want):
    """Reads `process`'s stdout until a line starting with `want`; fails if the process ends
    first or hangs (`conftest.wait_for`), not because a loaded machine is slow."""
    import select  # pylint: disable=g-import-not-at-top

    found = []

    def seen():
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line.startswith(want):
                found.append(line)
            elif not line and process.poll() is not None:
                raise AssertionError(f"no {want!r} from process {process.pid} "
                                     f"(exit {process.poll()})")
        return bool(found)

    wait_for(seen, [process], f"{want!r} from process {process.pid}", expect_alive=False)
    return found[0]


def test_two_processes_preparing_the_same_dataset_take_turns(tmp_path):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top

    options = {"num_train": 300, "num_validation": 10, "num_test": 10, "seed": 3,
               "num_workers": 0}
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PREPARE_SCRIPT, str(tmp_path / "prepared"), str(go),
             json.dumps(options)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in processes:
            _wait_for_line(p, "ready")
        go.touch()  # both start preparing at once (rendering 320 faces takes seconds)
        results = _communicate_all(processes)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(processes, results):
        assert p.returncode == 0, err[-3000:]
        assert "prepared 300" in out
    waited = [err for _, err in results if "Waiting for another process" in err]
    assert len(waited) == 1, [err[-2000:] for _, err in results]
    builder = pipeline.get_builder("synthetic_faces", prepared_dir=str(tmp_path / "prepared"),
                                   options=options)
    assert f"preparing {builder.data_dir}" in waited[0]
    assert "Done waiting" in waited[0]
    expected, _ = synthetic_faces.render_split(builder.builder_config, "train", 0, 300)
    source = builder.as_data_source(split="train")
    np.testing.assert_array_equal(np.stack([source[i]["image"] for i in range(300)]), expected)
    # One prepared folder, no leftovers of a second preparation.
    assert sorted(os.listdir(os.path.dirname(builder.data_dir))) == [
        os.path.basename(builder.data_dir), os.path.basename(builder.data_dir) + ".lock"]


_LOADER_SCRIPT = """
import json, sys, time
from cmma_jax.data import pipeline
if __name__ == "__main__":
    data = pipeline.load("synthetic_faces", "train", batch_size=10, prepared_dir=sys.argv[1],
                         options=json.loads(sys.argv[2]), worker_count=2, shard_index=0,
                         shard_count=1)
    next(data.iterator)
    print("ready", flush=True)
    time.sleep(600)
"""


def test_worker_processes_die_with_a_killed_run(prepared_dir, tmp_path):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top

    import psutil  # pylint: disable=g-import-not-at-top

    script = tmp_path / "loader.py"
    script.write_text(_LOADER_SCRIPT)
    run = subprocess.Popen([sys.executable, str(script), prepared_dir, json.dumps(OPTIONS)],
                           stdout=subprocess.PIPE, text=True)
    children = []
    try:
        _wait_for_line(run, "ready")
        children = psutil.Process(run.pid).children(recursive=True)
        workers = [c for c in children if "grain" in " ".join(c.cmdline()) or
                   "multiprocessing" in " ".join(c.cmdline())]
        assert len(workers) >= 2, [c.cmdline() for c in children]
    finally:
        kill_and_expect_no_survivors(run, children)


def test_a_split_asked_to_be_empty_names_the_option_not_the_folder(tmp_path):
    options = {"num_train": 16, "num_validation": 4, "num_test": 0, "seed": 5}
    with pytest.raises(ValueError, match=r"The 'test' split of 'synthetic_faces' has no faces: it "
                                         r"was made with num_test=0 \(--config.data.options."
                                         r"num_test\)"):
        pipeline.data_source("synthetic_faces", "test", prepared_dir=str(tmp_path),
                             options=options)
