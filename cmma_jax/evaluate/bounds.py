"""The conditional variational bound (the CMMA paper's Table 2) and the importance-weighted bound,
face by face."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cmma_jax.data.reading import Chunk
from cmma_jax.evaluate.common import (Array, ProgressFn, call_progress, compiled, single_face,
                                      summarize)
from cmma_jax.evaluate.estimator import DIM, Context, Estimate, Estimator, fmt


def conditional_bound(model_lib, params, config, chunks: Iterable[Chunk], key: Array, *,
                      num_samples: int = 1, progress: ProgressFn | None = None,
                      total: int | None = None) -> dict[str, np.ndarray]:
    """The conditional variational bound of each face, `model_lib.bound`, one face at a time.

    Args:
      model_lib: a model library (a module of `cmma_jax.models`) with `bound(params, batch, key, *, config, num_samples)` returning
        `losses.ElboTerms` of `[B]` (cmma, cvae).
      params, config: the trained model.
      chunks: `Chunk`s of the split (`SplitReader`).
      key: the base key; face i uses `fold_in(key, i)`.
      num_samples: Monte Carlo samples of z per face.
      progress: `progress(done_faces, total_faces)` after each chunk.
      total: the number of faces (for progress only).

    Returns:
      A dict of `[N]` float64 arrays, one value per face in nats: "elbo", "log_likelihood"
      (E_q[log p(x | z, ...)]) and "kl".
    """
    encoding = config.data.attribute_encoding

    def build():
        def one(p, x, y, k):
            terms = model_lib.bound(p, single_face(x, y), k, config=config, num_samples=num_samples)
            return jnp.stack([terms.elbo[0], terms.log_likelihood[0], terms.kl[0]])

        def per_chunk(p, images, attributes, indices, base_key):
            keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(indices)
            return jax.vmap(one, in_axes=(None, 0, 0, 0))(p, images, attributes, keys)

        return jax.jit(per_chunk)

    per_chunk = compiled("bound", model_lib, config, (int(num_samples),), build)

    rows, done = [], 0
    for chunk in chunks:
        out = per_chunk(params, chunk.images, chunk.attributes(encoding), chunk.indices, key)
        rows.append(np.asarray(out, np.float64)[: chunk.num_valid])
        done += chunk.num_valid
        call_progress(progress, done, total or done)
    values = np.concatenate(rows)
    return {"elbo": values[:, 0], "log_likelihood": values[:, 1], "kl": values[:, 2]}


# ---------------------------------------------------------------------------------------------
# The importance-weighted bound


def importance_weighted_bounds(model_lib, params, config, chunks: Iterable[Chunk], key: Array, *,
                               num_samples: Sequence[int] = (1, 10, 100), sample_chunk: int = 10,
                               progress: ProgressFn | None = None,
                               total: int | None = None) -> dict[int, np.ndarray]:
    """The importance-weighted bound on log p(x | y) of each face, for several K.

        IWAE_K(x, y) = log (1/K) Σ_{k<K} p(x, z_k | y) / q(z_k | x, y),   z_k ~ q(z | x, y)

    Each log-weight is `model_lib.iwae(..., num_samples=1)` with the key
    `fold_in(fold_in(key, i), k)` for face i and sample k; IWAE_K uses samples 0..K-1, so the
    bounds for all K come from the K_max weights of each face, drawn `sample_chunk` at a time.

    Args:
      model_lib: a model library (a module of `cmma_jax.models`) with `iwae(params, batch, key, *, config, num_samples)` -> `[B]`.
      params, config: the trained model.
      chunks: `Chunk`s of the split.
      key: the base key.
      num_samples: the K's.
      sample_chunk: importance samples per call.
      progress, total: as `conditional_bound`.

    Returns:
      `{K: [N] float64}`, nats per face.
    """
    ks = sorted({int(k) for k in num_samples})
    k_max = ks[-1]
    sample_chunk = max(1, min(int(sample_chunk), k_max))
    encoding = config.data.attribute_encoding

    def build():
        def one(p, x, y, i, s, base_key):
            k = jax.random.fold_in(jax.random.fold_in(base_key, i), s)
            return model_lib.iwae(p, single_face(x, y), k, config=config, num_samples=1)[0]

        over_samples = jax.vmap(one, in_axes=(None, None, None, None, 0, None))
        return jax.jit(jax.vmap(over_samples, in_axes=(None, 0, 0, 0, None, None)))

    log_weights_fn = compiled("iwae", model_lib, config, (), build)

    out = {k: [] for k in ks}
    done = 0
    for chunk in chunks:
        attributes = chunk.attributes(encoding)
        log_w = np.empty((chunk.size, k_max), np.float64)
        for s0 in range(0, k_max, sample_chunk):
            sample_ids = np.arange(s0, s0 + sample_chunk, dtype=np.int32)
            w = log_weights_fn(params, chunk.images, attributes, chunk.indices, sample_ids, key)
            stop = min(s0 + sample_chunk, k_max)
            log_w[:, s0:stop] = np.asarray(w, np.float64)[:, : stop - s0]
            call_progress(progress, done + chunk.num_valid * stop / k_max, total or done + chunk.size)
        log_w = log_w[: chunk.num_valid]
        for k in ks:
            # log-mean-exp with the largest weight factored out: the weights span hundreds of nats.
            top = np.max(log_w[:, :k], axis=1, keepdims=True)
            lme = top[:, 0] + np.log(np.mean(np.exp(log_w[:, :k] - top), axis=1))
            out[k].append(lme)
        done += chunk.num_valid
    return {k: np.concatenate(v) for k, v in out.items()}


# The registry's entries (cmma_jax.evaluate.registry)


def _bound_estimate(ctx: Context) -> Estimate:
    s, m = ctx.settings, ctx.model
    chunks = ctx.reader(s.split, s.num_test, s.batch_size)
    terms = conditional_bound(m.model_lib, m.params, m.config, chunks, ctx.key,
                              num_samples=s.bound_samples,
                              progress=ctx.progress("bound", chunks.num_examples),
                              total=chunks.num_examples)
    return Estimate({**summarize(terms["elbo"], DIM),
                     "log_likelihood": float(np.mean(terms["log_likelihood"])),
                     "kl": float(np.mean(terms["kl"])), "num_samples": s.bound_samples},
                    per_face={"bound": terms["elbo"]})


BOUND = Estimator(
    name="bound", requires="bound", estimate=_bound_estimate,
    columns=lambda _: [("bound (nats)", lambda m: fmt(m.get("bound"))),
                       ("bound (bits/dim)", lambda m: fmt(m.get("bound"), "bits_per_dim",
                                                          "bits_per_dim_stderr", 4))],
    numbers=lambda b: {"bound": (b.get("nats"), b.get("stderr")),
                       "bound_bits_per_dim": (b.get("bits_per_dim"),
                                              b.get("bits_per_dim_stderr"))},
    label={"bound": ("bound (nats)", 0), "bound_bits_per_dim": ("bound (bits/dim)", 4)}.get,
    describe=lambda s: (f"bound and IWAE: {s['num_test'] or 'all'} faces, {s['bound_samples']} "
                        f"sample(s) of z for the bound"))


def _iwae_estimate(ctx: Context) -> Estimate:
    s, m = ctx.settings, ctx.model
    chunks = ctx.reader(s.split, s.num_test, s.batch_size)
    iwae = importance_weighted_bounds(
        m.model_lib, m.params, m.config, chunks, ctx.key, num_samples=s.iwae_samples,
        sample_chunk=s.iwae_sample_chunk,
        progress=ctx.progress(f"IWAE K<={max(s.iwae_samples)}", chunks.num_examples),
        total=chunks.num_examples)
    return Estimate({str(k): summarize(v, DIM) for k, v in iwae.items()},
                    per_face={f"iwae_{k}": v for k, v in iwae.items()})


def _iwae_columns(models: Sequence[Mapping]) -> list:
    ks = sorted({int(k) for m in models for k in (m.get("iwae") or {})})
    return [(f"IWAE K={k} (nats)", lambda m, k=k: fmt((m.get("iwae") or {}).get(str(k))))
            for k in ks]


IWAE = Estimator(
    name="iwae", requires="iwae", estimate=_iwae_estimate, columns=_iwae_columns,
    numbers=lambda r: {f"iwae_{int(k)}": (v.get("nats"), v.get("stderr"))
                       for k, v in sorted(r.items(), key=lambda kv: int(kv[0]))},
    label=lambda n: (f"IWAE K={n[5:]} (nats)", 0) if n.startswith("iwae_") else None,
    describe=lambda s: (f"IWAE: K = {', '.join(map(str, s['iwae_samples']))} (nested: K uses "
                        "the first K samples)"))
