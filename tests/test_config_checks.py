"""Every config field's range (cmma_jax.configs.checks): each declared field refuses a bad value
naming itself, accepts its edge values, every numeric field of every config is declared, and the
trainer refuses before it writes anything."""

import math
import os

import ml_collections
import pytest

from cmma_jax import classifier, configs, train
from cmma_jax.configs import checks

from test_train import tiny_config

ALL_CONFIGS = {**{name: mod.get_config("tiny") for name, mod in configs.CONFIGS.items()},
               "classifier": classifier.get_config()}
DECLARED = [(section, field, rule) for section, rules in checks.FIELDS.items()
            for field, rule in rules.items()]


def _bad_values(rule):
    """Values the rule must refuse."""
    if rule.kind == "bool":
        return ["yes", 1]
    if rule.kind == "choice":
        return ["no-such-choice"]
    if rule.kind == "range":
        return [(4.0, -10.0), (1.0, 1.0), (0.0, math.inf), (1.0,)]
    bad = ["3"]
    if rule.kind in ("int", "float"):
        if rule.low is not None:
            bad.append(rule.low if rule.low_open else rule.low - 1)
        if rule.high is not None:
            bad.append(rule.high if rule.high_open else rule.high + 1)
        bad += [math.nan, math.inf]
        if rule.kind == "int":
            bad.append(1.5)
        if not rule.none:
            bad.append(None)
        return bad
    # tuples
    good = _good_value(rule)
    bad += [(), good + good[:1]] if rule.length is not None else [()]
    if rule.low is not None:
        bad.append((rule.low if rule.low_open else rule.low - 1,) + good[1:])
    return bad


def _good_value(rule):
    """A value at the edge of what the rule accepts."""
    if rule.kind == "bool":
        return False
    if rule.kind == "choice":
        return tuple(rule._choices())[0]
    if rule.kind == "range":
        return (-1.0, 1.0)
    edge = (rule.low + (0.5 if rule.low_open else 0)) if rule.low is not None else 0
    if rule.kind == "int":
        return int(math.ceil(edge))
    if rule.kind == "float":
        return float(edge if rule.high is None else min(edge, rule.high - 0.5))
    value = int(math.ceil(edge)) if rule.kind == "ints" else float(edge)
    return (value,) * (rule.length or 2)


@pytest.mark.parametrize("section,field,rule", DECLARED,
                         ids=[f"{s}.{f}" for s, f, _ in DECLARED])
def test_each_field_refuses_bad_values_naming_the_field_and_accepts_its_edge(section, field,
                                                                              rule):
    # A plain dict: a ConfigDict would refuse a value of another type before the check sees it.
    config = {"model": {}, "data": {"options": {}}, "training": {}, "optimizer": {}}
    node = config
    for part in section.split("."):
        node = node[part]
    node[field] = _good_value(rule)
    assert checks.problems(config) == [], (field, _good_value(rule))
    if rule.none:
        node[field] = None
        assert checks.problems(config) == []
    for value in _bad_values(rule):
        node[field] = value
        found = checks.problems(config)
        assert len(found) == 1 and found[0].startswith(f"--config.{section}.{field}="), (
            value, found)
        assert rule.describe() in found[0]


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_every_default_config_is_valid_and_every_numeric_field_is_declared(name):
    config = ALL_CONFIGS[name]
    assert checks.problems(config) == []
    undeclared = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, f"{prefix}{key}.")
                continue
            section = prefix.rstrip(".")
            numeric = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
                isinstance(value, tuple) and value and all(isinstance(v, (int, float))
                                                           for v in value))
            if numeric and key not in checks.FIELDS.get(section, {}):
                undeclared.append(f"{section}.{key}")

    walk(config, "")
    assert not undeclared, f"numeric fields without a declared range: {undeclared}"


@pytest.mark.parametrize("overrides,match", [
    ({"optimizer.warmup_steps": -5}, r"optimizer.warmup_steps=-5: must be an integer >= 0"),
    ({"optimizer.grad_clip_norm": -1.0}, r"optimizer.grad_clip_norm=-1.0: must be None or a "
                                         r"number >= 0"),
    ({"optimizer.learning_rate": math.nan}, r"optimizer.learning_rate=nan: must be a number > 0"),
    ({"model.latent_dim": 0}, r"model.latent_dim=0: must be None or an integer >= 1"),
    ({"model.mmd_weight": -1.0}, r"model.mmd_weight=-1.0"),
])
def test_the_trainer_refuses_before_writing_anything(tiny_data_dir, tmp_path, overrides, match):
    config = tiny_config(tiny_data_dir, model="vlae" if "model.mmd_weight" in overrides
                         else "cmma")
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        config[section][field] = value
    workdir = str(tmp_path / "w")
    with pytest.raises(ValueError, match=match):
        train.train_and_evaluate(config, workdir)
    assert not os.path.exists(workdir) or os.listdir(workdir) == []
