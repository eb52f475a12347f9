"""A workdir nothing can silently damage (cmma_jax/workdirs.py, cmma_jax/checkpoints.py and the
trainer's use of them): reruns with other settings are refused before anything is written, one
run at a time holds a workdir, damaged checkpoints are found by their hash, a run past its end
changes nothing, and metrics.jsonl has each step once."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from cmma_jax import checkpoints, classifier, presets, train, workdirs
from test_train import _assert_same_params, tiny_config


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _records(workdir):
    return {n: _digest(os.path.join(workdir, n)) for n in ("config.json", "attributes.json")}


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
    """A cmma workdir trained 8 steps (checkpoints 4 and 8), and its final state."""
    workdir = str(tmp_path_factory.mktemp("trained"))
    state = train.train_and_evaluate(tiny_config(tiny_data_dir), workdir)
    return workdir, state


@pytest.fixture
def copy_of(trained, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(trained[0], workdir)
    return workdir


def test_keep_checkpoints_below_one_is_refused_before_anything_runs(tiny_data_dir, tmp_path):
    for keep in (0, -1):
        config = tiny_config(tiny_data_dir, keep_checkpoints=keep)
        with pytest.raises(ValueError, match=rf"--config.training.keep_checkpoints={keep}: "
                                             rf"must be an integer >= 1"):
            train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")
    assert not os.path.exists(tmp_path / "config.json")


@pytest.mark.parametrize("change, field", [
    (lambda c: c.model.update(name="cvae"), "model.name"),
    (lambda c: c.data.options.update(num_train=128), "data.options.num_train"),
    (lambda c: c.optimizer.update(learning_rate=1e-2), "optimizer.learning_rate"),
    (lambda c: c.training.update(batch_size=4), "training.batch_size"),
])
def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(copy_of, tiny_data_dir,
                                                                    change, field):
    before = _records(copy_of)
    steps = sorted(os.listdir(os.path.join(copy_of, "checkpoints")))
    config = tiny_config(tiny_data_dir, num_steps=12)
    change(config)
    with pytest.raises(workdirs.WorkdirMismatchError) as error:
        train.train_and_evaluate(config, copy_of)
    assert field in str(error.value) and "another --workdir" in str(error.value)
    assert f"--config.{field}=" in str(error.value)  # the flag that resumes
    assert _records(copy_of) == before
    assert sorted(os.listdir(os.path.join(copy_of, "checkpoints"))) == steps


def test_resumable_fields_may_change(copy_of, tiny_data_dir):
    config = tiny_config(tiny_data_dir, num_steps=10, log_every=5, checkpoint_every=5,
                         sample_every=5)
    state = train.train_and_evaluate(config, copy_of)
    assert int(state.step) == 10
    assert json.load(open(os.path.join(copy_of, "config.json")))["training"]["num_steps"] == 10


def test_a_classifier_refuses_a_generative_models_workdir(copy_of, tiny_data_dir):
    before = _records(copy_of)
    config = classifier.get_config()
    config.data.prepared_dir = tiny_data_dir
    config.data.options.update(num_train=256, num_validation=32, num_test=32)
    config.training.update(num_steps=2, batch_size=8)
    with pytest.raises(workdirs.WorkdirMismatchError, match="model.name"):
        classifier.train_classifier(config, copy_of)
    assert _records(copy_of) == before


def test_a_second_run_in_a_held_workdir_fails_at_once(copy_of, tiny_data_dir, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("a run that cannot hold the workdir read data")

    monkeypatch.setattr(train, "load_data", no_data)  # "at once": before any work, not a clock
    with workdirs.lock(copy_of):
        with pytest.raises(workdirs.WorkdirLockedError) as error:
            train.train_and_evaluate(tiny_config(tiny_data_dir, num_steps=10), copy_of)
    message = str(error.value)
    assert copy_of in message and f"PID {os.getpid()}" in message and "host" in message
    with workdirs.lock(copy_of):  # released by the first `with`
        pass


def test_a_killed_holder_releases_the_lock(tmp_path):
    code = ("import sys, time; from cmma_jax import workdirs\n"
            "with workdirs.lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(workdirs.WorkdirLockedError, match=f"PID {proc.pid}"):
            with workdirs.lock(str(tmp_path)):
                pass
    finally:
        proc.kill()  # SIGKILL: no clean-up runs in the holder
        proc.wait()
    with workdirs.lock(str(tmp_path)):
        pass


def _damage(workdir, step):
    """Flips 8 bytes in the middle of the largest file of a checkpoint's state."""
    state_dir = os.path.join(workdir, "checkpoints", str(step), "state")
    files = [os.path.join(r, f) for r, _, names in os.walk(state_dir) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.seek(os.path.getsize(largest) // 2)
        chunk = f.read(8)
        f.seek(os.path.getsize(largest) // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    return largest


def test_every_saved_checkpoint_has_a_hash_that_verifies(trained):
    workdir, _ = trained
    hashes = json.load(open(os.path.join(workdir, checkpoints.HASH_FILE)))
    assert sorted(hashes) == ["4", "8"]
    assert checkpoints.verify(workdir, 4) is True and checkpoints.verify(workdir, 8) is True


def test_a_damaged_checkpoint_is_refused_by_loaders(copy_of):
    _damage(copy_of, 8)
    assert checkpoints.verify(copy_of, 8) is False
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"checkpoints/8.*damaged"):
        workdirs.load_trained(copy_of)
    with pytest.raises(checkpoints.DamagedCheckpointError):
        workdirs.load_model(copy_of)
    _, _, state = workdirs.load_trained(copy_of, step=4)  # an earlier one still loads
    assert int(state.step) == 4


def test_a_resume_skips_a_damaged_checkpoint_and_ends_like_a_clean_run(copy_of, trained,
                                                                        tiny_data_dir, caplog):
    _damage(copy_of, 8)
    with caplog.at_level("WARNING"):
        resumed = train.train_and_evaluate(tiny_config(tiny_data_dir), copy_of)
    assert "damaged" in caplog.text
    assert int(resumed.step) == 8
    _assert_same_params(resumed, trained[1], rtol=1e-6, atol=1e-7)
    assert os.listdir(os.path.join(copy_of, checkpoints.DAMAGED_DIR)) == ["8"]
    assert sorted(os.listdir(os.path.join(copy_of, "checkpoints"))) == ["4", "8"]
    assert checkpoints.verify(copy_of, 8) is True


def test_a_checkpoint_without_a_hash_loads_with_a_warning_that_it_is_unverified(copy_of,
                                                                                   caplog):
    _, _, state = workdirs.load_trained(copy_of)
    assert "unverified" not in caplog.text
    os.remove(os.path.join(copy_of, checkpoints.HASH_FILE))  # an older workdir
    # A change that only a hash would have found. (Flipped bytes, as `_damage` makes, land in a
    # compressed chunk or not depending on where Orbax's concurrent writes put each array in the
    # file, so the restore itself may or may not notice them: not a deterministic example.)
    with open(os.path.join(copy_of, "checkpoints", "8", "state", "stray"), "wb") as f:
        f.write(b"not part of the checkpoint")
    with caplog.at_level("WARNING"):
        workdirs.load_trained(copy_of)
    assert "checkpoints/8 has no recorded content hash" in caplog.text
    assert "restored unverified" in caplog.text


def test_an_unreadable_unhashed_checkpoint_is_skipped_on_resume(copy_of, trained, tiny_data_dir):
    os.remove(os.path.join(copy_of, checkpoints.HASH_FILE))  # saved before hashes existed
    shutil.rmtree(os.path.join(copy_of, "checkpoints", "8", "state"))
    resumed = train.train_and_evaluate(tiny_config(tiny_data_dir), copy_of)
    assert int(resumed.step) == 8
    _assert_same_params(resumed, trained[1], rtol=1e-6, atol=1e-7)


def test_a_run_already_past_num_steps_changes_nothing(copy_of, tiny_data_dir):
    before = _records(copy_of)
    with pytest.raises(ValueError, match=r"already past num_steps=4.*step 8"):
        train.train_and_evaluate(tiny_config(tiny_data_dir, num_steps=4), copy_of)
    assert _records(copy_of) == before


def test_metrics_have_each_step_once_after_a_resume(tiny_data_dir, tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny_config(tiny_data_dir, num_steps=6, checkpoint_every=4), workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))  # as if killed after step 6's log
    train.train_and_evaluate(tiny_config(tiny_data_dir), workdir)
    steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert steps == [2, 4, 6, 8]


def test_old_workdirs_read_with_todays_field_names(copy_of):
    path = os.path.join(copy_of, "config.json")
    config = json.load(open(path))
    config["data"]["source_dir"] = "/raw/celeba"
    config["data"]["data_dir"] = "/prepared"
    del config["data"]["prepared_dir"]
    json.dump(config, open(path, "w"))
    upgraded, _ = workdirs.read_workdir(copy_of)
    assert upgraded.data.data_dir == "/raw/celeba" and upgraded.data.prepared_dir == "/prepared"
    assert "source_dir" not in upgraded.data


def test_a_workdir_records_the_pose_jitter_and_older_ones_read_as_the_full_spread(
        copy_of, tiny_data_dir):
    """synthetic_faces 1.1.0 made the pose's spread an option with a new default: a workdir
    records the jitter it was trained on even when the run left it unset, one written before the
    option existed reads as jitter 1 (release 1.0.0's faces), and resuming such a workdir on
    today's default faces is refused, naming the option."""
    from cmma_jax.data import synthetic_faces

    stored = json.load(open(os.path.join(copy_of, "config.json")))
    assert stored["data"]["options"]["jitter"] == synthetic_faces.DEFAULT_JITTER
    config = presets.resolve_config(tiny_config(tiny_data_dir))
    assert config.data.options.get("jitter") is None  # unset in the run's config
    workdirs.check_resumable(copy_of, config)
    del stored["data"]["options"]["jitter"]
    json.dump(stored, open(os.path.join(copy_of, "config.json"), "w"))
    assert workdirs.read_workdir(copy_of)[0].data.options.jitter == 1.0
    with pytest.raises(workdirs.WorkdirMismatchError, match="data.options.jitter: 1.0"):
        workdirs.check_resumable(copy_of, config)
    with config.unlocked():
        config.data.options.jitter = 1.0
    workdirs.check_resumable(copy_of, config)


def test_a_cvae_workdir_from_before_condition_decoder_still_resumes(tiny_data_dir, tmp_path):
    """CVAE workdirs written before `model.condition_decoder` existed conditioned the decoder:
    they read as condition_decoder=True, resume with today's default, and are refused for an
    ablation run (condition_decoder=False)."""
    from cmma_jax import presets

    def config(**model):
        c = tiny_config(tiny_data_dir, model="cvae", num_steps=4)
        c.model.update(model)
        return c

    workdir = str(tmp_path)
    train.train_and_evaluate(config(), workdir)
    path = os.path.join(workdir, "config.json")
    stored = json.load(open(path))
    del stored["model"]["condition_decoder"]
    json.dump(stored, open(path, "w"))
    assert workdirs.read_workdir(workdir)[0].model.condition_decoder is True
    workdirs.check_resumable(workdir, presets.resolve_config(config()))
    with pytest.raises(workdirs.WorkdirMismatchError, match="model.condition_decoder"):
        workdirs.check_resumable(workdir, presets.resolve_config(config(condition_decoder=False)))


def test_a_workdir_without_a_checkpoint_takes_a_corrected_config(tiny_data_dir, tmp_path):
    """A run that died before its first checkpoint left config.json: nothing trained is there to
    protect, so the corrected command runs (and rewrites the records)."""
    workdir = str(tmp_path / "w")
    wrong = presets.resolve_config(tiny_config(tiny_data_dir))
    wrong.optimizer.learning_rate = 10.0
    workdirs.write_records(workdir, wrong, ["a"])
    state = train.train_and_evaluate(tiny_config(tiny_data_dir, num_steps=2), workdir)
    assert int(state.step) == 2
    stored, _ = workdirs.read_workdir(workdir)
    assert stored.optimizer.learning_rate == tiny_config(tiny_data_dir).optimizer.learning_rate
    # With a checkpoint, the same change is refused as before.
    with pytest.raises(workdirs.WorkdirMismatchError, match="optimizer.learning_rate"):
        workdirs.check_resumable(workdir, wrong)


def test_a_checkpoint_rotated_away_while_read_gives_the_newest_or_says_so(copy_of,
                                                                           monkeypatch):
    """`evaluate` beside a training run with keep_checkpoints=1: the checkpoint it reads may be
    removed under it. It used to fail with a raw TensorStore error, a FileNotFoundError or a
    DamagedCheckpointError for a checkpoint that was merely rotated away."""
    original = checkpoints.restore
    calls = []

    def rotating(mngr, step, *args, **kwargs):
        calls.append(step)
        if step == 8 and len(calls) == 1:  # the trainer removes it while it is read
            shutil.rmtree(os.path.join(copy_of, "checkpoints", "8"))
            raise FileNotFoundError("a TensorStore file vanished")
        return original(mngr, step, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "restore", rotating)
    _, _, state = workdirs.load_trained(copy_of)  # the latest: the newest that is left
    assert int(state.step) == 4 and calls == [8, 4]


def test_a_given_step_rotated_away_while_read_is_named(copy_of, monkeypatch):
    def rotating(mngr, step, *args, **kwargs):
        shutil.rmtree(os.path.join(copy_of, "checkpoints", str(step)))
        raise ValueError("orbax could not read it")

    monkeypatch.setattr(checkpoints, "restore", rotating)
    with pytest.raises(FileNotFoundError, match=r"step 8 .* was removed while it was read"):
        workdirs.load_trained(copy_of, step=8)


@pytest.mark.parametrize("field, value, flag", [
    ("model.decoder_variance", "pixel", "--config.model.decoder_variance=pixel"),
    ("model.decoder_log_var_range", (-10.0, 4.0),
     '"--config.model.decoder_log_var_range=(-10.0,4.0)"'),
    ("model.encoder_features", [16], '"--config.model.encoder_features=(16,)"'),
    ("optimizer.learning_rate", 0.0003, "--config.optimizer.learning_rate=0.0003"),
])
def test_config_flag_sets_the_workdirs_value(field, value, flag):
    assert workdirs.config_flag(field, value) == flag
