"""The one mean ± standard error helper, against scipy."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from cmma_jax import stats


@pytest.mark.parametrize("n", [2, 3, 17, 1000])
def test_standard_error_matches_scipy(n):
    values = np.random.default_rng(n).normal(5.0, 3.0, n)
    assert stats.standard_error(values) == pytest.approx(scipy_stats.sem(values, ddof=1), rel=1e-12)


@pytest.mark.parametrize("values", [[], [4.0]])
def test_standard_error_needs_two_values(values):
    assert stats.standard_error(values) is None


def test_mean_stderr_skips_missing_values():
    out = stats.mean_stderr([1.0, None, 3.0, 8.0])
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(4.0)
    assert out["stderr"] == pytest.approx(scipy_stats.sem([1.0, 3.0, 8.0]))
    assert stats.mean_stderr([None]) == {"mean": None, "stderr": None, "n": 0}
