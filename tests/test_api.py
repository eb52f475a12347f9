"""The public API researchers import: type-checked with mypy, and its reference built from the
docstrings with pdoc (both in the suite, so that neither can rot)."""

import pathlib
import sys

from conftest import run_command

REPO = pathlib.Path(__file__).resolve().parents[1]
# The modules a researcher imports on their own (README: the objectives and the estimators), and
# the bottom-layer helpers of the doors. The objectives are a package: mypy reads all its modules.
PUBLIC = ["cmma_jax/__init__.py", "cmma_jax/losses", "cmma_jax/metrics.py",
          "cmma_jax/files.py", "cmma_jax/flag_types.py"]


def test_the_public_api_is_mypy_clean():
    result = run_command([sys.executable, "-m", "mypy", "--no-incremental", *PUBLIC],
                         cwd=str(REPO))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout


def test_the_api_reference_builds_from_the_docstrings(tmp_path):
    result = run_command([sys.executable, "-m", "pdoc", "cmma_jax.losses", "cmma_jax.metrics",
                          "-o", str(tmp_path)], cwd=str(REPO))
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "cmma_jax" / "losses.html").read_text()
    for name in ("cmma_elbo", "ElboTerms", "event_ndims", "iwae_bound", "mmd"):
        assert name in page, name
    assert (tmp_path / "cmma_jax" / "metrics.html").exists()
