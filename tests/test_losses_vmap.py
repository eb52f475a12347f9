"""The per-example contract of every objective (cmma_jax.losses' module docstring), under
`jax.vmap` per example, per batch and nested, against the unbatched result; and a single example
without `event_ndims` refused, not read as a batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmma_jax import losses

RNG = np.random.default_rng(0)
B, J, A = 6, 4, 5
IMAGE = (8, 8, 3)  # small images: the contract does not depend on the size


def _normal(*shape):
    return jnp.asarray(RNG.standard_normal(shape), jnp.float32)


# (name, function, arguments of a batch, event_ndims of one example)
POINTWISE = [
    ("gaussian_log_likelihood/images", losses.gaussian_log_likelihood,
     (_normal(B, *IMAGE), _normal(B, *IMAGE), _normal(B, *IMAGE)), 3),
    ("gaussian_log_likelihood/latents", losses.gaussian_log_likelihood,
     (_normal(B, J), _normal(B, J), _normal(B, J)), 1),
    ("bernoulli_log_likelihood", losses.bernoulli_log_likelihood,
     (jnp.asarray(RNG.uniform(size=(B, *IMAGE)), jnp.float32), _normal(B, *IMAGE)), 3),
    ("gaussian_kl", losses.gaussian_kl, tuple(_normal(B, J) for _ in range(4)), 1),
    ("standard_normal_kl", losses.standard_normal_kl, (_normal(B, J), _normal(B, J)), 1),
]
IDS = [p[0] for p in POINTWISE]


@pytest.mark.parametrize("name,fn,args,k", POINTWISE, ids=IDS)
def test_pointwise_objectives_per_example_per_batch_and_nested(name, fn, args, k):
    batch = fn(*args)  # the default contract: axis 0 is the batch
    assert batch.shape == (B,)
    one = functools.partial(fn, event_ndims=k)
    # One example at a time, unbatched: a scalar, the batch's row.
    for i in range(B):
        single = one(*(a[i] for a in args))
        assert single.shape == ()
        np.testing.assert_allclose(single, batch[i], rtol=1e-6)
    # vmap per example (each call sees one example) and the same call with a batch axis.
    np.testing.assert_allclose(jax.vmap(one)(*args), batch, rtol=1e-6)
    np.testing.assert_allclose(one(*args), batch, rtol=1e-6)
    # Nested: a [2, 3] batch, by nested vmaps and by event_ndims over two batch axes.
    grid = [a.reshape(2, 3, *a.shape[1:]) for a in args]
    np.testing.assert_allclose(jax.vmap(jax.vmap(one))(*grid), batch.reshape(2, 3), rtol=1e-6)
    np.testing.assert_allclose(one(*grid), batch.reshape(2, 3), rtol=1e-6)
    # Under jit too.
    np.testing.assert_allclose(jax.jit(jax.vmap(one))(*args), batch, rtol=1e-6)


@pytest.mark.parametrize("name,fn,args,k", POINTWISE, ids=IDS)
def test_one_example_without_event_ndims_is_refused_not_read_as_a_batch(name, fn, args, k):
    if k == 3:
        pytest.skip("an image [H, W, C] has a leading axis that reads as a batch: only "
                    "event_ndims can tell them apart (the documented contract)")
    with pytest.raises(ValueError, match=r"without event_ndims the first axis is the batch.*"
                                         r"pass event_ndims"):
        fn(*(a[0] for a in args))
    with pytest.raises(ValueError, match="event_ndims must be an integer from 0 to"):
        fn(*args, event_ndims=3)


def test_the_issue_examples():
    np.testing.assert_allclose(losses.standard_normal_kl(jnp.ones(4), jnp.zeros(4),
                                                         event_ndims=1), 2.0)
    mean, log_var = _normal(16, 4), _normal(16, 4)
    per_example = jax.vmap(functools.partial(losses.standard_normal_kl, event_ndims=1))
    assert per_example(mean, log_var).shape == (16,)
    np.testing.assert_allclose(per_example(mean, log_var),
                               losses.standard_normal_kl(mean, log_var), rtol=1e-6)


def test_bfloat16_inputs_are_computed_and_summed_in_float32():
    x = jnp.asarray(RNG.uniform(size=(2, 64, 64, 3)), jnp.bfloat16)
    mean = jnp.full_like(x, 0.5)
    log_var = jnp.full_like(x, -4.0)
    got = losses.gaussian_log_likelihood(x, mean, log_var)
    assert got.dtype == jnp.float32
    want = losses.gaussian_log_likelihood(*(a.astype(jnp.float32) for a in (x, mean, log_var)))
    # The policy: inputs are taken as they are (bfloat16 values) and everything after is float32,
    # so the result is the float32 computation on those values.
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # In bfloat16 throughout it would be off by ~100 nats here (each term rounded).
    in_bf16 = -0.5 * jnp.sum(jnp.square((x - mean) * jnp.exp(-0.5 * log_var)) + log_var
                             + jnp.bfloat16(np.log(2 * np.pi)), axis=(1, 2, 3))
    assert float(jnp.max(jnp.abs(in_bf16.astype(jnp.float32) - want))) > 10.0
    kl = losses.standard_normal_kl(jnp.ones((2, 8), jnp.bfloat16), jnp.zeros((2, 8), jnp.bfloat16))
    assert kl.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# The bounds: linear networks, the README's kind


W = {"enc": 0.05 * _normal(int(np.prod(IMAGE)), 2 * J), "prior": 0.2 * _normal(A, 2 * J),
     "dec": 0.05 * _normal(J + A, 2 * int(np.prod(IMAGE)))}


def _encode(x, y):
    return tuple(jnp.split(x.reshape(len(x), -1) @ W["enc"], 2, axis=-1))


def _prior(y):
    return tuple(jnp.split(y @ W["prior"], 2, axis=-1))


def _decode(z, y):
    mean, log_var = jnp.split(jnp.concatenate([z, y], -1) @ W["dec"], 2, axis=-1)
    return (jax.nn.sigmoid(mean).reshape(len(z), *IMAGE),
            (log_var - 3.0).reshape(len(z), *IMAGE))


BOUNDS = [
    ("cmma_elbo", lambda key, x, y, **kw: losses.cmma_elbo(
        key, x, y, encode=_encode, decode=_decode, prior=_prior, num_samples=2, **kw).elbo),
    ("cvae_elbo", lambda key, x, y, **kw: losses.cvae_elbo(
        key, x, y, encode=_encode, decode=_decode, num_samples=2, **kw).kl),
    ("conditional_elbo", lambda key, x, y, **kw: losses.conditional_elbo(
        key, x, y, encode=_encode, decode=_decode, prior=_prior, **kw).log_likelihood),
    ("iwae_bound", lambda key, x, y, **kw: losses.iwae_bound(
        key, x, y, encode=_encode, decode=_decode, prior=_prior, num_samples=np.int64(3), **kw)),
]


@pytest.mark.parametrize("name,fn", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_bounds_per_example_under_vmap_match_the_unbatched_call(name, fn):
    x = jnp.asarray(RNG.uniform(size=(B, *IMAGE)), jnp.float32)
    y = jnp.asarray(RNG.uniform(size=(B, A)) > 0.5, jnp.float32)
    keys = jax.random.split(jax.random.key(7), B)
    # The reference: each example alone, as a batch of one, with its own key.
    want = jnp.stack([fn(keys[i], x[i:i + 1], y[i:i + 1])[0] for i in range(B)])
    per_example = jax.vmap(functools.partial(fn, event_ndims=3))(keys, x, y)
    assert per_example.shape == (B,)
    np.testing.assert_allclose(per_example, want, rtol=1e-5)
    # One example, unbatched: a scalar.
    single = fn(keys[0], x[0], y[0], event_ndims=3)
    assert single.shape == ()
    np.testing.assert_allclose(single, want[0], rtol=1e-5)
    # Nested vmaps over a [2, 3] batch.
    nested = jax.vmap(jax.vmap(functools.partial(fn, event_ndims=3)))(
        keys.reshape(2, 3), x.reshape(2, 3, *IMAGE), y.reshape(2, 3, A))
    np.testing.assert_allclose(nested, want.reshape(2, 3), rtol=1e-5)


def test_a_vmapped_bound_without_event_ndims_says_what_to_pass():
    x = jnp.zeros((B, *IMAGE))
    y = jnp.zeros((B, A))
    with pytest.raises(ValueError, match=r"x's batch shape is \(8,\).*pass event_ndims=<x's axes "
                                         r"per example>"):
        jax.vmap(lambda x, y: losses.cvae_elbo(jax.random.key(0), x, y, encode=_encode,
                                               decode=_decode).elbo)(x, y)


def test_num_samples_takes_any_integer_but_not_a_traced_one():
    x = jnp.zeros((2, *IMAGE))
    y = jnp.zeros((2, A))
    for k in (2, np.int64(2), jnp.int32(2)):
        assert losses.iwae_bound(jax.random.key(0), x, y, encode=_encode, decode=_decode,
                                 num_samples=k).shape == (2,)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            losses.iwae_bound(jax.random.key(0), x, y, encode=_encode, decode=_decode,
                              num_samples=bad)


def test_elbo_terms_give_the_samples_the_distributions_and_the_networks_extras():
    x = jnp.asarray(RNG.uniform(size=(B, *IMAGE)), jnp.float32)
    y = jnp.asarray(RNG.uniform(size=(B, A)) > 0.5, jnp.float32)

    def encode_with_aux(x, y):
        mean, log_var = _encode(x, y)
        return mean, log_var, {"norm": jnp.linalg.norm(mean)}

    def decode_with_aux(z, y):
        mean, log_var = _decode(z, y)
        return mean, log_var, {"mean_pixel": jnp.mean(mean)}

    terms = losses.cmma_elbo(jax.random.key(2), x, y, encode=encode_with_aux,
                             decode=decode_with_aux, prior=_prior, num_samples=3)
    assert terms.z.shape == (3, B, J)
    np.testing.assert_allclose(terms.posterior[0], _encode(x, y)[0], rtol=1e-6)
    np.testing.assert_allclose(terms.prior[1], _prior(y)[1], rtol=1e-6)
    # The likelihood is the mean over the returned samples, recomputed here from them.
    recomputed = jnp.mean(jnp.stack([losses.gaussian_log_likelihood(x, *_decode(z, y))
                                     for z in terms.z]), axis=0)
    np.testing.assert_allclose(terms.log_likelihood, recomputed, rtol=1e-5)
    # The extras come back: encode's once, decode's per sample.
    np.testing.assert_allclose(terms.aux["encode"]["norm"], jnp.linalg.norm(_encode(x, y)[0]),
                               rtol=1e-6)
    assert terms.aux["decode"]["mean_pixel"].shape == (3,)
    # An MMD penalty on the same z, with no second encoder call.
    penalty = losses.mmd(terms.z[0], jax.random.normal(jax.random.key(5), (B, J)))
    assert penalty.shape == () and bool(jnp.isfinite(penalty))
    # N(0, I) as the CVAE's prior, and no aux from networks that return pairs.
    cvae = losses.cvae_elbo(jax.random.key(2), x, y, encode=_encode, decode=_decode)
    assert cvae.aux is None and float(jnp.max(jnp.abs(cvae.prior[0]))) == 0.0
    with pytest.raises(ValueError, match=r"encode must return \(mean, log_var\) or \(mean, "
                                         r"log_var, aux\)"):
        losses.cvae_elbo(jax.random.key(2), x, y, encode=lambda x, y: _encode(x, y)[0],
                         decode=_decode)


@pytest.mark.parametrize("kind", losses.GAN_LOSS_KINDS)
def test_gan_losses_per_example_under_vmap(kind):
    real, fake = _normal(B), _normal(B)
    batch_d = losses.gan_discriminator_loss(real, fake, kind)
    batch_g = losses.gan_generator_loss(fake, kind)
    assert batch_d.shape == batch_g.shape == (B,)
    np.testing.assert_allclose(
        jax.vmap(lambda r, f: losses.gan_discriminator_loss(r, f, kind, event_ndims=0))(
            real, fake), batch_d, rtol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(lambda f: losses.gan_generator_loss(f, kind, event_ndims=0))(fake), batch_g,
        rtol=1e-6)
    with pytest.raises(ValueError, match="expected at least 1 dimension"):
        losses.gan_generator_loss(fake[0], kind)  # one logit without event_ndims
    # [B, 1] logits (a discriminator's last layer) give the same [B].
    np.testing.assert_allclose(losses.gan_generator_loss(fake[:, None], kind), batch_g,
                               rtol=1e-6)
