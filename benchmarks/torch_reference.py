"""The CMMA train step in PyTorch (eager and `torch.compile`), side by side with the JAX step.

The same network as `cmma_jax.models.cmma` with `cmma_jax.nets` (section 4.1 of the CMMA paper,
the decoder as built in `nets.ImageDecoder`), the same objective and optimizer, float32:

  f (prior):   Linear(A, 800) -> softplus -> Linear(800, J) mean, Linear(800, J) log-variance
  h (encoder): conv5 3->c1 (64->60), maxpool 2 (30), ReLU; conv5 c1->c2 (26), maxpool (13), ReLU;
               conv4 c2->c3 (10), ReLU; flatten (H, W, C order, as JAX) -> two Linear(.., J)
  g (decoder): Linear(J, 100 c3) -> [10, 10, c3]; full conv4 c3->c2 (pad 3: 13), ReLU; nearest
               upsample 2x (26); full conv5 c2->c1 (pad 4: 30), ReLU; upsample (60); the two
               parallel full conv5 heads c1->3 (pad 4: 64) run as one conv c1->6 (as JAX does);
               mean = sigmoid, log-variance = soft_clip(., -10, 4) (the config's default); with
               the preset's fixed decoder variance (`small`: σ = 0.05, `presets.resolve_likelihood`)
               one head c1->3 (the mean) and the log-variance log σ² at every pixel
  loss = mean_b[ -(log N(x; g_mu, exp g_var) - KL(q(z|x) || p(z|y))) ], one sample of z, the
         Gaussian log-likelihood summed over pixels with the log 2 pi constant, the full KL;
  Adam (lr 3e-4, betas 0.9/0.999, eps 1e-8); the step also computes the gradient and parameter
  norms, as the JAX step's metrics do.

`--torch_decoder` picks how the torch decoder computes its two "upsample 2x, then 5x5 full conv"
layers: "paper" (as the paper writes them: `F.interpolate` then `Conv2d`, the default) or
"polyphase" (the algorithm of JAX's `fast_cpu` path, `cmma_jax.fast_conv.upsample_conv2d`: one
3x3 convolution of the small map with the four phase kernels stacked along the output channels,
then depth to space; 2.8x fewer FLOPs, the same function of the same parameters). A list times
both; comparing "jax fast_cpu" with "torch polyphase" separates the framework from the algorithm.
`--torch_encoder=fft` computes the encoder's layers that JAX's `fast_cpu` path runs by FFT
(`cmma_jax.fast_conv._choose_fft`: at the paper's widths, the 192 -> 96 5x5 layer) by FFT in
torch too (`fft_conv2d`, torch.fft and one complex matmul per frequency, autograd's gradients),
so that "torch ... polyphase + fft" runs JAX's algorithm, FLOP for FLOP.

`--check` copies the JAX initial parameters into the torch network and compares the loss and the
gradients of every parameter on one batch with the same noise (a correctness check of the
reference, not a timing).

The timed comparison: the JAX step (the trainer's jitted `train_step`, see train_throughput.py)
for each `--conv_impls`, PyTorch eager, and PyTorch with `torch.compile` (the loss's forward and
backward compiled; the optimizer step eager), built first and then timed in alternation, a
block of steps each in turn, `--repeats` times; medians and the ratios are reported. Threads:
PyTorch uses `torch.set_num_threads(os.cpu_count())` and XLA its default (all cores); both are
stated. A block is one untimed step, then about `--block_s` seconds of back-to-back steps, timed
(steps as a training loop runs them). Timing one step each in turn, as this script did until
2026-12-07, mixes in the other runtime: both runtimes' worker threads spin for a while after
their work, and a step right after the other framework's, or after a pause, starts with its
threads elsewhere or asleep; JAX's step, many small operations, pays most (small CMMA at batch
64: 185 ms a step timed singly after a 0.5 s pause, 155 ms back to back, in two quiet runs
four minutes apart).

Usage (PyTorch from the `bench` extra: pip install -e '.[bench]'):
  python benchmarks/torch_reference.py --check --presets=tiny --batch_sizes=8 \\
      --torch_decoder=paper,polyphase
  python benchmarks/torch_reference.py --presets=paper --batch_sizes=64 \\
      --conv_impls=xla,fast_cpu --out=benchmarks/results/torch_reference.json
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from typing import Any

from absl import app, flags

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402
import quiet  # noqa: E402

from cmma_jax import fast_conv, fft_conv, losses, nets, presets  # noqa: E402
from cmma_jax.models import cmma  # noqa: E402

FLAGS = flags.FLAGS
# --presets, --batch_sizes, --conv_impls, --repeats, --num_attributes and --out are
# train_throughput's flags (the JAX side); the CMMA is the only model here.
flags.DEFINE_list("torch_modes", ["eager", "compile"], "PyTorch modes (eager, compile).")
flags.DEFINE_list("jax_steps_per_call", [""], "JAX training steps per compiled call "
                  "(training.steps_per_call; empty: the preset's, as the trainer runs); each "
                  "value is its own row.")
flags.DEFINE_list("torch_decoder", ["paper"], "How the torch decoder computes its upsampling "
                  "layers: paper (interpolate, then conv) and/or polyphase (the fused form of "
                  "JAX's fast_cpu path).")
flags.DEFINE_list("torch_encoder", ["paper"], "How the torch encoder computes the layers JAX's "
                  "fast_cpu path runs by FFT: paper (Conv2d) and/or fft (as JAX does).")
flags.DEFINE_float("block_s", 1.0, "Seconds of back-to-back steps timed per turn, after one "
                   "untimed step (module docstring).")
flags.DEFINE_enum("decoder_variance", None, ["pixel", "fixed"], "The decoder's variance on both "
                  "sides (default: the preset's, `presets.resolve_likelihood`: paper pixel, small "
                  "fixed).")
flags.DEFINE_float("gap_s", 0.0, "Seconds of sleep before each timed turn, so that the worker "
                   "threads the other runtime left spinning go idle first (0: none).")
flags.DEFINE_bool("check", False, "Copy the JAX parameters into torch and compare loss and "
                  "gradients on one batch, then exit.")
FLAGS.set_default("out", "benchmarks/results/torch_reference.json")

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# The network


def soft_clip(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """`nets.soft_clip`: high - softplus(high - (low + softplus(x - low)))."""
    x = low + F.softplus(x - low)
    return high - F.softplus(high - x)


DECODERS = ("paper", "polyphase")
ENCODERS = ("paper", "fft")


def phase_taps(k: int, padding: int):
    """`fast_conv._phase_taps`: (M [2, T, k] 0/1, d_min, d_max); M[r, d - d_min, i] = 1 where
    tap i of output phase r reads input offset d = floor((r + i - padding) / 2)."""
    d = [[(r + i - padding) // 2 for i in range(k)] for r in (0, 1)]
    d_min, d_max = min(map(min, d)), max(map(max, d))
    m = np.zeros((2, d_max - d_min + 1, k), np.float32)
    for r in (0, 1):
        for i in range(k):
            m[r, d[r][i] - d_min, i] = 1.0
    return m, d_min, d_max


def polyphase_upsample_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            padding: int) -> torch.Tensor:
    """`conv2d(upsample_nearest_2x(h), weight, bias, padding)` (NCHW, OIHW) without the upsampled
    map, as `cmma_jax.fast_conv.upsample_conv2d` computes it: the four phase kernels (sums of the
    taps that land on the same input pixel: 3x3 for a 5x5 kernel) stacked along the output
    channels in (row phase, column phase, channel) order, one convolution of the small map,
    then the phases interleaved back (depth to space)."""
    b, ci, hh, ww = h.shape
    co, _, k, _ = weight.shape
    out_h, out_w = 2 * hh + 2 * padding - k + 1, 2 * ww + 2 * padding - k + 1
    m, d_min, d_max = phase_taps(k, padding)
    t = m.shape[1]
    m = torch.from_numpy(m).to(weight.dtype)
    phases = torch.einsum("rti,suj,ocij->rsoctu", m, m, weight).reshape(4 * co, ci, t, t)
    a_h, a_w = (out_h + 1) // 2, (out_w + 1) // 2
    lo = -d_min
    hi_h, hi_w = a_h - 1 + d_max - (hh - 1), a_w - 1 + d_max - (ww - 1)
    if lo == hi_h == hi_w and lo >= 0:
        y = F.conv2d(h, phases, bias.repeat(4), padding=lo)
    else:
        y = F.conv2d(F.pad(h, (lo, hi_w, lo, hi_h)), phases, bias.repeat(4))
    y = y.reshape(b, 2, 2, co, a_h, a_w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(b, co, 2 * a_h, 2 * a_w)[:, :, :out_h, :out_w]


def fft_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               padding: int = 0) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding)` (NCHW, OIHW) by real FFTs, as
    `cmma_jax.fft_conv.correlate` computes it: the input's rfft2 at the same transform lengths,
    the kernel's transform from the same phase tables, one complex [B, C_in] x [C_in, C_out]
    product per frequency, the irfft2 cropped; autograd's gradients."""
    b, ci, h, w = x.shape
    co, _, k, _ = weight.shape
    n1, n2 = fft_conv.transform_size(h + padding), fft_conv.transform_size(w + padding)
    ho, wo = h + 2 * padding - k + 1, w + 2 * padding - k + 1
    cos, sin = (torch.from_numpy(t) for t in fft_conv.kernel_phases(k, padding, n1, n2))
    taps = weight.permute(2, 3, 1, 0).reshape(k * k, ci * co)
    kernel = torch.complex(cos @ taps, sin @ taps).reshape(n1, n2 // 2 + 1, ci, co)
    spectrum = torch.einsum("bcfg,fgcd->bdfg", torch.fft.rfft2(x, s=(n1, n2)), kernel)
    y = torch.fft.irfft2(spectrum, s=(n1, n2))[:, :, :ho, :wo]
    return y + bias[None, :, None, None]


class Heads(nn.Module):
    def __init__(self, fan_in: int, features: int):
        super().__init__()
        self.mean = nn.Linear(fan_in, features)
        self.log_var = nn.Linear(fan_in, features)

    def forward(self, h):
        return self.mean(h), self.log_var(h)


class CMMA(nn.Module):
    """f, h and g of the CMMA (see the module docstring)."""

    def __init__(self, features, latent_dim: int, attribute_hidden: int, num_attributes: int,
                 log_var_range=(-10.0, 4.0), decoder: str = "paper",
                 fixed_sigma: float | None = None, encoder: str = "paper"):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder {decoder!r}; choose one of {DECODERS}.")
        if encoder not in ENCODERS:
            raise ValueError(f"Unknown encoder {encoder!r}; choose one of {ENCODERS}.")
        self.decoder, self.encoder = decoder, encoder
        c1, c2, c3 = features
        self.c3 = c3
        self.log_var_range = log_var_range
        self.fixed_sigma = fixed_sigma  # None: the per-pixel log-variance head (the paper)
        self.prior_hidden = nn.Linear(num_attributes, attribute_hidden)
        self.prior_heads = Heads(attribute_hidden, latent_dim)
        self.conv1 = nn.Conv2d(3, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.conv3 = nn.Conv2d(c2, c3, 4)
        self.encoder_heads = Heads(100 * c3, latent_dim)
        self.dense = nn.Linear(latent_dim, 100 * c3)
        self.dconv3 = nn.Conv2d(c3, c2, 4, padding=3)
        self.dconv2 = nn.Conv2d(c2, c1, 5, padding=4)
        # mean (3) and log-variance (3); the mean only with a fixed σ
        self.image_heads = nn.Conv2d(c1, 3 if fixed_sigma else 6, 5, padding=4)

    def prior(self, y):
        return self.prior_heads(F.softplus(self.prior_hidden(y)))

    def encode(self, x):
        h = F.relu(F.max_pool2d(self.conv1(x), 2))
        h = F.relu(F.max_pool2d(self.encoder_conv(self.conv2, h), 2))
        h = F.relu(self.conv3(h))
        return self.encoder_heads(h.permute(0, 2, 3, 1).flatten(1))  # (H, W, C) as JAX

    def decode(self, z):
        h = self.dense(z).view(z.shape[0], 10, 10, self.c3).permute(0, 3, 1, 2)
        h = F.relu(self.dconv3(h))
        h = F.relu(self.upsample_conv(self.dconv2, h))
        out = self.upsample_conv(self.image_heads, h)
        mean = torch.sigmoid(out[:, :3])
        if self.fixed_sigma is not None:
            return mean, torch.full_like(mean, 2.0 * math.log(self.fixed_sigma))
        log_var = out[:, 3:]
        if self.log_var_range is not None:
            log_var = soft_clip(log_var, *self.log_var_range)
        return mean, log_var

    def encoder_conv(self, conv: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        """`conv(h)`, or by FFT where JAX's fast_cpu path takes it (with `encoder="fft"`)."""
        weight = conv.weight
        if self.encoder == "fft" and fast_conv._choose_fft(
                (h.shape[0], h.shape[2], h.shape[3], h.shape[1]),
                tuple(weight.shape[2:]) + (weight.shape[1], weight.shape[0])):
            return fft_conv2d(h, weight, conv.bias, conv.padding[0])
        return conv(h)

    def upsample_conv(self, conv: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        """`conv(upsample_nearest_2x(h))`, as the paper writes it or in polyphase form."""
        if self.decoder == "paper":
            return conv(F.interpolate(h, scale_factor=2, mode="nearest"))
        return polyphase_upsample_conv(h, conv.weight, conv.bias, conv.padding[0])

    def loss(self, x, y, eps):
        """(loss, mean log-likelihood, mean KL) of the CMMA bound with the noise `eps`."""
        mean_q, log_var_q = self.encode(x)
        mean_p, log_var_p = self.prior(y)
        z = mean_q + eps * torch.exp(0.5 * log_var_q)
        mean_x, log_var_x = self.decode(z)
        scaled = (x - mean_x) * torch.exp(-0.5 * log_var_x)
        log_likelihood = -0.5 * (scaled.square() + log_var_x + _LOG_2PI).sum(dim=(1, 2, 3))
        d = log_var_q - log_var_p
        kl = 0.5 * (torch.expm1(d) - d
                    + ((mean_q - mean_p) * torch.exp(-0.5 * log_var_p)).square()).sum(dim=1)
        elbo = log_likelihood - kl
        return -elbo.mean(), log_likelihood.mean(), kl.mean()


def build(config, num_attributes: int, decoder: str = "paper", encoder: str = "paper") -> CMMA:
    sizes = nets.resolve_sizes(config.model)
    rng = config.model.get("decoder_log_var_range", None)
    likelihood = presets.resolve_likelihood(config.model)
    if likelihood["decoder_variance"] not in ("pixel", "fixed"):
        raise ValueError(f"The torch reference has the per-pixel and the fixed decoder variance, "
                         f"not {likelihood['decoder_variance']!r}.")
    sigma = likelihood["decoder_sigma"] if likelihood["decoder_variance"] == "fixed" else None
    return CMMA(sizes["encoder_features"], sizes["latent_dim"], sizes["attribute_hidden"],
                num_attributes, tuple(rng) if rng is not None else None, decoder, sigma, encoder)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# Weight copy and the equivalence check


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def copy_jax_params(model: CMMA, params) -> None:
    """Loads the JAX CMMA parameters (`state.params`) into the torch network."""
    conv = lambda k: _t(k).permute(3, 2, 0, 1)  # noqa: E731  HWIO -> OIHW
    dense = lambda k: _t(k).T  # noqa: E731  [in, out] -> [out, in]
    pairs = {
        model.prior_hidden: params["attribute_net"]["hidden"],
        model.prior_heads.mean: params["attribute_net"]["heads"]["mean"],
        model.prior_heads.log_var: params["attribute_net"]["heads"]["log_var"],
        model.encoder_heads.mean: params["encoder"]["heads"]["mean"],
        model.encoder_heads.log_var: params["encoder"]["heads"]["log_var"],
        model.dense: params["decoder"]["dense"],
    }
    with torch.no_grad():
        for layer, p in pairs.items():
            layer.weight.copy_(dense(p["kernel"]))
            layer.bias.copy_(_t(p["bias"]))
        trunk, dec = params["encoder"]["trunk"], params["decoder"]
        for layer, p in ((model.conv1, trunk["conv1"]), (model.conv2, trunk["conv2"]),
                         (model.conv3, trunk["conv3"]), (model.dconv3, dec["conv3"]),
                         (model.dconv2, dec["conv2"])):
            layer.weight.copy_(conv(p["kernel"]))
            layer.bias.copy_(_t(p["bias"]))
        heads = [dec["heads"][name] for name in ("mean", "log_var") if name in dec["heads"]]
        model.image_heads.weight.copy_(conv(np.concatenate([h["kernel"] for h in heads], -1)))
        model.image_heads.bias.copy_(_t(np.concatenate([h["bias"] for h in heads])))


def jax_loss_with_noise(params, config, x, y, eps):
    """The JAX CMMA loss (-mean elbo) with given noise, through the model's own entry points."""
    model = cmma.get_model(config, y.shape[-1])
    v = {"params": params}
    mean_q, log_var_q = model.apply(v, x, y, method=cmma.CMMA.encode)
    mean_p, log_var_p = model.apply(v, y, method=cmma.CMMA.prior)
    z = mean_q + eps * jnp.exp(0.5 * log_var_q)
    mean_x, log_var_x = model.apply(v, z, method=cmma.CMMA.decode)
    ll = losses.gaussian_log_likelihood(x, mean_x, log_var_x)
    kl = losses.gaussian_kl(mean_q, log_var_q, mean_p, log_var_p)
    return -jnp.mean(ll - kl)


def check(preset: str, batch_size: int, num_attributes: int,
          decoder: str = "paper") -> dict[str, Any]:
    """Loss and gradients of the torch network (with `decoder`) with the JAX parameters, against
    JAX's (plain "xla" convolutions: the paper's layers as written)."""
    config = tt.get_config("cmma", preset, batch_size, "xla",
                           decoder_variance=FLAGS.decoder_variance)
    batch = tt.make_batch(batch_size, num_attributes)
    state = cmma.init_state(jax.random.key(0), config, batch)
    sizes = nets.resolve_sizes(config.model)
    eps = np.asarray(jax.random.normal(jax.random.key(2), (batch_size, sizes["latent_dim"])))
    jax_loss, jax_grads = jax.jit(jax.value_and_grad(
        lambda p, x, y, e: jax_loss_with_noise(p, config, x, y, e)))(
            state.params, batch["image"], batch["attributes"], eps)
    model = build(config, num_attributes, decoder)
    copy_jax_params(model, state.params)
    x = _t(batch["image"]).permute(0, 3, 1, 2).contiguous()
    loss = model.loss(x, _t(batch["attributes"]), _t(eps))[0]
    loss.backward()
    # Gradients back in JAX's layouts, then the largest relative difference per tensor.
    g = {n: p.grad.numpy() for n, p in model.named_parameters()}
    conv = lambda a: a.transpose(2, 3, 1, 0)  # noqa: E731  OIHW -> HWIO
    jg = jax.tree_util.tree_map(np.asarray, jax_grads)
    jt, jd = jg["encoder"]["trunk"], jg["decoder"]
    pairs = [
        ("conv1", conv(g["conv1.weight"]), jt["conv1"]["kernel"]),
        ("conv2", conv(g["conv2.weight"]), jt["conv2"]["kernel"]),
        ("conv3", conv(g["conv3.weight"]), jt["conv3"]["kernel"]),
        ("dconv3", conv(g["dconv3.weight"]), jd["conv3"]["kernel"]),
        ("dconv2", conv(g["dconv2.weight"]), jd["conv2"]["kernel"]),
        ("image_heads", conv(g["image_heads.weight"]), np.concatenate(
            [jd["heads"][n]["kernel"] for n in ("mean", "log_var") if n in jd["heads"]], -1)),
        ("dense", g["dense.weight"].T, jd["dense"]["kernel"]),
        ("encoder_heads.mean", g["encoder_heads.mean.weight"].T,
         jg["encoder"]["heads"]["mean"]["kernel"]),
        ("prior_hidden", g["prior_hidden.weight"].T, jg["attribute_net"]["hidden"]["kernel"]),
        ("prior_heads.log_var", g["prior_heads.log_var.weight"].T,
         jg["attribute_net"]["heads"]["log_var"]["kernel"]),
    ]
    grad_errors = {n: float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))
                   for n, a, b in pairs}
    jax_count = sum(a.size for a in jax.tree_util.tree_leaves(state.params))
    torch_loss = float(loss.detach())
    return {"preset": preset, "batch_size": batch_size, "torch_decoder": decoder,
            "decoder_variance": config.model.decoder_variance,
            "jax_loss": float(jax_loss), "torch_loss": torch_loss,
            "loss_relative_difference": abs(float(jax_loss) - torch_loss) / abs(float(jax_loss)),
            "max_relative_gradient_difference": grad_errors,
            "jax_params": int(jax_count), "torch_params": num_params(model)}


# ---------------------------------------------------------------------------------------------
# Timed steps


class TorchStep:
    """One PyTorch train step (forward, backward, norms, Adam), eager or compiled."""

    def __init__(self, config, batch_size: int, num_attributes: int, mode: str, seed: int = 0,
                 decoder: str = "paper", encoder: str = "paper"):
        torch.manual_seed(seed)
        self.mode = mode
        self.batch_size = batch_size
        self.model = build(config, num_attributes, decoder, encoder)
        self.latent_dim = nets.resolve_sizes(config.model)["latent_dim"]
        opt = config.optimizer
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opt.learning_rate,
                                          betas=(opt.b1, opt.b2), eps=opt.eps)
        batch = tt.make_batch(batch_size, num_attributes, seed)
        self.x = _t(batch["image"]).permute(0, 3, 1, 2).contiguous()
        self.y = _t(batch["attributes"])
        self.loss_fn = self.model.loss if mode == "eager" else torch.compile(self.model.loss)
        start = time.perf_counter()
        self.step()  # compiles in "compile" mode
        self.compile_seconds = time.perf_counter() - start
        self.step()

    def step(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        eps = torch.randn(self.batch_size, self.latent_dim)
        loss, _, _ = self.loss_fn(self.x, self.y, eps)
        loss.backward()
        params = [p for p in self.model.parameters()]
        grad_norm = torch.linalg.vector_norm(
            torch.stack(torch._foreach_norm([p.grad for p in params])))
        param_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(params)))
        self.optimizer.step()
        del grad_norm, param_norm
        return loss.item()

    def time(self) -> float:
        start = time.perf_counter()
        loss = self.step()
        seconds = time.perf_counter() - start
        if not math.isfinite(loss):
            raise FloatingPointError(f"Non-finite torch loss {loss}.")
        return seconds


def markdown(records: list[dict[str, Any]]) -> str:
    """The table of one configuration; its last column compares each row with the fastest torch
    implementation measured (issue #22's goal is stated against torch's best)."""
    torch_rows = [r for r in records if r["name"].startswith("torch")]
    ref = max(torch_rows, key=lambda r: r["steps_per_second"]) if torch_rows else None
    reference = ref["name"] if ref else "torch (none measured)"
    lines = ["| implementation | compile s | s/step (median) | steps/s | images/s "
             "| executed GFLOP/step | utilisation (executed / peak) | MFU (model / peak) "
             f"| speed vs the fastest torch ({reference}) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in records:
        ratio = (r["steps_per_second"] / ref["steps_per_second"]) if ref else float("nan")
        lines.append(f"| {r['name']} | {r['compile_seconds']:.1f} "
                     f"| {r['seconds_per_step_median']:.3f} | {r['steps_per_second']:.3f} "
                     f"| {r['images_per_second']:.1f} "
                     f"| {r['executed_flops_per_step'] / 1e9:.2f} "
                     f"| {tt._pct(r['executed_utilisation'])} "
                     f"| {tt._pct(r['model_flops_utilisation'])} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n\n" + quiet.describe(records)


def compare(preset: str, batch_size: int, peak: dict[str, Any]) -> list[dict[str, Any]]:
    """Builds every JAX and torch step of one configuration, then times them in alternation."""
    variance = FLAGS.decoder_variance
    config = tt.get_config("cmma", preset, batch_size, "xla", decoder_variance=variance)
    runners: list[tuple[str, Any]] = []
    for impl in FLAGS.conv_impls:
        for per_call in FLAGS.jax_steps_per_call:
            step = tt.Step("cmma", preset, batch_size, impl, FLAGS.num_attributes,
                           decoder_variance=variance,
                           steps_per_call=int(per_call) if per_call else None)
            runners.append((f"jax {impl}" + ("" if step.resolved_impl == impl
                                             else f" ({step.resolved_impl})")
                            + (f", {step.steps_per_call} steps a call"
                               if step.steps_per_call > 1 else ""), step))
    for decoder in FLAGS.torch_decoder:
        for encoder in FLAGS.torch_encoder:
            for mode in FLAGS.torch_modes:
                name = (f"torch {mode}" + ("" if decoder == "paper" else f" {decoder}")
                        + ("" if encoder == "paper" else f" + {encoder} encoder"))
                runners.append((name, TorchStep(config, batch_size, FLAGS.num_attributes, mode,
                                                decoder=decoder, encoder=encoder)))
    def run(runner, steps: int) -> float:
        """Seconds per step of `steps` back-to-back steps."""
        if isinstance(runner, tt.Step):
            return runner.time(steps) / steps
        return sum(runner.time() for _ in range(steps)) / steps

    block = {name: tt.steps_for(run(runner, 1), FLAGS.block_s) for name, runner in runners}
    times: dict[str, list[float]] = {name: [] for name, _ in runners}
    with quiet.Monitor() as monitor:
        for _ in range(FLAGS.repeats):  # alternating: a block of each in turn
            for name, runner in runners:
                time.sleep(FLAGS.gap_s)
                run(runner, 1)  # untimed: the other framework's threads settle
                times[name].append(run(runner, block[name]))
    jax_steps = {name: r for name, r in runners if isinstance(r, tt.Step)}
    model_flops = next(iter(jax_steps.values())).model_flops if jax_steps else float("nan")
    # The polyphase torch decoder executes what JAX's fast_cpu path executes without its FFTs
    # (the same direct convolutions and matmuls, in torch's own kernels); the paper decoder, the
    # model's FLOPs.
    fast = next((s for s in jax_steps.values() if s.resolved_impl == "fast_cpu"), None)
    records = []
    for name, runner in runners:
        median = statistics.median(times[name])
        if isinstance(runner, tt.Step):
            executed = runner.executed_flops
        elif runner.model.decoder == "polyphase":
            # With the FFT encoder, JAX's own algorithm; without, its direct formulations.
            executed = float("nan") if not fast else (
                fast.executed_flops if runner.model.encoder == "fft" else fast.direct_flops)
        else:
            executed = model_flops
        r = {
            "name": name, "preset": preset, "batch_size": batch_size,
            "compile_seconds": runner.compile_seconds,
            "seconds_per_step": times[name], "seconds_per_step_median": median,
            "steps_per_second": 1.0 / median, "images_per_second": batch_size / median,
            "model_flops_per_step": model_flops, "executed_flops_per_step": executed,
            "model_flops_per_second": model_flops / median,
            "executed_flops_per_second": executed / median,
            "peak_flops_per_second": peak["float32"]["used"],
            "peak_source": peak["float32"]["used_source"], "flags": [],
            **monitor.summary(),
        }
        for key, flops in (("executed_utilisation", executed),
                           ("model_flops_utilisation", model_flops)):
            if np.isfinite(flops):
                r[key], flag = tt.utilisation(
                    flops / median, peak["float32"]["used"], what=f"{name}, {key}",
                    strict=key == "executed_utilisation"
                    and peak["float32"]["includes_theoretical"])
                r["flags"] += [flag] if flag else []
            else:
                r[key] = None
        records.append(r)
    eager = next((r for r in records if r["name"] == "torch eager"), None)
    for r in records:
        if eager:
            r["speed_vs_torch_eager"] = r["steps_per_second"] / eager["steps_per_second"]
    return records


def main(argv):
    del argv
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    if FLAGS.check:
        checks = [check(preset, int(batch_size), FLAGS.num_attributes, decoder)
                  for preset in FLAGS.presets for batch_size in FLAGS.batch_sizes
                  for decoder in FLAGS.torch_decoder]
        print(json.dumps(checks[0] if len(checks) == 1 else checks, indent=1))
        return
    env = tt.environment()
    env.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                "xla_threads": "XLA default (all cores)"})
    peak = tt.peaks(("float32",), FLAGS.peak_repeats, FLAGS.peak_size or None)
    print(json.dumps({"environment": env, "peak_flops_per_second": peak}), flush=True)
    records, tables = [], []
    for preset in FLAGS.presets:
        for batch_size in (int(b) for b in FLAGS.batch_sizes):
            rs = compare(preset, batch_size, peak)
            for r in rs:
                print(json.dumps(r), flush=True)
            records += rs
            tables.append(f"{preset} preset, batch {batch_size}, float32:\n\n{markdown(rs)}")
    table = "\n\n".join(tables)
    cmd = "python " + " ".join(sys.argv)
    tt.write(FLAGS.out, {"command": cmd, "environment": env, "peak_flops_per_second": peak,
                         "results": records}, table)
    print(f"\n{cmd}\n{env['processor']}, {env['cpu_count']} CPUs; torch {env['torch']} "
          f"({env['torch_threads']} threads), jax {env['jax']} (XLA: all cores); peaks:\n"
          f"{tt.describe_peaks(peak)}\n\n{table}")


if __name__ == "__main__":
    app.run(main)
