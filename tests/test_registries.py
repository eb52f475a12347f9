"""The registries are the only source of names: models (`models.MODELS`, `configs.CONFIGS`),
datasets (`data.registry.REGISTRY`, with their figure defaults) and estimators
(`evaluate.registry.ESTIMATORS`). No other module lists them again, and the doors offer what the
registries hold (docs/design.md, "recipes")."""

import ast
import pathlib
import sys

from cmma_jax import configs, figures
from cmma_jax.data import registry as data_registry
from cmma_jax.evaluate import registry as estimator_registry
from cmma_jax.models import MODELS
from cmma_jax.reproduce import DEFAULT_MODELS

from conftest import run_command

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Where the names may be written: the registries themselves, and workdirs.ADDED_FIELDS, a record
# of the models whose older workdirs lack a field (history, not a list of today's models).
REGISTRY_FILES = {"cmma_jax/models/__init__.py", "cmma_jax/configs/__init__.py",
                  "cmma_jax/data/registry.py", "cmma_jax/evaluate/registry.py",
                  "cmma_jax/workdirs.py"}


def _literal_lists(path: pathlib.Path):
    """Every tuple/list/set literal of strings in a file, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, {e.value for e in node.elts}


def test_no_module_lists_the_registries_names_again():
    names = {"models": set(MODELS), "datasets": set(data_registry.DATASETS),
             "estimators": set(estimator_registry.ESTIMATORS)}
    found = []
    for path in sorted([*ROOT.glob("cmma_jax/**/*.py"), *ROOT.glob("launch/*.py")]):
        rel = str(path.relative_to(ROOT))
        if rel in REGISTRY_FILES:
            continue
        for line, values in _literal_lists(path):
            for what, registered in names.items():
                if len(values & registered) >= 3:
                    found.append(f"{rel}:{line} lists {what} {sorted(values & registered)}")
    assert not found, "read the names from the registry instead:\n" + "\n".join(found)


def test_the_model_registries_agree_and_the_doors_offer_them():
    assert list(configs.CONFIGS) == list(MODELS)
    assert DEFAULT_MODELS == tuple(MODELS)
    result = run_command([sys.executable, "launch/train.py", "--help"], cwd=str(ROOT))
    assert f"<{'|'.join(MODELS)}>" in result.stdout + result.stderr


def test_every_dataset_has_figure_defaults_in_its_own_attributes():
    assert set(figures.FIGURE_DEFAULTS) == set(data_registry.DATASETS)
    for name in data_registry.DATASETS:
        d = figures.figure_defaults(name)
        requested = [*d["rows"], *d["columns"], *d["edits"], d["remove"], *d["arithmetic"]]
        figures.attribute_indices(requested, data_registry.get(name).attribute_names, name)


def test_every_estimator_reports_an_empty_evaluation():
    # The report's hooks of each estimator accept results where no model has its numbers.
    settings = {"split": "test", "validation_split": "validation", "num_test": None,
                "bound_samples": 1, "iwae_samples": [1], "parzen_num_test": 1,
                "parzen_num_validation": 1, "parzen_samples": 1, "parzen_temperature": 1.0,
                "parzen_sigmas": [0.1], "classifier_workdir": None, "fidelity_temperature": 1.0}
    models = [{"model": "x", "workdir": "w", "step": 0}]
    for name, estimator in estimator_registry.ESTIMATORS.items():
        assert estimator.name == name
        assert all(cell(models[0]) == "–" for _, cell in estimator.columns(models))
        assert estimator.describe(settings)
        if estimator.section is not None:
            assert estimator.section({"models": models}) == []
