"""Tests of cmma_jax.metrics: the Parzen-window estimator against a float64 numpy reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special

from cmma_jax import metrics


def reference(x, samples, sigma, shared):
    """log (1/S) Σ_s N(x; s, σ² I) in float64 with direct distances, one test point at a time.

    `samples` is [S, ...] when `shared`, else [B, S, ...].
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    d = x.shape[1]
    samples = np.asarray(samples, np.float64)
    out = []
    for i, xi in enumerate(x):
        si = (samples if shared else samples[i]).reshape(-1, d)
        d2 = np.sum((si - xi) ** 2, axis=1)
        out.append(special.logsumexp(-d2 / (2 * sigma**2)) - np.log(len(si))
                   - 0.5 * d * np.log(2 * np.pi * sigma**2))
    return np.array(out)


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 64, 64, 3)).astype(np.float32)
    shared = rng.uniform(size=(37, 64, 64, 3)).astype(np.float32)
    # Per-test-point samples close to their test point, as a conditional model's would be.
    per = (x[:, None] + 0.1 * rng.normal(size=(5, 9, 64, 64, 3))).astype(np.float32)
    # One sample in the last chunk of each set (samples 32..36 with sample_chunk=8; sample 8
    # with sample_chunk=4) lies much closer to a test point than the others, so that it carries
    # that point's estimate: a loop that skipped the last chunk would change it by hundreds of
    # nats (checked by _assert_parzen_within_float32_error).
    shared[34] = x[1] + 0.05 * rng.normal(size=x.shape[1:])
    per[2, 8] = x[2] + 0.05 * rng.normal(size=x.shape[1:])
    return x, shared, per


def _assert_parzen_within_float32_error(got, x, samples, sigma, shared, sample_chunk):
    """Compares float32 Parzen estimates with the float64 reference to within float32 error.

    A relative tolerance on the result is far too loose for faces: the estimate is
    log p̂ = L - log S - N, with L = logsumexp_s(-e_s), e_s = ‖x - s‖² / 2σ², and
    N = (D/2) log(2πσ²); |L| and |N| reach 10⁴-10⁵ nats for D = 12,288 values, so rtol = 2e-5
    allows several nats, more than a missing `- log S` (log 37 = 3.6 nats) or a skipped chunk of
    samples may change. The tolerance is instead an absolute bound on float32 rounding, per
    point. With u = 2⁻²⁴ ≈ 6e-8 the unit roundoff of float32:
      * each exponent e_s sums D products. Shared samples use the expansion
        ‖x - c‖² + ‖s - c‖² - 2 (x - c)·(s - c), c the mean of the chunk of s: a tree-summed
        (pairwise/blocked) sum is within ⌈log₂ D⌉·u of the sum of its terms' magnitudes, so e_s
        is within log₂(D)·u·T_s with T_s = (‖x - c‖² + ‖s - c‖² + 2|(x - c)·(s - c)|) / 2σ²
        (T_s = e_s for per-point samples, whose differences are squared directly). T_s can be
        far above e_s when s is close to x: the three terms then cancel;
      * the logsumexp moves by the softmax-weighted mean of its exponents' errors, Σ w_s δ_s;
      * rounding 1/(2σ²), each square and the differences, N to float32 and the final additions
        each add at most about u·(Σ w_s T_s + |N|).
    Hence |error| ≤ (log₂ D + 4)·u·(Σ_s w_s T_s + |N|): at most about 1 nat here (σ = 0.05,
    T ≈ 8·10⁵), 10-20 times the error actually seen.
    """
    got = np.asarray(got, np.float64)
    x2 = np.asarray(x, np.float64).reshape(len(x), -1)
    d = x2.shape[1]
    num_samples = samples.shape[0] if shared else samples.shape[1]
    s2 = np.asarray(samples, np.float64).reshape((num_samples, d) if shared
                                                 else (len(x), num_samples, d))
    want = reference(x, samples, sigma, shared=shared)
    norm = 0.5 * d * np.log(2 * np.pi * sigma**2)
    if shared:
        chunk = np.arange(num_samples) // sample_chunk
        centres = np.stack([s2[chunk == k].mean(0) for k in range(chunk.max() + 1)])[chunk]
        sc = s2 - centres  # [S, D]
        xc = x2[:, None, :] - centres[None]  # [B, S, D]
        terms = (np.sum(xc**2, -1) + np.sum(sc**2, -1)[None]
                 + 2 * np.abs(np.einsum("bsd,sd->bs", xc, sc)))
        d2 = np.sum((x2[:, None, :] - s2[None]) ** 2, -1)
    else:
        d2 = terms = np.sum((s2 - x2[:, None, :]) ** 2, -1)  # [B, S]
    weights = special.softmax(-d2 / (2 * sigma**2), axis=1)
    scale = np.sum(weights * terms, axis=1) / (2 * sigma**2)
    u = 2.0**-24
    tol = (np.log2(d) + 4) * u * (scale + abs(norm))
    err = np.abs(got - want)
    assert np.all(err <= tol), (err, tol)
    # The bound is tight enough to see the defects it is meant to catch: a missing `- log S`
    # (an error of log S at every point), and a loop that skips the last chunk of samples.
    assert tol.max() < np.log(num_samples) / 2, tol
    keep = np.arange(num_samples) < (num_samples - 1) // sample_chunk * sample_chunk
    kept = s2[keep] if shared else s2[:, keep]
    without_last = reference(x, kept, sigma, shared=shared) + np.log(keep.sum() / num_samples)
    assert np.any(np.abs(without_last - want) > 10 * tol), (without_last - want, tol)


@pytest.mark.parametrize("sigma", [0.05, 0.2, 1.0])
def test_parzen_shared_samples_on_faces_match_float64(faces, sigma):
    x, shared, _ = faces
    got = metrics.parzen_log_likelihood(x, shared, sigma, test_chunk=2, sample_chunk=8)
    assert got.shape == (5,)
    want = reference(x, shared, sigma, shared=True)
    # float32 with 12,288 values per face: relative error of order 1e-6 of the magnitudes.
    np.testing.assert_allclose(got, want, rtol=2e-5)
    _assert_parzen_within_float32_error(got, x, shared, sigma, shared=True, sample_chunk=8)


@pytest.mark.parametrize("sigma", [0.03, 0.3])
def test_parzen_per_test_point_samples_on_faces_match_float64(faces, sigma):
    x, _, per = faces
    got = metrics.parzen_log_likelihood(x, per, sigma, test_chunk=3, sample_chunk=4)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, reference(x, per, sigma, shared=False), rtol=1e-5)
    _assert_parzen_within_float32_error(got, x, per, sigma, shared=False, sample_chunk=4)
    # And the per-test-point protocol really uses each point's own samples: swapping two
    # points' samples changes their values.
    swapped = per.copy()
    swapped[[0, 1]] = per[[1, 0]]
    other = metrics.parzen_log_likelihood(x, swapped, sigma)
    assert np.all(np.asarray(other[:2]) < np.asarray(got[:2]) - 1.0)


@pytest.mark.parametrize("sigma", [1e-3, 1e3])
def test_parzen_extreme_sigmas(sigma):
    # σ = 1e-3: every exp(-d²/2σ²) underflows to 0 in float32, so log(mean(exp)) would be -inf.
    # σ = 1e3: the kernels are all ≈ 1 and the normaliser dominates.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 10)).astype(np.float32)
    samples = rng.normal(size=(50, 10)).astype(np.float32)
    got = metrics.parzen_log_likelihood(x, samples, sigma)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference(x, samples, sigma, shared=True), rtol=1e-5)
    per = (x[:, None] + rng.normal(size=(6, 20, 10))).astype(np.float32)
    got = metrics.parzen_log_likelihood(x, per, sigma)
    np.testing.assert_allclose(got, reference(x, per, sigma, shared=False), rtol=1e-5)


def test_parzen_chunking_does_not_change_the_result():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(11, 7)).astype(np.float32)
    samples = rng.normal(size=(23, 7)).astype(np.float32)
    whole = metrics.parzen_log_likelihood(x, samples, 0.8, test_chunk=11, sample_chunk=23)
    for tc, sc in [(1, 1), (4, 5), (3, 23), (11, 2)]:
        np.testing.assert_allclose(
            metrics.parzen_log_likelihood(x, samples, 0.8, test_chunk=tc, sample_chunk=sc),
            whole, rtol=1e-6)


def test_parzen_from_fn_asks_for_bounded_chunks_and_reports_progress():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    per = rng.normal(size=(10, 13, 4)).astype(np.float32)
    asked, progress = [], []

    def sample_fn(b_slice, s_slice):
        asked.append((b_slice, s_slice))
        return per[b_slice, s_slice]

    got = metrics.parzen_log_likelihood_from_fn(
        x, sample_fn, 13, [0.5, 2.0], shared=False, test_chunk=4, sample_chunk=5,
        progress=lambda done, total: progress.append((done, total)))
    assert got.shape == (2, 10)
    assert all(b.stop - b.start <= 4 and s.stop - s.start <= 5 for b, s in asked)
    assert len(asked) == 3 * 3 and progress[-1] == (9, 9)
    np.testing.assert_allclose(got[0], reference(x, per, 0.5, shared=False), rtol=1e-5)
    np.testing.assert_allclose(got[1], reference(x, per, 2.0, shared=False), rtol=1e-5)


def test_parzen_from_fn_rejects_a_chunk_of_the_wrong_shape():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 5, 2\).*\(4, 3\)"):
        metrics.parzen_log_likelihood_from_fn(
            x, lambda b, s: np.zeros((2, 5, 2), np.float32), 5, 1.0, shared=False,
            test_chunk=2, sample_chunk=5)


def test_default_chunks_stay_bounded_at_the_paper_scale():
    # 2,000 faces x 1,000 samples x 12,288 values: no chunk may exceed the budget.
    d = 64 * 64 * 3
    for shared in (True, False):
        tc, sc = metrics._chunk_sizes(2000, 1000, d, shared, None, None)
        per_chunk = sc * d * (tc if not shared else 1) + tc * d
        assert per_chunk <= 2 * metrics.MAX_CHUNK_VALUES, (shared, tc, sc)


def test_select_parzen_sigma_matches_reference_and_picks_the_best():
    rng = np.random.default_rng(4)
    # Validation and model samples from the same N(0, 0.3² I): the best σ is neither extreme.
    x = (0.3 * rng.normal(size=(40, 5))).astype(np.float32)
    samples = (0.3 * rng.normal(size=(400, 5))).astype(np.float32)
    grid = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    best, means = metrics.select_parzen_sigma(x, samples, grid, sample_chunk=64)
    want = np.array([reference(x, samples, s, shared=True).mean() for s in grid])
    np.testing.assert_allclose(means, want, rtol=1e-5)
    assert best == grid[int(np.argmax(want))]
    assert best not in (grid[0], grid[-1])
    assert isinstance(best, float)


def test_parzen_shape_and_sigma_errors():
    x = np.zeros((4, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 8, 8, 3\).*\(10, 8, 8, 1\)"):
        metrics.parzen_log_likelihood(x, np.zeros((10, 8, 8, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match=r"\(4, 8, 8, 3\).*\(3, 10, 8, 8, 3\)"):
        metrics.parzen_log_likelihood(x, np.zeros((3, 10, 8, 8, 3), np.float32), 1.0)
    with pytest.raises(ValueError, match="positive"):
        metrics.parzen_log_likelihood(x, np.zeros((10, 8, 8, 3), np.float32), -1.0)
    with pytest.raises(ValueError, match="select_parzen_sigma"):
        metrics.parzen_log_likelihood(x, np.zeros((10, 8, 8, 3), np.float32), [1.0, 2.0])


def test_parzen_under_jit_and_grad():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    samples = rng.normal(size=(6, 4)).astype(np.float32)
    f = functools.partial(metrics.parzen_log_likelihood, sigma=0.7, sample_chunk=4)
    np.testing.assert_allclose(jax.jit(f)(x, samples), f(x, samples), rtol=1e-6)
    with jax.enable_x64(True):
        check_grads(lambda a: f(a, samples.astype(np.float64)), [x.astype(np.float64)], order=1,
                    modes=("rev",), atol=1e-2, rtol=1e-2)
        # The gradient of log p̂(x) for a single sample s is -(x - s) / σ².
        g = jax.grad(lambda a: f(a, samples[:1].astype(np.float64)).sum())(x.astype(np.float64))
        np.testing.assert_allclose(g, -(x - samples[:1]) / 0.49, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Fine detail (laplacian_energy)


def test_laplacian_energy_matches_scipy_on_the_interior_and_falls_with_blur():
    from scipy import ndimage
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 9, 7, 3))
    lap = np.stack([np.stack([ndimage.laplace(im[..., c]) for c in range(3)], -1)
                    for im in images])
    want = np.mean(np.square(lap[:, 1:-1, 1:-1]), axis=(1, 2, 3))
    np.testing.assert_allclose(metrics.laplacian_energy(images), want, rtol=1e-12)
    np.testing.assert_allclose(metrics.laplacian_energy(images[0]), want[0], rtol=1e-12)
    blurred = ndimage.gaussian_filter(images, sigma=(0, 1, 1, 0))
    assert np.all(metrics.laplacian_energy(blurred) < 0.1 * want)
    assert metrics.laplacian_energy(np.full((1, 5, 5, 3), 0.25))[0] == 0.0  # no detail at all
    with pytest.raises(ValueError, match="H, W >= 3"):
        metrics.laplacian_energy(np.zeros((2, 2, 5, 3)))
