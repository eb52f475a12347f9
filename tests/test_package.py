"""The package as a user installs it: one version, the objectives reachable from `import
cmma_jax`, and type information shipped (PEP 561)."""

import importlib.metadata
import pathlib
import sys

import cmma_jax

from conftest import run_command

ROOT = pathlib.Path(cmma_jax.__file__).parent


def test_the_objectives_are_attributes_of_the_package_loaded_on_use():
    code = ("import sys, cmma_jax\n"
            "assert 'cmma_jax.losses' not in sys.modules\n"
            "print(cmma_jax.losses.mmd.__name__, cmma_jax.metrics.roc_auc.__name__)\n"
            "assert 'cmma_jax.train' not in sys.modules\n"
            "try:\n    cmma_jax.nope\nexcept AttributeError as e:\n    print(e)\n")
    result = run_command([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["mmd roc_auc",
                                          "module 'cmma_jax' has no attribute 'nope'"]


def test_one_version_and_type_information_shipped():
    assert importlib.metadata.version("cmma-jax") == cmma_jax.__version__
    pyproject = (ROOT.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "version = {attr" in pyproject
    assert (ROOT / "py.typed").exists()
    changelog = (ROOT.parent / "CHANGELOG.md").read_text()
    assert f"## {cmma_jax.__version__}" in changelog
