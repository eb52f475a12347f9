"""Trained tiny models and a tiny attribute classifier shared by the evaluation tests
(test_evaluate, test_classifier, test_figures, test_launch_eval): made once per test session and
reused, since training even a tiny model means compiling its step."""

import os

from conftest import TINY_DATA_OPTIONS

MODEL_NAMES = ("cmma", "cvae", "cgan", "vlae")
# The classifier learns from more faces than the tiny models need: 1,024 rendered in ~3 s.
CLASSIFIER_DATA_OPTIONS = {"num_train": 1024, "num_validation": 32, "num_test": 64}

_cache = {}


def tiny_model_config(data_dir, model):
    from cmma_jax import configs

    config = configs.CONFIGS[model].get_config("tiny")
    config.data.prepared_dir = data_dir
    config.data.options = dict(TINY_DATA_OPTIONS)
    config.training.update(batch_size=8, num_steps=2, log_every=1, checkpoint_every=2,
                           sample_every=2)
    return config


def trained_workdirs(data_dir, tmp_path_factory):
    """{model name: workdir} of the four models trained for 2 steps on the tiny data."""
    key = ("models", data_dir)
    if key not in _cache:
        from cmma_jax import train

        root = tmp_path_factory.mktemp("eval_models")
        workdirs = {}
        for name in MODEL_NAMES:
            workdirs[name] = str(root / name)
            train.train_and_evaluate(tiny_model_config(data_dir, name), workdirs[name])
        _cache[key] = workdirs
    return _cache[key]


def classifier_config(data_dir, num_steps=300):
    from cmma_jax import classifier

    config = classifier.get_config()
    config.data.prepared_dir = data_dir
    config.data.options = dict(CLASSIFIER_DATA_OPTIONS)
    config.model.update(features=(16, 32, 32), hidden=64, input_pool=2)
    config.optimizer.learning_rate = 2e-3
    config.training.update(batch_size=32, num_steps=num_steps, log_every=100, eval_every=1000,
                           checkpoint_every=1000)
    return config


def trained_classifier(tmp_path_factory):
    """(workdir, config, training scores) of a classifier trained for 300 steps on 1,024
    synthetic faces (its own prepared data: the same attributes as the tiny models')."""
    if "classifier" not in _cache:
        from cmma_jax import classifier

        root = tmp_path_factory.mktemp("eval_classifier")
        config = classifier_config(str(root / "tfds"))
        workdir = str(root / "workdir")
        scores = classifier.train_classifier(config, workdir)
        _cache["classifier"] = (workdir, config, scores)
    return _cache["classifier"]


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
