"""The training benchmarks run end to end (tiny preset, one step per repeat): their JSON records
and tables are complete, and the PyTorch reference computes the same loss and gradients as the
JAX CMMA (skipped when PyTorch, the `bench` extra, is absent). Speed itself is measured by the
benchmarks, not asserted here."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_throughput_records(tmp_path):
    out = tmp_path / "tt.json"
    _run(["benchmarks/train_throughput.py", "--models=cmma", "--presets=tiny",
          "--batch_sizes=4", "--conv_impls=xla,fast_cpu", "--dtypes=float32,bfloat16",
          "--repeats=2", "--steps_per_repeat=1", f"--out={out}"])
    payload = json.loads(out.read_text())
    assert payload["environment"]["backend"] == "cpu"
    assert payload["peak_flops_per_second"]["float32"] > 0
    records = payload["results"]
    assert {(r["model"], r["dtype"], r["conv_impl"]) for r in records} == {
        ("cmma", d, c) for d in ("float32", "bfloat16")
        for c in ("xla", "fast_cpu")}
    for r in records:
        assert len(r["seconds_per_step"]) == 2 and r["seconds_per_step_median"] > 0
        assert r["images_per_second"] == pytest.approx(4 * r["steps_per_second"])
        assert r["model_flops_per_step"] > 0 and r["compile_seconds"] > 0
    # The model's FLOPs (counted on the plain layers) do not depend on the implementation.
    for d in ("float32", "bfloat16"):
        flops = {r["model_flops_per_step"] for r in records if r["dtype"] == d}
        assert len(flops) == 1, flops
    table = (tmp_path / "tt.md").read_text()
    assert table.count("\n| cmma | tiny | 4 |") == 4


def test_torch_reference_matches_jax(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "check.json"
    result = _run(["benchmarks/torch_reference.py", "--check", "--presets=tiny",
                   "--batch_sizes=4", f"--out={out}"])
    check = json.loads(result.stdout[result.stdout.index("{"):])
    assert check["loss_relative_difference"] < 1e-5
    assert max(check["max_relative_gradient_difference"].values()) < 1e-4
    assert check["jax_params"] == check["torch_params"]
