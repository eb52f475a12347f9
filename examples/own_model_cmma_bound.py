"""Your own networks with the CMMA bound and an MMD penalty on the same z, trained with optax.

    python examples/own_model_cmma_bound.py --steps 200

A small flax prior p(z | y), encoder q(z | x) and Gaussian decoder p(x | z) on random "faces"
(replace them with your data): the loss is -cmma_elbo + λ MMD(z, N(0, I)), the MMD taken on the
posterior samples the bound itself drew (`ElboTerms.z`), so the encoder runs once a step.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cmma_jax import losses


class Prior(nn.Module):  # p(z | y): the CMMA paper's f, small
    latent: int

    @nn.compact
    def __call__(self, y):
        h = nn.softplus(nn.Dense(64)(y))
        return nn.Dense(self.latent)(h), nn.Dense(self.latent)(h)


class Encoder(nn.Module):  # q(z | x): h (the paper's encoder ignores y)
    latent: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(128)(x.reshape(len(x), -1)))
        return nn.Dense(self.latent)(h), nn.Dense(self.latent)(h)


class Decoder(nn.Module):  # p(x | z): g, a Gaussian with a learnt per-pixel log-variance
    shape: tuple

    @nn.compact
    def __call__(self, z):
        size = 1
        for d in self.shape:
            size *= d
        h = nn.relu(nn.Dense(128)(z))
        mean = nn.sigmoid(nn.Dense(size)(h)).reshape(len(z), *self.shape)
        log_var = nn.Dense(size)(h).reshape(len(z), *self.shape)
        return mean, log_var


def main(steps: int = 200, batch: int = 16, image=(16, 16, 3), attributes: int = 8,
         latent: int = 8, mmd_weight: float = 100.0) -> float:
    kx, ky, kp, ke, kd = jax.random.split(jax.random.key(0), 5)
    x = jax.random.uniform(kx, (batch, *image))
    y = jax.random.bernoulli(ky, 0.5, (batch, attributes)).astype(jnp.float32)
    prior, encoder, decoder = Prior(latent), Encoder(latent), Decoder(image)
    params = {"prior": prior.init(kp, y), "encoder": encoder.init(ke, x),
              "decoder": decoder.init(kd, jnp.zeros((batch, latent)))}
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    def loss_fn(params, key):
        terms = losses.cmma_elbo(
            key, x, y,
            encode=lambda x, y: encoder.apply(params["encoder"], x),
            decode=lambda z, y: decoder.apply(params["decoder"], z),
            prior=lambda y: prior.apply(params["prior"], y))
        # The MMD between the posterior samples the bound used and draws of N(0, I).
        k_mmd = jax.random.fold_in(key, 1)
        penalty = losses.mmd(terms.z[0], jax.random.normal(k_mmd, terms.z[0].shape),
                             kernel=lambda a, b: losses.gaussian_kernel(a, b, 1.0))
        return -jnp.mean(terms.elbo) + mmd_weight * penalty, (terms, penalty)

    @jax.jit
    def step(params, opt_state, key):
        (loss, (terms, penalty)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, jnp.mean(terms.elbo), penalty

    for i in range(steps):
        params, opt_state, elbo, penalty = step(params, opt_state, jax.random.key(i))
        if i % max(steps // 5, 1) == 0 or i == steps - 1:
            print(f"step {i}: bound {float(elbo):.1f} nats/image, MMD {float(penalty):.4f}")
    return float(elbo)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    main(parser.parse_args().steps)
