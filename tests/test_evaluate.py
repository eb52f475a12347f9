"""Tests of cmma_jax.evaluate: the estimators over a dataset (chunking, keys, aggregation, units,
the Parzen protocol, attribute fidelity) on a linear-Gaussian model whose log p(x | y) is known in
closed form, and the whole evaluation end to end on tiny trained models.

The objectives themselves (ELBO, IWAE, Parzen) are tested against references in test_losses.py
and test_metrics.py; here the question is whether the evaluation layer uses them right."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cmma_jax import evaluate, losses, metrics
from cmma_jax import workdirs as workdirs_lib
from cmma_jax.data import reading

import eval_helpers

# ---------------------------------------------------------------------------------------------
# A linear-Gaussian conditional model with the model contract:
#   p(z | y) = N(y A, I),  p(x | z) = N(z W + b, s² I),  so  p(x | y) = N(y A W + b, WᵀW + s² I).
# The encoder q(z | x, y) is the exact posterior with its mean shifted and its variance inflated,
# so that the ELBO is strictly below log p(x | y) and the IWAE closes the gap as K grows.

IMAGE = (2, 2, 3)
D = int(np.prod(IMAGE))
J, A = 2, 3
S2 = 0.25
MEAN_SHIFT, LOG_VAR_SHIFT = 0.3, 1.0


def _params():
    rng = np.random.default_rng(0)
    return {"A": jnp.asarray(rng.normal(size=(A, J)), jnp.float32),
            "W": jnp.asarray(rng.normal(size=(J, D)), jnp.float32),
            "b": jnp.asarray(rng.uniform(size=(D,)), jnp.float32)}


def _networks(params):
    w, b = params["W"], params["b"]
    precision = jnp.eye(J) + w @ w.T / S2
    cov = jnp.linalg.inv(precision)

    def prior(y):
        mean = y @ params["A"]
        return mean, jnp.zeros_like(mean)

    def encode(x, y):
        xf = x.reshape(x.shape[0], D)
        mean = (prior(y)[0] + (xf - b[None, :]) @ w.T / S2) @ cov  # cov is symmetric
        log_var = jnp.broadcast_to(jnp.log(jnp.diag(cov))[None, :], mean.shape)
        return mean + MEAN_SHIFT, log_var + LOG_VAR_SHIFT

    def decode(z, y):
        mean = (z @ w + b[None, :]).reshape((z.shape[0],) + IMAGE)
        return mean, jnp.full(mean.shape, math.log(S2), jnp.float32)

    return encode, decode, prior


class LinearGaussian:
    """A model module (bound, iwae, sample) for the evaluation functions."""

    @staticmethod
    def bound(params, batch, key, *, config, num_samples=1):
        encode, decode, prior = _networks(params)
        return losses.conditional_elbo(key, batch["image"], batch["attributes"], encode=encode,
                                       decode=decode, prior=prior, num_samples=num_samples)

    @staticmethod
    def iwae(params, batch, key, *, config, num_samples):
        encode, decode, prior = _networks(params)
        return losses.iwae_bound(key, batch["image"], batch["attributes"], encode=encode,
                                 decode=decode, prior=prior, num_samples=num_samples)

    @staticmethod
    def sample(params, attributes, key, temperature=1.0, *, config):
        _, decode, prior = _networks(params)
        mean, log_var = prior(attributes)
        z = mean + temperature * jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        return decode(z, attributes)[0]


CONFIG = ml_collections.ConfigDict({"data": {"attribute_encoding": "raw"}})

# The references, jitted (op-by-op they would compile every primitive on its own).
_bound = jax.jit(lambda p, x, y, k: LinearGaussian.bound(
    p, {"image": x, "attributes": y}, k, config=CONFIG, num_samples=3))
_log_weight = jax.jit(lambda p, x, y, k: LinearGaussian.iwae(
    p, {"image": x, "attributes": y}, k, config=CONFIG, num_samples=1))
_samples = jax.jit(jax.vmap(lambda p, y, k: LinearGaussian.sample(p, y[None], k, 0.8,
                                                                  config=CONFIG)[0],
                            in_axes=(None, None, 0)))


def exact_log_likelihood(params, x, y):
    """log p(x | y) in float64 numpy, the multivariate normal of the marginal."""
    a, w, b = (np.asarray(params[k], np.float64) for k in ("A", "W", "b"))
    mean = np.asarray(y, np.float64) @ a @ w + b
    cov = w.T @ w + S2 * np.eye(D)
    diff = np.asarray(x, np.float64).reshape(len(x), D) - mean
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (maha + logdet + D * math.log(2 * math.pi))


@pytest.fixture(scope="module")
def data():
    params = _params()
    rng = np.random.default_rng(1)
    n = 24
    y = rng.choice([-1.0, 1.0], size=(n, A)).astype(np.float32)
    z = y @ np.asarray(params["A"]) + rng.normal(size=(n, J))
    x = z @ np.asarray(params["W"]) + np.asarray(params["b"]) + math.sqrt(S2) * rng.normal(
        size=(n, D))
    return params, x.reshape((n,) + IMAGE).astype(np.float32), y


def _chunks(data, batch_size):
    _, x, y = data
    return reading.chunks_from_arrays(x, y, batch_size)


KEY = jax.random.key(7)


# ---------------------------------------------------------------------------------------------
# Bound and IWAE
#
# Each estimator runs once with one set of chunk sizes in a module fixture; the tests compare
# those numbers with references and with runs at other chunk sizes (few compilations: fast).

SIGMAS = [0.05, 0.5, 1.5, 5.0]


@pytest.fixture(scope="module")
def estimates(data):
    params = data[0]
    return {
        "bound": evaluate.conditional_bound(LinearGaussian, params, CONFIG, _chunks(data, 5),
                                            KEY, num_samples=3),
        "iwae": evaluate.importance_weighted_bounds(
            LinearGaussian, params, CONFIG, _chunks(data, 8), KEY,
            num_samples=(1, 4, 10, 100, 1000), sample_chunk=250),
        "parzen": evaluate.parzen_log_likelihoods(
            LinearGaussian, params, CONFIG, _chunks(data, 5), KEY, num_samples=6,
            sigmas=SIGMAS, temperature=0.8, sample_chunk=4),
    }


def test_bound_is_the_model_bound_of_each_face_with_its_own_key(data, estimates):
    params, x, y = data
    got = estimates["bound"]
    assert set(got) == {"elbo", "log_likelihood", "kl"}
    assert got["elbo"].shape == (len(x),)
    for i in (0, 6, 23):  # face i alone, with the key fold_in(key, i)
        want = _bound(params, x[i:i + 1], y[i:i + 1], jax.random.fold_in(KEY, i))
        np.testing.assert_allclose(got["elbo"][i], want.elbo[0], rtol=1e-5)
        np.testing.assert_allclose(got["kl"][i], want.kl[0], rtol=1e-5)
    np.testing.assert_allclose(got["elbo"], got["log_likelihood"] - got["kl"], rtol=1e-5)


def test_iwae_approaches_the_exact_log_likelihood_and_the_elbo_stays_below(data, estimates):
    params, x, y = data
    exact = exact_log_likelihood(params, x, y)
    elbo, iwae = estimates["bound"]["elbo"], estimates["iwae"]
    gap = {k: float(np.mean(exact - v)) for k, v in iwae.items()}
    elbo_gap = float(np.mean(exact - elbo))
    assert elbo_gap > 1.0  # the shifted encoder makes the bound loose, below log p(x | y)
    assert gap[1] > gap[10] > gap[100] > gap[1000] > -0.05  # tighter with K, never above
    assert gap[1000] < 0.05 * elbo_gap
    np.testing.assert_allclose(iwae[1000], exact, atol=0.2)


def test_iwae_with_k_uses_the_first_k_weights(data, estimates):
    params, x, y = data
    i = 9
    face_key = jax.random.fold_in(KEY, i)
    log_w = [float(_log_weight(params, x[i:i + 1], y[i:i + 1],
                               jax.random.fold_in(face_key, s))[0]) for s in range(4)]
    np.testing.assert_allclose(estimates["iwae"][1][i], log_w[0], rtol=1e-5)
    np.testing.assert_allclose(estimates["iwae"][4][i],
                               np.logaddexp.reduce(log_w) - math.log(4), rtol=1e-5)


def test_results_do_not_depend_on_batch_or_chunk_sizes(data, estimates):
    params = data[0]
    bound = evaluate.conditional_bound(LinearGaussian, params, CONFIG, _chunks(data, 7), KEY,
                                       num_samples=3)
    np.testing.assert_allclose(bound["elbo"], estimates["bound"]["elbo"], rtol=1e-6)
    # Other face and sample chunks, and a smaller K_max: the first K weights are the same.
    iwae = evaluate.importance_weighted_bounds(LinearGaussian, params, CONFIG, _chunks(data, 3),
                                               KEY, num_samples=(10, 4), sample_chunk=4)
    for k in (4, 10):
        np.testing.assert_allclose(iwae[k], estimates["iwae"][k], rtol=1e-6)
    parzen = evaluate.parzen_log_likelihoods(LinearGaussian, params, CONFIG, _chunks(data, 7),
                                             KEY, num_samples=6, sigmas=SIGMAS, temperature=0.8,
                                             sample_chunk=6)
    np.testing.assert_allclose(parzen, estimates["parzen"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Units and aggregation


def test_bits_per_dim_sign_and_scale():
    dim = 64 * 64 * 3
    # A log-density of -D ln 2 nats is one bit per value; a positive one is a negative code length.
    assert evaluate.bits_per_dim(-dim * math.log(2), dim) == pytest.approx(1.0)
    assert evaluate.bits_per_dim(17_973.0, dim) == pytest.approx(-17_973 / (dim * math.log(2)))
    assert evaluate.bits_per_dim(17_973.0, dim) < 0


def test_summarize_mean_stderr_and_bits():
    values = np.array([1.0, 2.0, 4.0, 9.0])
    s = evaluate.summarize(values, dim=12)
    assert s["nats"] == pytest.approx(4.0)
    assert s["stderr"] == pytest.approx(np.std(values, ddof=1) / 2.0)
    assert s["num_images"] == 4
    assert s["bits_per_dim"] == pytest.approx(-4.0 / (12 * math.log(2)))
    assert s["bits_per_dim_stderr"] == pytest.approx(s["stderr"] / (12 * math.log(2)))


def test_paired_differences_use_the_per_face_differences():
    a = {"bound": np.array([10.0, 20.0, 30.0, 40.0]), "parzen": np.array([1.0, 2.0])}
    b = {"bound": np.array([9.0, 19.5, 29.0, 41.0])}  # no Parzen: not compared
    (c,) = evaluate.paired_differences([a, b], ["cmma", "cvae"])
    d = a["bound"] - b["bound"]
    assert (c["estimator"], c["a"], c["b"], c["num_images"]) == ("bound", "cmma", "cvae", 4)
    assert c["difference"] == pytest.approx(d.mean())
    assert c["stderr"] == pytest.approx(np.std(d, ddof=1) / 2.0)
    assert c["a_better_fraction"] == 0.75


def test_parzen_uses_each_faces_own_samples_with_keys_from_indices(data, estimates):
    params, x, y = data
    got = estimates["parzen"]
    assert got.shape == (len(SIGMAS), len(x))
    # The same samples made explicitly: sample s of face i from fold_in(fold_in(key, i), s).
    samples = np.stack([np.asarray(_samples(params, y[i], jax.vmap(
        lambda s, i=i: jax.random.fold_in(jax.random.fold_in(KEY, i), s))(np.arange(6))))
        for i in range(len(x))])
    for k, sigma in enumerate(SIGMAS):
        want = metrics.parzen_log_likelihood(x, samples, sigma)
        np.testing.assert_allclose(got[k], want, rtol=1e-5)


def test_sigma_is_chosen_by_the_mean_on_validation_faces(data, estimates):
    params = data[0]
    best, means = evaluate.select_parzen_sigma(LinearGaussian, params, CONFIG, _chunks(data, 5),
                                               KEY, num_samples=6, sigmas=SIGMAS,
                                               temperature=0.8, sample_chunk=4)
    np.testing.assert_allclose(means, estimates["parzen"].mean(axis=1), rtol=1e-6)
    assert best == SIGMAS[int(np.argmax(means))]
    assert best not in (SIGMAS[0], SIGMAS[-1])  # too narrow and too wide both lose


# ---------------------------------------------------------------------------------------------
# Attribute fidelity


def test_attribute_fidelity_scores_against_the_conditioning_attributes():
    n = 10
    raw = np.where(np.random.default_rng(0).uniform(size=(n, 3)) > 0.5, 1.0, -1.0)
    raw[:, 2] = 1.0  # constant: no AUC
    labels = (raw > 0).astype(np.float32)
    images = (np.arange(n, dtype=np.float32)[:, None, None, None] / n) * np.ones((n, 2, 2, 3))

    def perfect(faces):  # reads the face's index from its pixels and answers its labels
        return labels[np.rint(np.asarray(faces)[:, 0, 0, 0] * n).astype(int)]

    chunks = reading.chunks_from_arrays(images, raw, 4)
    got = evaluate.attribute_fidelity(perfect, chunks, attribute_names=["a", "b", "c"])
    assert got["num_images"] == n
    assert got["mean_accuracy"] == 1.0 and got["mean_auc"] == 1.0
    assert got["undefined_auc"] == ["c"] and got["per_attribute"]["c"]["auc"] is None
    # Generated faces: here each face is replaced by the face of the next index, so the
    # classifier answers the wrong face's labels.
    shifted = evaluate.attribute_fidelity(
        perfect, chunks, generate_fn=lambda c: np.roll(c.images, -1, axis=0),
        attribute_names=["a", "b", "c"])
    assert shifted["mean_accuracy"] < 1.0
    flat = evaluate.attribute_fidelity(lambda f: np.full((len(f), 3), 0.7), chunks)
    assert flat["per_attribute"]["0"]["auc"] == 0.5  # ties count as halves


class _HalfContrast:
    """A model library whose reconstruction halves the contrast around 0.5 and whose face from
    attributes y is a fixed pattern scaled by y[0]: its sharpness is known in closed form."""

    PATTERN = np.random.default_rng(3).uniform(size=(8, 8, 3)).astype(np.float32)

    @staticmethod
    def reconstruct(params, image, attributes, *, config):
        return 0.5 * image + 0.25

    @staticmethod
    def sample(params, attributes, key, temperature=1.0, *, config):
        return attributes[:, :1, None, None] * jnp.asarray(_HalfContrast.PATTERN)[None]


def _laplacian_energy_scipy(image):
    """The mean squared Laplacian of the interior pixels, each channel through scipy."""
    from scipy import ndimage
    lap = np.stack([ndimage.laplace(image[..., c].astype(np.float64)) for c in range(3)], -1)
    return np.mean(np.square(lap[1:-1, 1:-1]))


def test_sharpness_reconstruction_error_and_detail_in_closed_form():
    rng = np.random.default_rng(0)
    n = 11
    images = rng.uniform(size=(n, 8, 8, 3)).astype(np.float32)
    raw = rng.normal(size=(n, 2)).astype(np.float32)
    chunks = reading.chunks_from_arrays(images, raw, 4)  # the last chunk is padded
    got = evaluate.sharpness_per_face(_HalfContrast, None, CONFIG, chunks, KEY, encoding="raw")
    x = images.astype(np.float64)
    real = np.array([_laplacian_energy_scipy(im) for im in x])
    np.testing.assert_allclose(got["reconstruction_mse"],
                               np.mean(np.square(0.25 - 0.5 * x), axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(got["reconstruction_detail"], 0.25, rtol=1e-5)  # (1/2)^2
    pattern = _laplacian_energy_scipy(_HalfContrast.PATTERN)
    np.testing.assert_allclose(got["sample_detail"], raw[:, 0].astype(np.float64) ** 2
                               * pattern / real, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Reading a split, and the whole evaluation on tiny trained models


@pytest.fixture(scope="module")
def workdirs(tiny_data_dir, tmp_path_factory):
    return eval_helpers.trained_workdirs(tiny_data_dir, tmp_path_factory)


def test_evaluate_workdirs_end_to_end(workdirs, tmp_path_factory, tmp_path, capsys):
    classifier_workdir, _, _ = eval_helpers.trained_classifier(tmp_path_factory)
    settings = evaluate.EvalSettings(
        num_test=12, batch_size=8, iwae_samples=(1, 4), iwae_sample_chunk=4,
        parzen_num_test=6, parzen_num_validation=6, parzen_samples=8, parzen_batch=3,
        parzen_sample_chunk=4, parzen_sigmas=(0.05, 0.2, 0.8),
        classifier_workdir=classifier_workdir)
    # The CVAE goes through the same code as the CMMA (a model with a bound); the CGAN has none.
    names = ("cmma", "cgan")
    results = evaluate.evaluate_workdirs([workdirs[n] for n in names], settings, str(tmp_path))
    assert [m["model"] for m in results["models"]] == list(names)
    cmma, cgan = results["models"]
    for m in (cmma,):
        assert m["bound"]["num_images"] == 12
        assert m["bound"]["bits_per_dim"] == pytest.approx(
            -m["bound"]["nats"] / (12288 * math.log(2)))
        assert m["bound"]["nats"] == pytest.approx(m["bound"]["log_likelihood"] - m["bound"]["kl"],
                                                   rel=1e-4)
        assert set(m["iwae"]) == {"1", "4"}
    assert "bound" not in cgan and "iwae" not in cgan  # no bound for a GAN
    for m in results["models"]:
        assert m["parzen"]["sigma"] in (0.05, 0.2, 0.8)
        assert m["parzen"]["num_images"] == 6 and m["parzen"]["num_validation"] == 6
        assert len(m["fidelity"]["per_attribute"]) == 20
        assert 0.0 <= m["fidelity"]["mean_accuracy"] <= 1.0
    assert results["real"]["fidelity"]["num_images"] == 12
    assert {(c["estimator"], c["b"]) for c in results["comparisons"]} == {("parzen", "cgan")}
    per_face = np.load(tmp_path / "per_face.npz")
    assert per_face["0_cmma/bound"].shape == (12,) and per_face["1_cgan/parzen"].shape == (6,)
    assert per_face["0_cmma/bound"].mean() == pytest.approx(cmma["bound"]["nats"])
    assert results["machine"]["cpu_count"] >= 1
    saved = json.load(open(tmp_path / "results.json"))
    assert saved["settings"]["parzen_samples"] == 8
    table = open(tmp_path / "results.md").read()
    for n in names:
        assert f"| {n} (`{workdirs[n]}`)" in table
    assert "real test faces (classifier ceiling)" in table and "### Settings" in table
    err = capsys.readouterr().err
    assert "[cmma] Parzen test: 6/6 (100%)" in err and "[cgan] fidelity" in err


def test_models_of_different_datasets_are_refused():
    class Fake:
        def __init__(self, workdir, name, names, **options):
            self.workdir = workdir
            self.config = ml_collections.ConfigDict({"data": {"name": name, "options": {
                "num_train": None, "num_validation": None, "num_workers": None, **options}}})
            self.attribute_names = names

    with pytest.raises(ValueError, match="trained on 'lfw'"):
        evaluate.data_config_for([Fake("a", "celeba", ("x",)), Fake("b", "lfw", ("x",))])
    with pytest.raises(ValueError, match="different attributes"):
        evaluate.data_config_for([Fake("a", "celeba", ("x",)), Fake("b", "celeba", ("y",))])
    # The same folder split otherwise: B's test rows would include A's training faces.
    with pytest.raises(ValueError, match=r"different splits of 'lfw' \(num_train: 9000 != None; "
                                         r"num_validation: None != 500\)"):
        evaluate.data_config_for([Fake("a", "lfw", ("x",), num_train=9000),
                                  Fake("b", "lfw", ("x",), num_validation=500)])
    # How the data is read (worker processes) does not matter.
    evaluate.data_config_for([Fake("a", "lfw", ("x",), num_workers=4), Fake("b", "lfw", ("x",))])
    with pytest.raises(ValueError, match="Unknown estimator"):
        evaluate.EvalSettings(estimators=("bound", "fid"))


def test_a_registered_toy_estimator_runs_through_the_evaluation_and_its_report(
        workdirs, tmp_path, monkeypatch):
    """A new estimator is one module and one registry entry: registered here (the registry is
    patched, so the suite's other tests see the built-in four), it is validated by the settings,
    run on the models with its capability, skipped on the others, and shown in results.json,
    per_face.npz, the paired differences and the report's table and settings."""
    from cmma_jax.evaluate import estimator as estimator_lib
    from cmma_jax.evaluate import registry

    monkeypatch.setattr(registry, "ESTIMATORS", dict(registry.ESTIMATORS))
    with pytest.raises(ValueError, match="Unknown estimator"):
        evaluate.EvalSettings(estimators=("pixel_mean",))

    def pixel_mean(ctx):
        # The mean pixel of each test face: a statistic with a closed form to check against.
        values = np.concatenate([c.images[: c.num_valid].mean(axis=(1, 2, 3))
                                 for c in ctx.reader(ctx.settings.split, 5, 2)])
        return estimator_lib.Estimate({"mean": float(values.mean()), "faces": len(values)},
                                      per_face={"pixel_mean": values},
                                      notes=[f"{ctx.model.name}: toy estimator ran"])

    registry.register(estimator_lib.Estimator(
        name="pixel_mean", requires="bound", estimate=pixel_mean,
        columns=lambda models: [("mean pixel", lambda m: estimator_lib.fmt(
            m.get("pixel_mean"), "mean", "none", 4))],
        numbers=lambda s: {"pixel_mean": (s["mean"], None)},
        describe=lambda s: "mean pixel: the first 5 faces"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("pixel_mean"))
    settings = evaluate.EvalSettings(estimators=("pixel_mean",), show_progress=False)
    results = evaluate.evaluate_workdirs([workdirs["cmma"], workdirs["cvae"], workdirs["cgan"]],
                                         settings, str(tmp_path))
    cmma, cvae, cgan = results["models"]
    faces = reading.SplitReader(evaluate.data_config_for(
        [workdirs_lib.load_model(workdirs["cmma"])]), "test", batch_size=5, limit=5)
    expected = np.concatenate([c.images[: c.num_valid] for c in faces]).mean(axis=(1, 2, 3))
    assert cmma["pixel_mean"] == {"mean": pytest.approx(float(expected.mean())), "faces": 5}
    assert cvae["pixel_mean"]["mean"] == pytest.approx(float(expected.mean()))
    assert "pixel_mean" not in cgan  # no "bound" capability
    assert set(cmma["seconds"]) == {"pixel_mean"}
    assert results["notes"] == ["cmma: toy estimator ran", "cvae: toy estimator ran"]
    np.testing.assert_allclose(np.load(tmp_path / "per_face.npz")["0_cmma/pixel_mean"], expected,
                               rtol=1e-6)
    assert [(c["estimator"], c["b"], c["difference"]) for c in results["comparisons"]] == [
        ("pixel_mean", "cvae", 0.0)]
    table = open(tmp_path / "results.md").read()
    assert "| model | step | mean pixel |" in table
    assert f"{expected.mean():,.4f}" in table and "- mean pixel: the first 5 faces" in table
