"""Tests of cmma_jax.losses against independent references.

References: scipy's densities and numerical integration (likelihoods, KL), float64 numpy closed forms
of a linear-Gaussian model (ELBO, IWAE, exact log p(x|y)), Monte Carlo estimates with tolerances
derived from their standard errors, explicit double loops (kernels, MMD), and hand-worked values
(GAN losses).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, special, stats

from cmma_jax import losses

IMAGE_SHAPE = (2, 64, 64, 3)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _x64(fn):
    """Runs a test body with float64 enabled, for gradient checks by finite differences."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Gaussian log-likelihood


def _scipy_gaussian_ll(x, mean, log_var):
    x, mean, log_var = (np.asarray(a, np.float64) for a in (x, mean, log_var))
    lp = stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * log_var))
    return lp.reshape(lp.shape[0], -1).sum(axis=1)


@pytest.mark.parametrize("shape", [(5, 7), IMAGE_SHAPE])
def test_gaussian_log_likelihood_matches_scipy(shape):
    rng = _rng(1)
    x = rng.uniform(0, 1, shape).astype(np.float32)
    mean = rng.uniform(0, 1, shape).astype(np.float32)
    log_var = rng.uniform(-6, 1, shape).astype(np.float32)
    got = losses.gaussian_log_likelihood(x, mean, log_var)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, _scipy_gaussian_ll(x, mean, log_var), rtol=2e-5)


def test_gaussian_log_likelihood_extreme_variances():
    # Variances from 1e-44 to 1e43. Naive code (divide by exp(v), or log of the density) loses
    # these: exp(-100) is a float32 denormal and exp(100) overflows.
    log_var = np.array([[-100.0, -60.0, -20.0, 0.0, 20.0, 60.0, 100.0]], np.float32)
    diff = np.exp(0.5 * log_var.astype(np.float64)) * np.array([[3.0, 0.5, 2.0, 1.0, 1.5, 0.1, 4.0]])
    mean = np.full_like(log_var, 0.25)
    x = (mean + diff).astype(np.float32)
    got = losses.gaussian_log_likelihood(x, mean, log_var)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _scipy_gaussian_ll(x, mean, log_var), rtol=1e-5)


def test_gaussian_log_likelihood_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 1\)"):
        losses.gaussian_log_likelihood(jnp.zeros((4, 3)), jnp.zeros((4, 3)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"\(2, 64, 64, 3\).*\(2, 64, 64\)"):
        losses.gaussian_log_likelihood(jnp.zeros(IMAGE_SHAPE), jnp.zeros(IMAGE_SHAPE[:-1]),
                                       jnp.zeros(IMAGE_SHAPE))


@_x64
def test_gaussian_log_likelihood_gradients():
    rng = _rng(2)
    args = [rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.uniform(-1, 1, (3, 4))]
    check_grads(losses.gaussian_log_likelihood, args, order=2, modes=("fwd", "rev"))


def test_gaussian_log_likelihood_jit_and_vmap():
    rng = _rng(3)
    x, m, v = (rng.normal(size=(4, 5)).astype(np.float32) for _ in range(3))
    eager = losses.gaussian_log_likelihood(x, m, v)
    np.testing.assert_allclose(jax.jit(losses.gaussian_log_likelihood)(x, m, v), eager, rtol=1e-6)
    # vmap over an outer axis of [T, B, D] inputs gives [T, B].
    stacked = [np.stack([a, a[::-1]]) for a in (x, m, v)]
    out = jax.vmap(losses.gaussian_log_likelihood)(*stacked)
    np.testing.assert_allclose(out[0], eager, rtol=1e-6)
    np.testing.assert_allclose(out[1], eager[::-1], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bernoulli log-likelihood


@pytest.mark.parametrize("shape", [(6, 9), IMAGE_SHAPE])
def test_bernoulli_log_likelihood_matches_scipy(shape):
    rng = _rng(4)
    x = (rng.uniform(size=shape) < 0.3).astype(np.float32)
    logits = rng.normal(scale=3.0, size=shape).astype(np.float32)
    p = special.expit(logits.astype(np.float64))
    want = stats.bernoulli.logpmf(x, p).reshape(shape[0], -1).sum(1)
    got = losses.bernoulli_log_likelihood(x, logits)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bernoulli_log_likelihood_soft_targets_and_extreme_logits():
    x = np.array([[0.0, 1.0, 0.3, 1.0, 0.0]], np.float32)
    logits = np.array([[100.0, -100.0, 2.5, 80.0, -80.0]], np.float32)
    # Worked by hand: x log σ(a) + (1 - x) log σ(-a), with log σ(a) = -log(1 + e^-a).
    log_sig = lambda a: -math.log1p(math.exp(-a)) if a > 0 else a - math.log1p(math.exp(a))
    want = sum(xi * log_sig(ai) + (1 - xi) * log_sig(-ai) for xi, ai in zip(x[0], logits[0]))
    got = losses.bernoulli_log_likelihood(x, logits)
    assert np.isfinite(got).all()  # log(1 - sigmoid(100)) would be log(0) in float32
    np.testing.assert_allclose(got, [want], rtol=1e-6)


def test_bernoulli_log_likelihood_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        losses.bernoulli_log_likelihood(jnp.zeros((3, 4)), jnp.zeros((3, 5)))


@_x64
def test_bernoulli_log_likelihood_gradients():
    rng = _rng(5)
    x = rng.uniform(size=(3, 4))
    check_grads(lambda a: losses.bernoulli_log_likelihood(x, a), [rng.normal(size=(3, 4))],
                order=2, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------------------------
# KL divergences


def _kl_by_quadrature(mq, vq, mp, vp):
    """KL(q || p) of two 1-D Gaussians by numerical integration of q log(q/p)."""
    sq, sp = math.exp(0.5 * vq), math.exp(0.5 * vp)

    def integrand(t):
        return stats.norm.pdf(t, mq, sq) * (stats.norm.logpdf(t, mq, sq)
                                            - stats.norm.logpdf(t, mp, sp))

    value, _ = integrate.quad(integrand, mq - 12 * sq, mq + 12 * sq, limit=200,
                              epsabs=1e-12, epsrel=1e-10)
    return value


def test_gaussian_kl_matches_numerical_integration():
    rng = _rng(6)
    shape = (3, 4)
    mq, mp = rng.normal(size=shape), rng.normal(size=shape)
    vq, vp = rng.uniform(-2, 2, shape), rng.uniform(-2, 2, shape)
    want = np.array([[_kl_by_quadrature(*(a[b, j] for a in (mq, vq, mp, vp)))
                      for j in range(shape[1])] for b in range(shape[0])]).sum(1)
    got = losses.gaussian_kl(*(a.astype(np.float32) for a in (mq, vq, mp, vp)))
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gaussian_kl_batched_images_and_identity():
    rng = _rng(7)
    m = rng.normal(size=IMAGE_SHAPE).astype(np.float32)
    v = rng.normal(size=IMAGE_SHAPE).astype(np.float32)
    np.testing.assert_array_equal(losses.gaussian_kl(m, v, m, v), np.zeros(IMAGE_SHAPE[0]))


def test_gaussian_kl_close_distributions_keep_precision():
    # When q ≈ p, exp(d) - 1 - d cancels; float64 closed form is the reference.
    vq = np.array([[1e-3, -2e-3, 5e-4]], np.float32)
    vp = np.zeros_like(vq)
    mq = np.array([[1e-3, 0.0, -2e-3]], np.float32)
    mp = np.zeros_like(mq)
    d = vq.astype(np.float64) - vp
    want = 0.5 * np.sum(np.expm1(d) - d + mq.astype(np.float64) ** 2, axis=1)
    np.testing.assert_allclose(losses.gaussian_kl(mq, vq, mp, vp), want, rtol=1e-4)


def test_gaussian_kl_extreme_variances():
    vq = np.array([[-60.0, 40.0, -30.0]], np.float32)
    vp = np.array([[40.0, -40.0, 10.0]], np.float32)
    mq = np.array([[0.5, -1.0, 2.0]], np.float32)
    mp = np.array([[1.0, 3.0, -1.0]], np.float32)
    a = [x.astype(np.float64) for x in (mq, vq, mp, vp)]
    want = 0.5 * np.sum(a[3] - a[1] + np.exp(a[1] - a[3]) + (a[0] - a[2]) ** 2 / np.exp(a[3]) - 1,
                        axis=1)
    got = losses.gaussian_kl(mq, vq, mp, vp)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_standard_normal_kl_matches_quadrature_and_general_kl():
    rng = _rng(8)
    m = rng.normal(size=(2, 3))
    v = rng.uniform(-3, 2, (2, 3))
    want = np.array([[_kl_by_quadrature(m[b, j], v[b, j], 0.0, 0.0) for j in range(3)]
                     for b in range(2)]).sum(1)
    got = losses.standard_normal_kl(m.astype(np.float32), v.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    z = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(
        got, losses.gaussian_kl(m.astype(np.float32), v.astype(np.float32), z, z), rtol=1e-6)


def test_standard_normal_kl_near_the_prior_keeps_precision():
    # Near q = N(0, I) the terms of exp(v) - 1 - v cancel: in float32, exp(v) near 1 is rounded
    # to within u = 2⁻²⁴ ≈ 6e-8 absolute, an error as large as the whole KL once |v| ≲ 3e-4.
    # expm1(v) - v keeps the error relative to the terms' size: expm1(v) ≈ v is rounded to within
    # u·|v|, the subtraction of v is then exact (Sterbenz), and μ² and the sum of J terms add
    # about J·u of their magnitudes. So the KL of each row is within c·u·Σ_j (|v_j| + μ_j²)/2;
    # c = 4 leaves a margin of ten over float32 expm1 and is 10-10⁵ times too small for the
    # naive form. The reference is the float64 closed form of the same float32 inputs.
    rng = _rng(10)
    scales = np.array([1e-3, 1e-4, 1e-5, 1e-6])[:, None]  # one row per scale
    v, m = (scales * rng.uniform(0.3, 1.0, (2, 4, 8)) * rng.choice([-1.0, 1.0], (2, 4, 8))
            ).astype(np.float32)
    v64, m64 = v.astype(np.float64), m.astype(np.float64)
    want = 0.5 * np.sum(np.expm1(v64) - v64 + m64**2, axis=1)
    got = np.asarray(losses.standard_normal_kl(m, v), np.float64)
    u = 2.0**-24
    tol = 4 * u * 0.5 * np.sum(np.abs(v64) + m64**2, axis=1)
    assert np.all(np.abs(got - want) <= tol), (got, want, tol)
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-3)  # relative, at 1e-3 and 1e-4
    # And through gaussian_kl with p = N(0, I), whose d = v - 0 takes the same path.
    z = np.zeros_like(v)
    assert np.all(np.abs(np.asarray(losses.gaussian_kl(m, v, z, z), np.float64) - want) <= tol)


def test_kl_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(4, 7\)"):
        losses.gaussian_kl(jnp.zeros((4, 8)), jnp.zeros((4, 8)), jnp.zeros((4, 7)),
                           jnp.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(8,\)"):
        losses.standard_normal_kl(jnp.zeros((4, 8)), jnp.zeros((8,)))


@_x64
def test_kl_gradients():
    rng = _rng(9)
    args = [rng.normal(size=(2, 3)) for _ in range(2)] + [rng.uniform(-1, 1, (2, 3))
                                                          for _ in range(2)]
    check_grads(losses.gaussian_kl, [args[0], args[2], args[1], args[3]], order=1,
                modes=("fwd", "rev"))
    check_grads(losses.standard_normal_kl, [args[0], args[2]], order=1, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------------------------
# Reparameterisation


def test_reparameterize_moments_within_standard_error():
    n = 200_000
    mean = np.array([0.5, -2.0, 3.0], np.float32)
    log_var = np.array([0.0, -3.0, 2.0], np.float32)
    z = losses.reparameterize(jax.random.key(0), np.tile(mean, (n, 1)), np.tile(log_var, (n, 1)))
    assert z.shape == (n, 3) and z.dtype == jnp.float32
    var = np.exp(log_var.astype(np.float64))
    z = np.asarray(z, np.float64)
    # Standard errors: of the mean, sqrt(var / n); of the sample variance, var sqrt(2 / (n - 1)).
    assert np.all(np.abs(z.mean(0) - mean) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(z.var(0, ddof=1) - var) < 5 * var * np.sqrt(2 / (n - 1)))


def test_reparameterize_uses_half_log_variance_and_is_differentiable():
    key = jax.random.key(1)
    mean = jnp.array([[1.0, 2.0]])
    log_var = jnp.array([[0.4, -1.0]])
    eps = jax.random.normal(key, mean.shape)
    np.testing.assert_allclose(losses.reparameterize(key, mean, log_var),
                               mean + eps * jnp.exp(0.5 * log_var), rtol=1e-6)
    g_mean, g_lv = jax.grad(lambda m, v: losses.reparameterize(key, m, v).sum(), (0, 1))(
        mean, log_var)
    np.testing.assert_allclose(g_mean, np.ones_like(mean))
    np.testing.assert_allclose(g_lv, 0.5 * eps * jnp.exp(0.5 * log_var), rtol=1e-6)


def test_reparameterize_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3,\)"):
        losses.reparameterize(jax.random.key(0), jnp.zeros((3, 2)), jnp.zeros((3,)))


# ---------------------------------------------------------------------------------------------
# A linear-Gaussian conditional model with closed forms for everything
#
#   p(z | y) = N(P y, diag(exp(vp)))          (the CMMA prior f)
#   p(x | z) = N(W z + c, diag(exp(vx)))      (the decoder g)
#   q(z | x, y) = N(A x + B y, diag(exp(vq)))  (the encoder h)
#
# log p(x | y) = log N(x; W P y + c, W Σp Wᵀ + Σx), and the ELBO has a closed form too.


class LinearGaussian:
    def __init__(self, dim_x=6, dim_z=3, dim_y=2, seed=10):
        rng = _rng(seed)
        self.W = rng.normal(size=(dim_x, dim_z))
        self.c = rng.normal(size=dim_x) * 0.3
        self.vx = rng.uniform(-1.0, 0.0, dim_x)
        self.P = rng.normal(size=(dim_z, dim_y))
        self.vp = rng.uniform(-0.5, 0.5, dim_z)
        self.A = rng.normal(size=(dim_z, dim_x)) * 0.2
        self.B = rng.normal(size=(dim_z, dim_y)) * 0.2
        self.vq = rng.uniform(-1.5, -0.5, dim_z)
        self.dims = dim_x, dim_z, dim_y

    def data(self, n, seed=11):
        rng = _rng(seed)
        y = rng.normal(size=(n, self.dims[2]))
        z = y @ self.P.T + rng.normal(size=(n, self.dims[1])) * np.exp(0.5 * self.vp)
        x = z @ self.W.T + self.c + rng.normal(size=(n, self.dims[0])) * np.exp(0.5 * self.vx)
        return x.astype(np.float32), y.astype(np.float32)

    # Functions in the losses' calling convention (float32 jax).
    def encode(self, x, y):
        mean = x @ jnp.asarray(self.A.T, x.dtype) + y @ jnp.asarray(self.B.T, x.dtype)
        return mean, jnp.broadcast_to(jnp.asarray(self.vq, x.dtype), mean.shape)

    def decode(self, z, y):
        mean = z @ jnp.asarray(self.W.T, z.dtype) + jnp.asarray(self.c, z.dtype)[None]
        return mean, jnp.broadcast_to(jnp.asarray(self.vx, z.dtype), mean.shape)

    def prior(self, y):
        mean = y @ jnp.asarray(self.P.T, y.dtype)
        return mean, jnp.broadcast_to(jnp.asarray(self.vp, y.dtype), mean.shape)

    # float64 references.
    def log_marginal(self, x, y):
        cov = self.W @ np.diag(np.exp(self.vp)) @ self.W.T + np.diag(np.exp(self.vx))
        means = y.astype(np.float64) @ (self.W @ self.P).T + self.c
        return np.array([stats.multivariate_normal.logpdf(xi, mi, cov)
                         for xi, mi in zip(x.astype(np.float64), means)])

    def exact_elbo(self, x, y, prior=True):
        x, y = x.astype(np.float64), y.astype(np.float64)
        mq = x @ self.A.T + y @ self.B.T
        sq2 = np.exp(self.vq)
        sx2 = np.exp(self.vx)
        mean_x = mq @ self.W.T + self.c
        # E_q log N(x; Wz + c, Σx) = log N(x; W μq + c, Σx) - ½ Σ_l (W diag(σq²) Wᵀ)_ll / σx_l².
        ll = (stats.norm.logpdf(x, mean_x, np.sqrt(sx2)).sum(1)
              - 0.5 * np.sum((self.W**2 @ sq2) / sx2))
        if prior:
            mp, vp = y @ self.P.T, self.vp
        else:
            mp, vp = np.zeros_like(mq), np.zeros_like(self.vp)
        kl = 0.5 * np.sum(vp - self.vq + np.exp(self.vq - vp) + (mq - mp) ** 2 / np.exp(vp) - 1,
                          axis=1)
        return ll - kl, ll, kl

    def per_sample_log_likelihoods(self, x, y, num, seed=12):
        """log p(x | z_k) for z_k ~ q, in float64 numpy: used for standard errors."""
        rng = _rng(seed)
        x64 = x.astype(np.float64)
        mq = x64 @ self.A.T + y.astype(np.float64) @ self.B.T
        z = mq[None] + rng.normal(size=(num,) + mq.shape) * np.exp(0.5 * self.vq)
        return stats.norm.logpdf(x64[None], z @ self.W.T + self.c,
                                 np.exp(0.5 * self.vx)).sum(-1)  # [K, B]


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian()


def test_conditional_elbo_monte_carlo_matches_closed_form(lg):
    x, y = lg.data(5)
    k = 4000
    terms = lg_terms = losses.cmma_elbo(jax.random.key(0), x, y, encode=lg.encode,
                                        decode=lg.decode, prior=lg.prior, num_samples=k)
    elbo, ll, kl = lg.exact_elbo(x, y)
    assert all(getattr(lg_terms, n).shape == (5,) for n in losses.ELBO_TERMS)
    # The KL is in closed form (float32 rounding only); the likelihood is a mean over k samples,
    # whose standard error we estimate from independent float64 samples.
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-5)
    se = lg.per_sample_log_likelihoods(x, y, 20000).std(0) / np.sqrt(k)
    assert np.all(np.abs(np.asarray(terms.log_likelihood) - ll) < 5 * se + 1e-4), (
        terms.log_likelihood, ll, se)
    np.testing.assert_allclose(terms.elbo, terms.log_likelihood - terms.kl, rtol=1e-6)
    # A bound: below the exact conditional log-likelihood.
    assert np.all(elbo <= lg.log_marginal(x, y))


def test_cvae_elbo_uses_standard_normal_prior(lg):
    x, y = lg.data(4)
    k = 4000
    terms = losses.cvae_elbo(jax.random.key(1), x, y, encode=lg.encode, decode=lg.decode,
                             num_samples=k)
    _, ll, kl = lg.exact_elbo(x, y, prior=False)
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-5)
    se = lg.per_sample_log_likelihoods(x, y, 20000).std(0) / np.sqrt(k)
    assert np.all(np.abs(np.asarray(terms.log_likelihood) - ll) < 5 * se + 1e-4)
    same = losses.conditional_elbo(jax.random.key(1), x, y, encode=lg.encode, decode=lg.decode,
                                   prior=None, num_samples=k)
    np.testing.assert_array_equal(same.elbo, terms.elbo)


def test_conditional_elbo_on_images_with_a_linear_decoder():
    # [B, 64, 64, 3] images; decoder z -> image through a fixed random projection.
    rng = _rng(13)
    b, j, a = 2, 4, 3
    proj = jnp.asarray(rng.normal(size=(j, 64 * 64 * 3)) * 0.1, jnp.float32)
    x = jnp.asarray(rng.uniform(size=(b, 64, 64, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(b, a)), jnp.float32)

    def encode(x, y):
        m = jnp.mean(x, axis=(1, 2))[:, :1] * jnp.ones((1, j))
        return m, jnp.full_like(m, -1.0)

    def decode(z, y):
        m = jax.nn.sigmoid(z @ proj).reshape(z.shape[0], 64, 64, 3)
        return m, jnp.full_like(m, -3.0)

    def prior(y):
        return y[:, :1] * jnp.ones((1, j)), jnp.zeros((y.shape[0], j))

    key = jax.random.key(3)
    terms = losses.cmma_elbo(key, x, y, encode=encode, decode=decode, prior=prior)
    assert all(getattr(terms, n).shape == (b,) for n in losses.ELBO_TERMS)
    # One sample: log p(x|z) at that very z, computed directly.
    mq, vq = encode(x, y)
    z = losses.reparameterize(jax.random.split(key, 1)[0], mq, vq)
    mx, vx = decode(z, y)
    np.testing.assert_allclose(terms.log_likelihood, _scipy_gaussian_ll(x, mx, vx), rtol=1e-5)
    # Under jit, the same.
    jitted = jax.jit(lambda k, x, y: losses.cmma_elbo(k, x, y, encode=encode, decode=decode,
                                                      prior=prior))(key, x, y)
    np.testing.assert_allclose(jitted.elbo, terms.elbo, rtol=1e-5)


def test_conditional_elbo_shape_errors(lg):
    x, y = lg.data(3)
    with pytest.raises(ValueError, match=r"\(3, 6\).*\(2, 2\)"):
        losses.cmma_elbo(jax.random.key(0), x, y[:2], encode=lg.encode, decode=lg.decode,
                         prior=lg.prior)
    bad_decode = lambda z, y: tuple(a[:, :5] for a in lg.decode(z, y))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(3, 6\)"):
        losses.cmma_elbo(jax.random.key(0), x, y, encode=lg.encode, decode=bad_decode,
                         prior=lg.prior)
    bad_prior = lambda y: tuple(a[:, :2] for a in lg.prior(y))
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 3\)"):
        losses.cmma_elbo(jax.random.key(0), x, y, encode=lg.encode, decode=lg.decode,
                         prior=bad_prior)
    with pytest.raises(ValueError, match="num_samples"):
        losses.cvae_elbo(jax.random.key(0), x, y, encode=lg.encode, decode=lg.decode,
                         num_samples=0)
    with pytest.raises(ValueError, match="prior"):
        losses.cmma_elbo(jax.random.key(0), x, y, encode=lg.encode, decode=lg.decode, prior=None)


@_x64
def test_conditional_elbo_gradients(lg):
    x, y = (a.astype(np.float64) for a in lg.data(3))
    key = jax.random.key(4)

    def elbo_of(scale_w, shift_q, prior_shift):
        encode = lambda x, y: (lg.encode(x, y)[0] + shift_q[None], lg.encode(x, y)[1])
        decode = lambda z, y: (lg.decode(z, y)[0] * scale_w, lg.decode(z, y)[1])
        prior = lambda y: (lg.prior(y)[0] + prior_shift[None], lg.prior(y)[1])
        return losses.cmma_elbo(key, x, y, encode=encode, decode=decode, prior=prior,
                                num_samples=3).elbo

    check_grads(elbo_of, [np.float64(1.1), np.full(3, 0.2), np.full(3, -0.1)], order=1,
                modes=("fwd", "rev"))


def test_conditional_elbo_vmaps_over_keys(lg):
    x, y = lg.data(2)
    keys = jax.random.split(jax.random.key(5), 3)
    f = lambda k: losses.cmma_elbo(k, x, y, encode=lg.encode, decode=lg.decode,
                                   prior=lg.prior).elbo
    out = jax.vmap(f)(keys)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out[1], f(keys[1]), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Importance-weighted bound


def _diagonal_model():
    """A linear-Gaussian model whose true posterior p(z | x, y) is a diagonal Gaussian."""
    lg = LinearGaussian(dim_x=3, dim_z=3, dim_y=2, seed=20)
    lg.W = np.diag([1.5, -0.7, 0.9])
    post_var = 1.0 / (np.exp(-lg.vp) + np.diag(lg.W) ** 2 * np.exp(-lg.vx))

    def posterior(x, y, mean_shift=0.0, log_var_shift=0.0):
        mp = y @ jnp.asarray(lg.P.T, jnp.float32)
        num = (mp * jnp.asarray(np.exp(-lg.vp), jnp.float32)[None]
               + (x - jnp.asarray(lg.c, jnp.float32)[None])
               * jnp.asarray(np.diag(lg.W) * np.exp(-lg.vx), jnp.float32)[None])
        mean = num * jnp.asarray(post_var, jnp.float32)[None]
        mean = mean + jnp.asarray(mean_shift * np.sqrt(post_var), jnp.float32)[None]
        log_var = jnp.asarray(np.log(post_var) + log_var_shift, jnp.float32)
        return mean, jnp.broadcast_to(log_var[None], mean.shape)

    return lg, posterior


def test_iwae_is_exact_with_the_true_posterior():
    # Given the true posterior as q, every importance weight equals p(x | y): exact for any K.
    lg, posterior = _diagonal_model()
    x, y = lg.data(4)
    exact = lg.log_marginal(x, y)
    for k in (1, 7):
        got = losses.iwae_bound(jax.random.key(k), x, y, encode=posterior,
                                decode=lg.decode, prior=lg.prior, num_samples=k)
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-4)


def test_iwae_k1_is_elbo_in_expectation_and_tightens_with_k():
    # q is the true posterior with its mean moved by 0.8 sd and its variance doubled: a
    # reasonable but imperfect encoder, whose ELBO has a closed form through the ELBO identity
    # ELBO = log p(x|y) - KL(q || posterior).
    lg, posterior = _diagonal_model()
    encode = functools.partial(posterior, mean_shift=0.8, log_var_shift=math.log(2.0))
    x, y = lg.data(3)
    exact = lg.log_marginal(x, y)
    mq, vq = (np.asarray(a, np.float64) for a in encode(x, y))
    mt, vt = (np.asarray(a, np.float64) for a in posterior(x, y))
    elbo = exact - 0.5 * np.sum(vt - vq + np.exp(vq - vt) + (mq - mt) ** 2 / np.exp(vt) - 1, 1)
    reps = 2000

    def draws(k, seed):
        keys = jax.random.split(jax.random.key(seed), reps)
        f = lambda key: losses.iwae_bound(key, x, y, encode=encode, decode=lg.decode,
                                          prior=lg.prior, num_samples=k)
        return np.asarray(jax.jit(jax.vmap(f))(keys), np.float64)  # [reps, B]

    means, ses = {}, {}
    for k in (1, 10, 100):
        d = draws(k, seed=k)
        means[k], ses[k] = d.mean(0), d.std(0) / np.sqrt(reps)
    # E[L_1] is the ELBO.
    assert np.all(np.abs(means[1] - elbo) < 5 * ses[1] + 1e-4), (means[1], elbo, ses[1])
    # E[L_K] increases with K and stays below log p(x|y).
    assert np.all(means[10] > means[1] + 3 * np.hypot(ses[10], ses[1]))
    assert np.all(means[100] > means[10] + 3 * np.hypot(ses[100], ses[10]))
    assert np.all(means[100] < exact + 5 * ses[100])
    # For a q close to the posterior the gap falls like Var(w) / (2K) (Domke & Sheldon 2018):
    # L_100's gap is at most a tenth of the ELBO's.
    assert np.all(exact - means[100] < 0.1 * (exact - means[1])), (exact, means)


def test_iwae_with_standard_normal_prior_and_shape_errors(lg):
    x, y = lg.data(2)
    got = losses.iwae_bound(jax.random.key(0), x, y, encode=lg.encode, decode=lg.decode,
                            num_samples=5)
    assert got.shape == (2,) and np.isfinite(got).all()
    with pytest.raises(ValueError, match="num_samples"):
        losses.iwae_bound(jax.random.key(0), x, y, encode=lg.encode, decode=lg.decode,
                          num_samples=0)
    bad_encode = lambda x, y: (lg.encode(x, y)[0], lg.encode(x, y)[1][:, :2])
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        losses.iwae_bound(jax.random.key(0), x, y, encode=bad_encode, decode=lg.decode,
                          num_samples=2)


def test_iwae_on_images_is_finite_where_naive_exp_overflows():
    # log-weights of images are thousands of nats: exp() of them overflows, logsumexp does not.
    rng = _rng(21)
    x = jnp.asarray(rng.uniform(size=IMAGE_SHAPE), jnp.float32)
    y = jnp.zeros((IMAGE_SHAPE[0], 2), jnp.float32)
    encode = lambda x, y: (jnp.zeros((x.shape[0], 4)), jnp.full((x.shape[0], 4), -2.0))

    def decode(z, y):
        m = jnp.broadcast_to(jnp.mean(z, axis=1)[:, None, None, None] * 0.01 + x.mean(),
                             x.shape)
        return m, jnp.full(x.shape, -6.0)

    got = losses.iwae_bound(jax.random.key(0), x, y, encode=encode, decode=decode, num_samples=8)
    assert got.shape == (2,) and np.isfinite(got).all()
    assert np.all(np.abs(np.asarray(got)) > 1000)


@_x64
def test_iwae_gradients(lg):
    x, y = (a.astype(np.float64) for a in lg.data(2))

    def f(shift):
        encode = lambda x, y: (lg.encode(x, y)[0] + shift[None], lg.encode(x, y)[1])
        return losses.iwae_bound(jax.random.key(6), x, y, encode=encode, decode=lg.decode,
                                 prior=lg.prior, num_samples=4)

    check_grads(f, [np.full(3, 0.1)], order=1, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------------------------
# Kernels and MMD


def _loop_kernel(x, y, fn):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out = np.zeros((len(x), len(y)))
    for i in range(len(x)):
        for j in range(len(y)):
            out[i, j] = fn(np.sum((x[i] - y[j]) ** 2))
    return out


def test_gaussian_kernel_matches_double_loop():
    rng = _rng(30)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    got = losses.gaussian_kernel(x.astype(np.float32), y.astype(np.float32), 1.3)
    want = _loop_kernel(x, y, lambda d2: math.exp(-d2 / (2 * 1.3**2)))
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # Several bandwidths: the kernels are summed.
    got = losses.gaussian_kernel(x.astype(np.float32), y.astype(np.float32), [0.5, 2.0])
    want = _loop_kernel(x, y, lambda d2: math.exp(-d2 / 0.5) + math.exp(-d2 / 8.0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_imq_kernel_matches_double_loop():
    rng = _rng(31)
    x, y = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    got = losses.imq_kernel(x.astype(np.float32), y.astype(np.float32), [1.0, 12.0])
    want = _loop_kernel(x, y, lambda d2: 1.0 / (1.0 + d2) + 12.0 / (12.0 + d2))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kernel_shape_errors():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        losses.gaussian_kernel(jnp.zeros((4, 3)), jnp.zeros((4, 2)), 1.0)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        losses.imq_kernel(jnp.zeros((4,)), jnp.zeros((4, 2)), 1.0)


def _loop_mmd(x, y, k, unbiased):
    """MMD² by explicit double loops, float64."""
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not (unbiased and i == j))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not (unbiased and i == j))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    if unbiased:
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("kernel_name", ["gaussian", "imq"])
def test_mmd_matches_double_loop(unbiased, kernel_name):
    rng = _rng(32)
    x = rng.normal(size=(7, 3))
    y = rng.normal(loc=0.4, size=(6, 3))
    if kernel_name == "gaussian":
        kernel = functools.partial(losses.gaussian_kernel, bandwidth=[0.7, 1.5])
        k = lambda a, b: sum(math.exp(-np.sum((a - b) ** 2) / (2 * s**2)) for s in (0.7, 1.5))
    else:
        kernel = functools.partial(losses.imq_kernel, scale=6.0)
        k = lambda a, b: 6.0 / (6.0 + np.sum((a - b) ** 2))
    got = losses.mmd(x.astype(np.float32), y.astype(np.float32), kernel=kernel, unbiased=unbiased)
    assert got.shape == ()
    np.testing.assert_allclose(got, _loop_mmd(x, y, k, unbiased), rtol=1e-4, atol=1e-6)


def test_mmd_unbiased_keeps_the_cross_diagonal():
    # With N = M the cross term's diagonal k(x_i, y_i) is a genuine pair: it must stay in.
    rng = _rng(33)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2)) + 0.2
    k = lambda a, b: math.exp(-np.sum((a - b) ** 2) / 2)
    got = float(losses.mmd(x.astype(np.float32), y.astype(np.float32), unbiased=True))
    right = _loop_mmd(x, y, k, unbiased=True)
    n = len(x)
    kxy = _loop_kernel(x, y, lambda d2: math.exp(-d2 / 2))
    wrong = (right + 2 * kxy.sum() / n**2 - 2 * (kxy.sum() - np.trace(kxy)) / (n * (n - 1)))
    assert abs(got - right) < 1e-5 and abs(got - wrong) > 1e-3


def test_mmd_default_kernel_is_unit_bandwidth_gaussian():
    rng = _rng(34)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    explicit = losses.mmd(x, y, kernel=functools.partial(losses.gaussian_kernel, bandwidth=1.0))
    np.testing.assert_allclose(losses.mmd(x, y), explicit, rtol=1e-6)


def test_mmd_unbiased_is_zero_in_expectation_for_equal_distributions():
    # Same distribution: E[unbiased MMD²] = 0, while the biased estimate is positive.
    reps, n, d = 400, 16, 4
    keys = jax.random.split(jax.random.key(7), reps)

    def one(key):
        kx, ky = jax.random.split(key)
        x, y = jax.random.normal(kx, (n, d)), jax.random.normal(ky, (n, d))
        return losses.mmd(x, y, unbiased=True), losses.mmd(x, y, unbiased=False)

    u, b = (np.asarray(a, np.float64) for a in jax.jit(jax.vmap(one))(keys))
    assert abs(u.mean()) < 4 * u.std() / np.sqrt(reps)
    assert b.mean() > 10 * b.std() / np.sqrt(reps)
    assert np.all(b >= 0)


def test_mmd_shape_errors_and_small_samples():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\)"):
        losses.mmd(jnp.zeros((4, 3)), jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        losses.mmd(jnp.zeros((1, 3)), jnp.zeros((5, 3)), unbiased=True)


@_x64
def test_mmd_gradients():
    rng = _rng(35)
    y = rng.normal(size=(5, 2))
    for unbiased in (False, True):
        check_grads(lambda x: losses.mmd(x, y, unbiased=unbiased), [rng.normal(size=(4, 2))],
                    order=1, modes=("fwd", "rev"))
    check_grads(lambda x: losses.mmd(x, y, kernel=functools.partial(losses.imq_kernel, scale=2.0)),
                [rng.normal(size=(4, 2))], order=1, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------------------------
# GAN losses: hand-worked values


def _softplus(t):
    return math.log1p(math.exp(t))


def test_gan_discriminator_losses_hand_worked():
    r = jnp.array([2.0, 0.0, 0.5])
    f = jnp.array([-1.0, 0.0, 0.25])
    ce = [_softplus(-2) + _softplus(-1), 2 * math.log(2), _softplus(-0.5) + _softplus(0.25)]
    for kind in ("minimax", "non_saturating"):
        np.testing.assert_allclose(losses.gan_discriminator_loss(r, f, kind), ce, rtol=1e-6)
    # hinge: max(0, 1 - r) + max(0, 1 + f)
    np.testing.assert_allclose(losses.gan_discriminator_loss(r, f, "hinge"),
                               [0.0 + 0.0, 1.0 + 1.0, 0.5 + 1.25], rtol=1e-6)
    # least squares: ½ (r - 1)² + ½ f²
    np.testing.assert_allclose(losses.gan_discriminator_loss(r, f, "least_squares"),
                               [0.5 + 0.5, 0.5 + 0.0, 0.125 + 0.03125], rtol=1e-6)


def test_gan_generator_losses_hand_worked():
    f = jnp.array([0.0, 2.0, -3.0])
    np.testing.assert_allclose(losses.gan_generator_loss(f, "non_saturating"),
                               [math.log(2), _softplus(-2), _softplus(3)], rtol=1e-6)
    np.testing.assert_allclose(losses.gan_generator_loss(f, "minimax"),
                               [-math.log(2), -_softplus(2), -_softplus(-3)], rtol=1e-6)
    np.testing.assert_allclose(losses.gan_generator_loss(f, "hinge"), [0.0, -2.0, 3.0])
    np.testing.assert_allclose(losses.gan_generator_loss(f, "least_squares"), [0.5, 0.5, 8.0])


def test_gan_losses_are_finite_for_extreme_logits():
    big = jnp.array([1000.0, -1000.0])
    # -log σ(-1000) would be -log(0) = inf in a naive form; softplus gives 1000.
    np.testing.assert_allclose(losses.gan_discriminator_loss(-big, big, "non_saturating"),
                               [2000.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(losses.gan_generator_loss(-big, "non_saturating"), [1000.0, 0.0],
                               rtol=1e-6)


def test_gan_losses_per_example_shapes_and_errors():
    r = jnp.zeros((4, 1))
    assert losses.gan_discriminator_loss(r, r, "hinge").shape == (4,)
    assert losses.gan_generator_loss(r, "hinge").shape == (4,)
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        losses.gan_discriminator_loss(jnp.zeros(4), jnp.zeros(3), "hinge")
    with pytest.raises(ValueError, match="wasserstein"):
        losses.gan_generator_loss(jnp.zeros(4), "wasserstein")


@_x64
@pytest.mark.parametrize("kind", ["minimax", "non_saturating", "hinge", "least_squares"])
def test_gan_loss_gradients(kind):
    rng = _rng(36)
    # Away from the hinge's kinks at ±1.
    r, f = rng.uniform(1.5, 3.0, 4), rng.uniform(-3.0, -1.5, 4)
    check_grads(lambda a, b: losses.gan_discriminator_loss(a, b, kind), [r, f], order=1,
                modes=("fwd", "rev"))
    check_grads(lambda b: losses.gan_generator_loss(b, kind), [f], order=1, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------------------------
# Noise that does not depend on how the batch is split over devices


def test_batch_normal_is_the_same_whatever_the_split():
    key = jax.random.key(8)
    whole = losses.batch_normal(key, (8, 3))
    np.testing.assert_array_equal(whole, jax.random.normal(key, (8, 3)))
    # A mapped axis of 4 "devices" with 2 examples each (vmap supports the same collectives as
    # pmap and shard_map): each gets its own rows of the whole batch's noise.
    split = jax.vmap(lambda _: losses.batch_normal(key, (2, 3), axis_name="d"),
                     axis_name="d")(jnp.arange(4))
    np.testing.assert_array_equal(split.reshape(8, 3), whole)


def test_bounds_split_over_a_mapped_axis_match_the_whole_batch(lg):
    x, y = lg.data(8)
    key = jax.random.key(9)
    kwargs = dict(encode=lg.encode, decode=lg.decode, prior=lg.prior)
    whole = losses.cmma_elbo(key, x, y, num_samples=3, **kwargs)
    split = jax.vmap(lambda xb, yb: losses.cmma_elbo(key, xb, yb, num_samples=3, axis_name="d",
                                                     **kwargs), axis_name="d")(
        x.reshape(4, 2, -1), y.reshape(4, 2, -1))
    np.testing.assert_allclose(split.elbo.reshape(8), whole.elbo, rtol=1e-6)
    whole_iw = losses.iwae_bound(key, x, y, num_samples=5, **kwargs)
    split_iw = jax.vmap(lambda xb, yb: losses.iwae_bound(key, xb, yb, num_samples=5,
                                                         axis_name="d", **kwargs),
                        axis_name="d")(x.reshape(4, 2, -1), y.reshape(4, 2, -1))
    np.testing.assert_allclose(split_iw.reshape(8), whole_iw, rtol=1e-6)
    # Without axis_name, each "device" would reuse the same noise rows: a different result.
    naive = jax.vmap(lambda xb, yb: losses.cmma_elbo(key, xb, yb, num_samples=3, **kwargs))(
        x.reshape(4, 2, -1), y.reshape(4, 2, -1))
    assert not np.allclose(naive.elbo.reshape(8), whole.elbo)
