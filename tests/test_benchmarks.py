"""The training benchmarks run end to end (tiny preset, one step per repeat): their JSON records
and tables are complete, FLOPs are counted from what each implementation executes, no utilisation
above 100% can be reported, the PyTorch reference computes the same loss and gradients as the
JAX CMMA with both of its decoders (skipped when PyTorch, the `bench` extra, is absent), and the
accelerator check dry-runs on the CPU. Speed itself is measured by the benchmarks, not asserted
here."""

import json
import os
import re
import sys

import numpy as np
import pytest

from conftest import run_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


def _run(args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = run_command([sys.executable, *args], env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_throughput_records(tmp_path):
    out = tmp_path / "tt.json"
    _run(["benchmarks/train_throughput.py", "--models=cmma", "--presets=tiny",
          "--batch_sizes=4", "--conv_impls=xla,fast_cpu", "--dtypes=float32,bfloat16",
          "--decoder_variances=,fixed", "--repeats=2", "--steps_per_repeat=1", "--peak_repeats=2", "--peak_size=512",
          f"--out={out}"])
    payload = json.loads(out.read_text())
    assert payload["environment"]["backend"] == "cpu" and payload["complete"]
    for dtype in ("float32", "bfloat16"):
        peak = payload["peak_flops_per_second"][dtype]
        assert peak["measured"] > 0 and peak["used"] >= peak["measured"]
        if peak["theoretical"]:
            assert peak["used"] >= peak["theoretical"] and peak["includes_theoretical"]
    records = payload["results"]
    assert {(r["model"], r["dtype"], r["conv_impl"], r["decoder_variance"]) for r in records} == {
        ("cmma", d, c, v) for d in ("float32", "bfloat16")
        for c in ("xla", "fast_cpu") for v in ("pixel", "fixed")}  # "": the preset's (pixel)
    for r in records:
        assert len(r["seconds_per_step"]) == 2 and r["seconds_per_step_median"] > 0
        assert r["images_per_second"] == pytest.approx(4 * r["steps_per_second"])
        assert r["model_flops_per_step"] > 0 and r["compile_seconds"] > 0
        # A real run: every utilisation is a fraction, none flagged.
        for key in ("executed_utilisation", "model_flops_utilisation",
                    "executed_utilisation_vs_measured_matmul",
                    "model_flops_utilisation_vs_measured_matmul"):
            assert 0 < r[key] <= 1, (key, r[key])
        assert r["flags"] == []
        assert {"load_before", "load_after", "neighbours_cpu_share", "busy"} <= set(r)
        if r["conv_impl"] == "xla":
            assert r["executed_flops_per_step"] == r["model_flops_per_step"]
        else:  # the fused polyphase upsampling executes fewer FLOPs than the plain layers
            assert r["executed_flops_per_step"] < 0.7 * r["model_flops_per_step"]
    # The model's FLOPs (counted on the plain layers) do not depend on the implementation; a
    # fixed variance drops the per-pixel log-variance head.
    for d in ("float32", "bfloat16"):
        flops = {v: {r["model_flops_per_step"] for r in records
                     if r["dtype"] == d and r["decoder_variance"] == v} for v in ("pixel", "fixed")}
        assert len(flops["pixel"]) == 1 and len(flops["fixed"]) == 1, flops
        assert min(flops["fixed"]) < min(flops["pixel"])
    table = (tmp_path / "tt.md").read_text()
    assert table.count("\n| cmma | tiny | pixel | 4 |") == 4
    assert table.count("\n| cmma | tiny | fixed | 4 |") == 4
    assert "utilisation is against the" in table


def test_utilisation_is_never_above_one():
    import train_throughput as tt

    assert tt.utilisation(0.25e9, 1e9) == (0.25, None)
    assert tt.utilisation(1e9, 1e9) == (1.0, None)
    # Executed FLOPs above a peak that includes the processor's theoretical one: a bug.
    with pytest.raises(tt.UtilisationError, match="FLOP count or the peak is wrong"):
        tt.utilisation(1.58e9, 1e9, what="cmma", strict=True)
    # Anywhere else (a measured-only peak, model FLOPs of a faster algorithm): None and a flag.
    value, flag = tt.utilisation(1.75e9, 1e9, what="cmma, model FLOPs", strict=False)
    assert value is None and "1.75x the peak" in flag
    for bad in ((0.0, 1e9), (-1.0, 1e9), (float("nan"), 1e9), (1e9, 0.0), (1e9, float("inf"))):
        with pytest.raises(ValueError):
            tt.utilisation(*bad)


def test_a_record_cannot_report_more_than_the_peak():
    """The issue's case, fabricated: model FLOPs counted on the plain layers while the fast path
    executes fewer, against a peak measured low."""
    import types

    import train_throughput as tt

    step = types.SimpleNamespace(
        model="cmma", preset="paper", batch_size=64, conv_impl="fast_cpu", steps_per_call=1,
        resolved_impl="fast_cpu", config=types.SimpleNamespace(model={"dtype": "float32"}),
        compile_seconds=5.0, model_flops=380e9, executed_flops=262e9,
        cost_analysis_model_flops=349e9, flop_notes=[], describe=lambda: "cmma/paper")
    peak = {"float32": {"measured": 60e9, "used": 120e9, "used_source": "theoretical",
                        "theoretical": 120e9, "includes_theoretical": True}}
    r = tt.record(step, [3.49, 3.5, 3.48], peak)  # median 3.49 s: 75 GFLOP/s executed
    assert r["executed_utilisation"] == pytest.approx(262e9 / 3.49 / 120e9)
    assert r["model_flops_utilisation"] == pytest.approx(380e9 / 3.49 / 120e9)
    assert r["executed_utilisation_vs_measured_matmul"] is None  # 1.25x: flagged, not written
    assert r["model_flops_utilisation_vs_measured_matmul"] is None
    assert len(r["flags"]) == 2
    assert "n/a (flagged)" in tt.markdown_table([r])
    # Executed FLOP/s above the theoretical peak: refused.
    with pytest.raises(tt.UtilisationError):
        tt.record(step, [1.0], peak)
    # Without a theoretical peak the same figure is flagged, not raised.
    peak["float32"]["includes_theoretical"] = False
    r = tt.record(step, [1.0], peak)
    assert r["executed_utilisation"] is None and r["model_flops_utilisation"] is None


def test_flops_of_the_fused_upsampling_are_counted_from_its_own_convolution():
    import jax
    import jax.numpy as jnp

    import train_throughput as tt
    from cmma_jax import nets

    b, h, ci, co, k = 2, 13, 16, 32, 5  # the decoder's "upsample 13 -> 26, full conv5 -> 30"
    x = jnp.ones((b, h, h, ci))
    w = jnp.full((k, k, ci, co), 0.01)
    bias = jnp.zeros(co)
    count = lambda impl: tt.count_flops(  # noqa: E731
        lambda x, w: nets.conv2d(x, w, bias, k - 1, impl, upsample=True), x, w)[0]
    plain = 2 * b * 30 * 30 * co * k * k * ci
    assert count("xla") == plain
    # fast_cpu: one 3x3 convolution of the 13x13 map (padding 2 -> 15x15) with 4 x co outputs,
    # plus the (small) einsum that builds the four phase kernels from the 5x5 kernel.
    fused = 2 * b * 15 * 15 * 4 * co * 3 * 3 * ci
    phases = 2 * (2 * 3 * 5) * (2 * 3 * 5) * ci * co  # upper bound of the einsum's matmuls
    assert fused <= count("fast_cpu") <= fused + phases
    assert plain / fused == pytest.approx(25 / 9 * (30 * 30) / (4 * 15 * 15))
    # Gradients are counted too (the custom VJP's own matmuls), and loops by their trip count.
    loss = lambda impl: lambda x, w: nets.conv2d(x, w, bias, k - 1, impl, True).sum()  # noqa
    assert tt.count_flops(jax.grad(loss("fast_cpu"), (0, 1)), x, w)[0] > 2 * fused
    body = lambda c, _: (c @ c, None)  # noqa: E731
    flops, notes = tt.count_flops(lambda c: jax.lax.scan(body, c, None, length=7)[0],
                                  jnp.ones((8, 8)))
    assert flops == 7 * 2 * 8 ** 3 and notes == []


def test_flops_of_the_fft_convolution_are_counted_by_hand():
    """fft_conv.correlate: the kernel's transform (a complex matmul of the phase table and the
    taps), the input's rfft2, one complex matmul per frequency (8 real FLOPs per multiply-add)
    and the output's irfft2."""
    import jax.numpy as jnp
    import numpy as np

    import train_throughput as tt
    from cmma_jax import fft_conv

    b, h, ci, co, k = 2, 10, 4, 6, 5  # VALID: N = 10 on both axes, 10 x 6 frequencies
    x, w = jnp.ones((b, h, h, ci)), jnp.ones((k, k, ci, co))
    n, nf = 10, 6
    kernel_transform = 8 * n * nf * k * k * ci * co
    products = 8 * n * nf * b * ci * co
    transforms = 2.5 * (n * n) * np.log2(n * n) * (b * ci + b * co)
    flops, notes = tt.count_flops(lambda x, w: fft_conv.correlate(x, w, 0), x, w)
    assert flops == pytest.approx(kernel_transform + products + transforms, rel=1e-12)
    assert notes == []


def test_theoretical_peak_is_read_from_the_processor():
    import train_throughput as tt

    peak = tt.theoretical_peak("float32")
    with open("/proc/cpuinfo") as f:
        info = f.read()
    if "avx512f" not in info and "avx2" not in info:
        pytest.skip("no AVX flags to read")
    assert peak is not None and peak["flops_per_second"] > 0
    assert "AVX" in peak["source"] and "GHz" in peak["source"]
    assert tt.theoretical_peak("bfloat16")["flops_per_second"] >= peak["flops_per_second"]


@pytest.mark.parametrize("variance", ["pixel", "fixed"])
def test_torch_reference_matches_jax(tmp_path, variance):
    """With the paper's per-pixel decoder variance and with the small preset's fixed one."""
    pytest.importorskip("torch")
    out = tmp_path / "check.json"
    result = _run(["benchmarks/torch_reference.py", "--check", "--presets=tiny",
                   "--batch_sizes=4", "--torch_decoder=paper,polyphase", f"--out={out}",
                   f"--decoder_variance={variance}"])
    checks = json.loads(result.stdout[result.stdout.index("["):])
    assert [c["torch_decoder"] for c in checks] == ["paper", "polyphase"]
    assert {c["decoder_variance"] for c in checks} == {variance}
    for check in checks:
        assert check["loss_relative_difference"] < 1e-5
        assert max(check["max_relative_gradient_difference"].values()) < 1e-4
        assert check["jax_params"] == check["torch_params"]


def test_torch_reference_timed_comparison(tmp_path):
    """The timed comparison runs blocks of steps in alternation and compares every row with the
    fastest torch implementation measured (issue #22 states its goal against torch's best)."""
    pytest.importorskip("torch")
    out = tmp_path / "timed.json"
    result = _run(["benchmarks/torch_reference.py", "--presets=tiny", "--batch_sizes=4",
                   "--conv_impls=fast_cpu", "--torch_decoder=polyphase", "--torch_modes=eager",
                   "--repeats=2", "--block_s=0.01", "--peak_repeats=1", f"--out={out}"])
    assert "speed vs the fastest torch (torch eager polyphase)" in result.stdout
    assert re.search(r"^\| torch eager polyphase \|.*\| 1\.00x \|$", result.stdout, re.M)
    records = json.loads(out.read_text())["results"]
    assert [r["name"] for r in records] == ["jax fast_cpu", "torch eager polyphase"]
    assert all(len(r["seconds_per_step"]) == 2 for r in records)


def test_torch_polyphase_upsampling_is_the_plain_layer():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import torch_reference as tr

    gen = torch.Generator().manual_seed(0)
    for size, k, pad in ((13, 5, 4), (30, 5, 4), (7, 4, 3), (6, 3, 0), (5, 5, 1)):
        h = torch.randn(2, 6, size, size, generator=gen, dtype=torch.float64)
        w = torch.randn(5, 6, k, k, generator=gen, dtype=torch.float64)
        b = torch.randn(5, generator=gen, dtype=torch.float64)
        plain = F.conv2d(F.interpolate(h, scale_factor=2, mode="nearest"), w, b, padding=pad)
        fused = tr.polyphase_upsample_conv(h, w, b, pad)
        assert fused.shape == plain.shape
        np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-10, atol=1e-10)


def test_torch_fft_convolution_is_the_plain_layer():
    """The torch reference's FFT layer (`--torch_encoder=fft`): F.conv2d's values and gradients
    (float32 FFTs: errors of a few 1e-6 of the scale)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import torch_reference as tr

    gen = torch.Generator().manual_seed(0)
    for size, k, pad in ((30, 5, 0), (9, 5, 4), (7, 4, 1), (11, 3, 2)):
        x = torch.randn(2, 6, size, size + 1, generator=gen, requires_grad=True)
        w = (0.1 * torch.randn(5, 6, k, k, generator=gen)).requires_grad_()
        b = torch.randn(5, generator=gen, requires_grad=True)
        g = torch.randn(2, 5, size + 2 * pad - k + 1, size + 2 * pad - k + 2, generator=gen)
        results = []
        for conv in (lambda: F.conv2d(x, w, b, padding=pad), lambda: tr.fft_conv2d(x, w, b, pad)):
            y = conv()
            grads = torch.autograd.grad(y, (x, w, b), g)
            results.append([t.detach().numpy() for t in (y, *grads)])
        for name, plain, fft in zip(("output", "dx", "dw", "db"), *results):
            assert fft.shape == plain.shape, name
            scale = np.max(np.abs(plain))
            np.testing.assert_allclose(fft, plain, rtol=0, atol=1e-5 * scale, err_msg=name)


def test_accelerator_check_dry_run(tmp_path):
    """benchmarks/accelerator_check.sh --dry-run: every part on the CPU with tiny settings. The
    pair part trains the tiny CMMA and CVAE until their SIGTERM (each checkpoints and exits 143),
    exports their float16 parameters within what the device tool sends back (at most 8 files,
    16 MiB each, 64 MiB in all), evaluates them, and imports them back (round trip); then a
    second run (`CHECK_ONLY=pair`) resumes the CMMA from the returned files."""
    import param_files as pf

    out = tmp_path / "out"
    # Each model is stopped (SIGTERM) once it has written a validation point: an event, so a
    # slow machine waits longer instead of failing. The parts' time limits, which budget a
    # device lease, are lifted out of reach for the same reason: with the default ones (a minute
    # a model) the dry run failed beside two trainings ("throughput_vlae: timed out after 60 s").
    limits = {name: "36000" for name in ("CHECK_BUDGET_S", "CHECK_SETUP_S", "CHECK_TESTS_S",
                                         "CHECK_MODEL_S", "CHECK_INPUT_S", "CHECK_PAIR_S")}
    env = dict(os.environ, JAX_PLATFORMS="cpu", PAIR_STOP_AFTER_VALIDATIONS="1", **limits)
    result = run_command(["bash", "benchmarks/accelerator_check.sh", str(out), "--dry-run"],
                         env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = sorted(os.listdir(out))
    assert names == ["logs.tar.gz", "params_cmma_1of1.npz", "params_cvae_1of1.npz",
                     "summary.json", "summary.md"], names
    sizes = {n: os.path.getsize(out / n) for n in names}
    assert len(names) <= 8 and max(sizes.values()) <= 16 << 20, sizes
    assert sum(sizes.values()) <= 64 << 20 and pf.check_sendable(sizes) == []
    summary = json.loads((out / "summary.json").read_text())
    parts = {p["name"]: p["status"] for p in summary["parts"]}
    assert list(parts) == ["setup", "tests", "throughput_cmma", "throughput_vlae", "input",
                           "pair"], parts
    assert all(s == "ok" for s in parts.values()), parts
    assert summary["tests"]["failed"] == [] and len(summary["tests"]["passed"]) == 2
    assert {r["model"] for r in summary["throughput"]} == {"cmma", "vlae"}
    for r in summary["throughput"]:
        assert 0 < r["model_flops_utilisation"] <= 1
    assert summary["input_pipeline"][0]["ratio_to_consumer"] > 0
    pair = summary["pair"]
    # (the summary lists the files as they were when it was written: the same names)
    assert set(pair["models"]) == {"cmma", "cvae"} and set(pair["files"]) == set(sizes)
    assert pair["evaluate_exit"] == 0 and pair["curves_exit"] == 0
    for name, m in pair["models"].items():
        # Cut short by its timeout's SIGTERM: the last step checkpointed, exit 143.
        assert m["stopped_by_sigterm"] and m["exit"] == 143, m
        assert m["steps"] > 0 and m["steps"] == m["last_checkpoint"] == m["evaluated_step"]
        assert m["epochs"] == pytest.approx(m["steps"] * 8 / 200, abs=0.01)
        assert m["validation_points"] >= 1 and m["final_val_elbo"] is not None
        for value in (m["test_bound"], m["test_iwae"]["1"], m["test_iwae"]["10"],
                      m["test_parzen"]):
            assert np.isfinite(value)
        assert m["param_files"] == [f"params_{name}_1of1.npz"]
        assert pair["roundtrip"][name]["loads"]
        assert pair["roundtrip"][name]["within_float16_rounding"]
    assert "## The pair on LFW" in (out / "summary.md").read_text()
    assert "## Train step throughput" in (out / "summary.md").read_text()

    # import-params here: workdirs that load_model reads, with the returned float16 values.
    from cmma_jax import workdirs

    dest = tmp_path / "imported"
    _run(["benchmarks/accelerator_bundle.py", "import-params", str(out), str(dest)])
    exported = pf.read_exported(str(out))
    for name, (meta, leaves) in exported.items():
        model = workdirs.load_model(str(dest / name))
        assert model.name == name and model.step == pair["models"][name]["steps"]
        got = pf.flat_params(model.params)
        assert set(got) == set(leaves)
        for k, v in leaves.items():
            assert v.dtype == np.float16 and got[k].dtype == np.float32
            np.testing.assert_array_equal(got[k], v.astype(np.float32))
        assert (dest / name / "metrics.jsonl").read_text().count("val_elbo") == \
            pair["models"][name]["validation_points"]

    # A next lease: the returned files carried, training resumes from them. Stopped by the same
    # event, under the same lifted limits (a 160 s limit here was SIGKILLed beside three
    # trainings: exit 137 after its SIGTERM's grace).
    out2 = tmp_path / "out2"
    env2 = dict(env, CHECK_ONLY="pair", PAIR_MODELS="cmma", PAIR_PARAMS_DIR=str(out))
    result = run_command(["bash", "benchmarks/accelerator_check.sh", str(out2), "--dry-run"],
                         env=env2, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary2 = json.loads((out2 / "summary.json").read_text())
    assert [p["name"] for p in summary2["parts"]] == ["setup", "pair"]
    resumed = summary2["pair"]["models"]["cmma"]
    assert resumed["start_step"] == pair["models"]["cmma"]["steps"]
    assert resumed["steps"] > resumed["start_step"] and resumed["exit"] == 143
    assert sorted(os.listdir(out2)) == ["logs.tar.gz", "params_cmma_1of1.npz", "summary.json",
                                        "summary.md"]


def test_parameter_export_splits_and_refuses_what_cannot_be_sent(tmp_path):
    """Parts of at most PART_BYTES raw bytes (a leaf larger than that cut along its first axis),
    float16 range and finiteness checked, and no export that would exceed eight files."""
    import param_files as pf

    arrays = {"a": np.zeros((10, 4), np.float16), "big": np.zeros((25, 4), np.float16),
              "c": np.zeros(3, np.float16)}
    parts = pf.plan_parts(arrays, part_bytes=80)
    assert [sorted(p) for p in parts] == [["a"], ["big#0"], ["big#1"], ["big#2", "c"]]
    assert sum(p[k].nbytes for p in parts for k in p) == sum(a.nbytes for a in arrays.values())
    half, stats = pf.to_float16({"w": np.array([1.0, 1e-3, 1e-9], np.float32)})
    assert half["w"].dtype == np.float16 and stats["values_flushed_to_zero"] == 1
    assert stats["max_relative_rounding_error_normal"] <= 2.0 ** -11
    for bad in (np.array([np.nan], np.float32), np.array([7e4], np.float32)):
        with pytest.raises(ValueError):
            pf.to_float16({"w": bad})
    assert pf.check_sendable({f"f{i}": 1 for i in range(9)}) == ["9 files, over 8"]
    assert pf.check_sendable({"f": 17 << 20})[0].startswith("f: 17.0 MiB")


def test_loop_overhead_dry_run(tmp_path):
    """benchmarks/loop_overhead.py end to end on the tiny preset: the bare step and the trainer
    on both input paths, alternating, with overheads computed from the same repeat's rates."""
    out = tmp_path / "loop.json"
    _run(["benchmarks/loop_overhead.py", "--preset=tiny", "--batch_size=8", "--steps=20",
          "--log_every=5", "--repeats=1", "--dataset=synthetic_faces",
          f"--prepared_dir={tmp_path / 'tfds'}",
          "--data_options=num_train=64,num_validation=16,num_test=16", f"--out={out}"])
    payload = json.loads(out.read_text())
    assert set(payload["steps_per_sec"]) == {"bare", "grain", "resident"}
    for path in ("grain", "resident"):
        rates, bare = payload["steps_per_sec"][path], payload["steps_per_sec"]["bare"]
        assert len(rates) == 1 and all(r > 0 for r in rates)
        np.testing.assert_allclose(payload["overhead"][path],
                                   [1 - t / b for t, b in zip(rates, bare)])
    assert "| resident |" in (tmp_path / "loop.md").read_text()


def test_train_throughput_times_several_steps_a_call(tmp_path):
    """`--steps_per_call`: each count is its own row, timed in whole calls (3 steps a repeat run
    as 2 calls of 2, prorated); empty takes the preset's (1 for tiny)."""
    out = tmp_path / "tt.json"
    _run(["benchmarks/train_throughput.py", "--models=cmma", "--presets=tiny", "--batch_sizes=4",
          "--conv_impls=fast_cpu", "--steps_per_call=,2", "--repeats=1", "--steps_per_repeat=3",
          "--peak_repeats=1", "--peak_size=256", f"--out={out}"])
    records = json.loads(out.read_text())["results"]
    assert [r["steps_per_call"] for r in records] == [1, 2]
    assert all(r["seconds_per_step_median"] > 0 for r in records)
    assert "| steps a call |" in (tmp_path / "tt.md").read_text()


def test_profile_step_tables(tmp_path):
    """benchmarks/profile_step.py: every timed operation of the JAX step is matched with its HLO
    instruction and put in one category; the categories add up to the operations' sum (and
    PyTorch's too, where it is installed); the machine's conditions are recorded."""
    frameworks = "jax,torch" if _has_torch() else "jax"
    out = tmp_path / "profile.json"
    _run(["benchmarks/profile_step.py", "--presets=tiny", "--batch_sizes=4", "--steps=2",
          f"--frameworks={frameworks}", f"--out={out}"])
    (result,) = json.loads(out.read_text())["results"]
    profiles = result["profiles"]
    assert [p["label"].split()[0] for p in profiles] == frameworks.split(",")
    for p in profiles:
        assert p["ops"] and p["op_ms_per_step"] > 0 and p["wall_ms_per_step"] > 0
        assert sum(p["by_category"].values()) == pytest.approx(p["op_ms_per_step"])
        assert sum(p["by_phase"].values()) == pytest.approx(p["op_ms_per_step"])
        assert 0 <= p["async_ms_per_step"] <= p["op_ms_per_step"] and p["idle_ms_per_step"] >= 0
        assert {"load_before", "neighbours_cpu_share", "busy"} <= set(p)
    jax_ops = profiles[0]["ops"]
    assert any(o["category"] == "convolution" for o in jax_ops)
    assert any(o["phase"] == "backward" for o in jax_ops)
    assert "| category |" in (tmp_path / "profile.md").read_text()


def test_profile_attributes_asynchronous_work():
    """An asynchronous operation's event covers only its launch: the time after it during which
    nothing runs is its work, up to the next operation; other uncovered time is idle. A
    hand-made timeline (start, duration) with the answer worked out by hand."""
    import profile_step
    timed = [("conv", 0.0, 5.0),      # launched at 0, its work runs until the next op at 100
             ("relu", 100.0, 10.0),   # then 20 idle
             ("add", 130.0, 10.0),    # overlaps "dot"'s launch below: no gap between them
             ("dot", 135.0, 2.0),     # launched; "mul" runs beside it, then a gap of 60
             ("mul", 138.0, 12.0),
             ("copy", 210.0, 5.0),    # after the gap that "dot" is charged with
             ("copy", 300.0, 5.0)]    # 85 idle: the last async launch was charged already
    traced, launched, idle = profile_step.attribute_async(timed, {"conv", "dot"})
    assert traced == {"conv": 5.0, "relu": 10.0, "add": 10.0, "dot": 2.0, "mul": 12.0,
                      "copy": 10.0}
    assert launched == {"conv": 95.0, "dot": 60.0}
    assert idle == 20.0 + 85.0
    # Every instant from the first start to the last end is traced, charged or idle.
    covered = 0.0
    end = None
    for _, start, duration in sorted(timed, key=lambda t: t[1]):
        covered += max(0.0, start + duration - max(start, end or start))
        end = start + duration if end is None else max(end, start + duration)
    assert covered + sum(launched.values()) + idle == 305.0


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_fast_conv_choices_runs():
    result = _run(["benchmarks/fast_conv_choices.py", "--presets=tiny", "--batch_sizes=4",
                   "--variants=dw=xla", "--repeats=1", "--steps_per_repeat=1"])
    assert "| auto |" in result.stdout and "| dw=xla |" in result.stdout
    assert "xpatches |" not in result.stdout
