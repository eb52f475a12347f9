"""Tests of the attribute-fidelity scores (cmma_jax.metrics: ranks, ROC AUC, accuracy) against
brute force, and of the attribute classifier (cmma_jax.classifier) trained on synthetic faces."""

import itertools
import json
import os

import jax
import numpy as np
import pytest
from scipy import stats

from cmma_jax import classifier, metrics
from cmma_jax.data import reading

import eval_helpers


def brute_force_auc(scores, labels):
    """P(s+ > s-) + ½ P(s+ = s-) by counting every (positive, negative) pair."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_a_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 60
    scores = rng.integers(0, 6, size=n) / 5.0  # few distinct values: many ties
    labels = rng.uniform(size=n) < 0.3 + 0.1 * seed
    assert metrics.roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels),
                                                            abs=1e-12)
    continuous = rng.normal(size=n) + labels
    assert metrics.roc_auc(continuous, labels) == pytest.approx(
        brute_force_auc(continuous, labels), abs=1e-12)


def test_average_ranks_match_scipy():
    values = np.array([0.3, 0.1, 0.3, 2.0, 0.1, 0.1, -1.0])
    np.testing.assert_array_equal(metrics.average_ranks(values),
                                  stats.rankdata(values, method="average"))


def test_auc_edge_cases():
    assert metrics.roc_auc([0.1, 0.9], [0, 1]) == 1.0
    assert metrics.roc_auc([0.9, 0.1], [0, 1]) == 0.0
    assert metrics.roc_auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert np.isnan(metrics.roc_auc([0.2, 0.7], [1, 1]))  # no negative: undefined
    scores = np.array([[0.9, 0.2, 0.4], [0.1, 0.3, 0.6], [0.8, 0.9, 0.5]])
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]])
    auc = metrics.attribute_auc(scores, labels)
    np.testing.assert_array_equal(auc[:2], [1.0, 1.0])
    assert np.isnan(auc[2])  # a constant attribute
    np.testing.assert_allclose(metrics.attribute_accuracy(scores, labels), [1.0, 1.0, 1 / 3])
    with pytest.raises(ValueError, match=r"shape \(3, 3\).*shape \(3, 2\)"):
        metrics.attribute_auc(scores, labels[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([np.nan, 1.0], [0, 1])


def test_the_classifier_network_shapes():
    config = eval_helpers.classifier_config(None)
    state = classifier.init_state(jax.random.key(0), config, 7)
    out = classifier.logits(state.params, np.zeros((3, 64, 64, 3), np.float32), config=config)
    assert out.shape == (3, 7)
    p = classifier.predict(state.params, np.ones((2, 64, 64, 3), np.float32), config=config)
    assert p.shape == (2, 7) and np.all((p > 0) & (p < 1))
    with pytest.raises(ValueError, match=r"\[B, 64, 64, 3\]"):
        classifier.get_model(config, 7).apply({"params": state.params},
                                              np.zeros((1, 32, 32, 3), np.float32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return eval_helpers.trained_classifier(tmp_path_factory)


# Attributes the synthetic renderer draws large (hair colour, skin tone, facial hair, glasses):
# a classifier that works must find them on real faces after a short training.
SALIENT = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Pale_Skin", "Goatee",
           "Eyeglasses")


def test_the_classifier_learns_the_attributes_of_real_faces(trained):
    workdir, config, scores = trained
    assert scores["step"] == 300
    test = classifier.evaluate_classifier(classifier.load_classifier(workdir)[2], config, "test")
    names = json.load(open(os.path.join(workdir, "attributes.json")))
    assert test["num_images"] == 64
    auc = dict(zip(names, test["auc"]))
    accuracy = dict(zip(names, test["accuracy"]))
    for name in SALIENT:
        assert auc[name] > 0.85, (name, auc[name])
    majority = np.mean([max(r, 1 - r) for r in
                        _positive_rates(config, "test", len(names))])
    assert test["mean_auc"] > 0.75, test["mean_auc"]
    assert test["mean_accuracy"] > majority + 0.05, (test["mean_accuracy"], majority)
    assert np.mean([accuracy[n] for n in SALIENT]) > 0.85
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert lines[-1]["step"] == 300 and "val_auc" in lines[-1]
    assert lines[-1]["loss"] < lines[0]["loss"]


def _positive_rates(config, split, num_attributes):
    labels = np.concatenate([c.binary_attributes[: c.num_valid] for c in
                             reading.SplitReader(config.data, split, batch_size=64)])
    assert labels.shape[1] == num_attributes
    return labels.mean(axis=0)


def test_a_finished_classifier_run_resumes_without_training_again(trained):
    workdir, config, scores = trained
    again = classifier.train_classifier(config, workdir)
    assert again["step"] == 300
    np.testing.assert_allclose(again["auc"], scores["auc"])
    _, names, params = classifier.load_classifier(workdir)
    assert len(names) == 20
    with pytest.raises(FileNotFoundError, match="train a classifier first"):
        classifier.load_classifier(os.path.join(workdir, "missing"))
