r"""Where the CMMA train step's time goes, JAX beside PyTorch: per-operation profiles.

    python benchmarks/profile_step.py --presets=paper --batch_sizes=64
    python benchmarks/profile_step.py --presets=small --batch_sizes=16,64 --steps=20

JAX: the trainer's jitted step (`train_throughput.Step`, the first of `--conv_impls`, default fast_cpu) runs
`--steps` steps under `jax.profiler` (a Perfetto trace); every executed XLA operation (a thunk of
the CPU runtime, named after its HLO instruction) is matched with the compiled HLO, which says
what it computes (a convolution, a matmul, element-wise work, data movement: slices, pads,
concatenations, copies, transposes) and, from its source metadata, which part of the step it
belongs to (forward, backward, the optimizer). PyTorch: the same step of
`torch_reference.TorchStep` (`--torch_decoder`, default polyphase: the algorithm of the JAX path;
eager) under `torch.profiler`, its operators' self time grouped the same way. Both print a table
per category (ms per step and share) and the most expensive operations, and write them to
`--out` (.json and .md). Times under the profiler are a little slower than without it; compare
the shares, and take speed from `torch_reference.py`. XLA's CPU runtime runs Eigen's
convolutions and matmuls asynchronously (their events cover the launch only): the time after such
a launch during which no operation runs is counted as that operation's (`attribute_async`, an
estimate), the rest as "no operation running" (between steps, waits). The load and the
neighbours' CPU share are recorded (benchmarks/quiet.py): profile on a quiet machine.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quiet  # noqa: E402
import train_throughput as tt  # noqa: E402

FLAGS = flags.FLAGS
try:  # its flags (--torch_decoder) and train_throughput's; PyTorch is the `bench` extra
    import torch_reference as tr  # noqa: E402
except ImportError:
    tr = None
    flags.DEFINE_list("torch_decoder", ["polyphase"], "paper or polyphase (needs PyTorch).")
flags.DEFINE_integer("steps", 5, "Profiled steps (after warm-up).")
flags.DEFINE_list("frameworks", ["jax", "torch"], "jax, torch.")
flags.DEFINE_integer("top", 15, "Operations listed per framework.")
FLAGS.set_default("out", "benchmarks/results/profile_step.json")
FLAGS.set_default("torch_decoder", ["polyphase"])
FLAGS.set_default("conv_impls", ["fast_cpu"])

CATEGORIES = ("convolution", "matmul", "element-wise", "data movement", "reduction", "other")
_MOVEMENT = {"slice", "dynamic-slice", "dynamic-update-slice", "pad", "concatenate", "copy",
             "transpose", "bitcast", "reshape", "broadcast", "iota", "parameter", "constant",
             "tuple", "get-tuple-element", "gather", "scatter", "reverse", "copy-start",
             "copy-done"}
_CONTROL = {"while", "call", "conditional", "fusion"}  # containers: their insides are timed


# ---------------------------------------------------------------------------------------------
# JAX: the compiled HLO says what each thunk is


def _hlo_index(hlo: str) -> dict[str, dict[str, Any]]:
    """{instruction name: {"opcode", "calls", "op_name"}} and computation bodies' opcodes."""
    computations: dict[str, set[str]] = {}
    instructions: dict[str, dict[str, Any]] = {}
    current = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head and not line.startswith(" "):
            current = head.group(1)
            computations[current] = set()
            continue
        m = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = [^=]*? ([a-z][\w\-]*)\(", line)
        if not m or current is None:
            continue
        name, opcode = m.group(1), m.group(2)
        computations[current].add(opcode)
        calls = re.search(r"(?:calls|body|to_apply)=%?([\w.\-]+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        instructions[name] = {"opcode": opcode, "calls": calls.group(1) if calls else None,
                              "op_name": op_name.group(1) if op_name else ""}
    for info in instructions.values():
        info["inner"] = computations.get(info["calls"], set()) if info["calls"] else set()
    return instructions


def _category(opcode: str, inner: set[str], name: str = "") -> str:
    ops = inner | {opcode}
    if "convolution" in ops or "ynn_fusion" in name and "dot" not in ops:
        return "convolution"
    if "dot" in ops:
        return "matmul"
    if opcode in ("reduce", "reduce-window", "select-and-scatter") or "reduce" in inner:
        return "reduction"
    if ops - _CONTROL <= _MOVEMENT:
        return "data movement"
    if opcode == "custom-call":
        return "other"
    return "element-wise"


def _phase(op_name: str) -> str:
    if re.search(r"adam|optax|apply_updates|global_norm", op_name, re.I):
        return "optimizer"
    if "transpose(" in op_name:
        return "backward"
    if op_name:
        return "forward"
    return "unattributed"


def profile_jax(preset: str, batch_size: int, steps: int) -> dict[str, Any]:
    # One step a call: the profile is of one step (its HLO names the traced operations).
    step = tt.Step("cmma", preset, batch_size, FLAGS.conv_impls[0], FLAGS.num_attributes,
                   steps_per_call=1)
    hlo = step._step.lower(step.state, step.batch, step._keys[0]).compile().as_text()
    index = _hlo_index(hlo)
    step.run(2)
    trace_dir = tempfile.mkdtemp(prefix="jaxprof_")
    with quiet.Monitor() as monitor:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        start = time.perf_counter()
        step.run(steps)
        wall = (time.perf_counter() - start) / steps
        jax.profiler.stop_trace()
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"),
                            recursive=True))[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    timed = [(e["name"], e["ts"], e.get("dur", 0.0)) for e in events
             if e.get("ph") == "X" and e.get("name", "") in index
             and index[e["name"]]["opcode"] not in ("while", "call", "conditional")]
    traced, launched_ms, idle = attribute_async(timed, {n for n, i in index.items()
                                                         if i["opcode"] in ASYNC_OPCODES})
    ops = []
    for name, us in traced.items():
        info = index[name]
        ops.append({"name": name, "ms": (us + launched_ms.get(name, 0.0)) / 1e3 / steps,
                    "async_ms": launched_ms.get(name, 0.0) / 1e3 / steps,
                    "category": _category(info["opcode"], info["inner"], name),
                    "phase": _phase(info["op_name"]),
                    "source": info["op_name"].replace("jit(train_step)/", "")[:90]})
    return _summary("jax " + step.resolved_impl, ops, wall, monitor, idle / 1e3 / steps)


# XLA's CPU runtime runs these (Eigen's convolutions and matmuls, not the YNNPACK fusions)
# asynchronously: the thunk's trace event covers only the launch (microseconds) and the work runs
# on the intra-op threads without an event of its own, so that the profile shows it as time
# during which no operation runs (2026-12-07: a paper-preset step had 600 ms of such "gaps", 90%
# of them right after the launch of an Eigen convolution or of a matmul in a patch loop).
ASYNC_OPCODES = ("convolution", "dot")


def attribute_async(timed: list[tuple[str, float, float]], asynchronous: set[str]
                    ) -> tuple[dict[str, float], dict[str, float], float]:
    """Splits a trace's uncovered time between the asynchronous operations and idleness.

    Args:
      timed: (operation, start, duration) of every traced operation (any time unit).
      asynchronous: the operations whose event covers only their launch (`ASYNC_OPCODES`).

    Returns:
      (traced time per operation, time attributed to each asynchronous operation, idle time).
      Time during which no traced operation runs is a gap; a gap that follows the launch of an
      asynchronous operation (the last one launched since the previous gap) is that operation's
      work, the others are idle. An estimate, and a lower bound for the asynchronous operations:
      their work that overlaps another operation (on the other thread) is not counted.
    """
    traced: dict[str, float] = collections.Counter()
    launched: dict[str, float] = collections.Counter()
    idle, covered, pending = 0.0, None, None
    for name, start, duration in sorted(timed, key=lambda t: t[1]):
        traced[name] += duration
        if covered is not None and start > covered:
            if pending is None:
                idle += start - covered
            else:
                launched[pending] += start - covered
            pending = None
        if name in asynchronous:
            pending = name
        covered = start + duration if covered is None else max(covered, start + duration)
    return dict(traced), dict(launched), idle


# ---------------------------------------------------------------------------------------------
# PyTorch: the operators' self time


def _torch_category(name: str) -> str:
    n = name.lower()
    if "conv" in n:
        return "convolution"
    if re.search(r"\b(aten::)?(mm|addmm|bmm|matmul|linear|baddbmm)\b", n):
        return "matmul"
    if re.search(r"copy_|contiguous|permute|transpose|cat\b|stack|clone|pad|slice|select|"
                 r"as_strided|view|reshape|expand|pixel_shuffle|empty|zeros|fill_", n):
        return "data movement"
    if re.search(r"sum|mean|norm|max_pool|reduce", n):
        return "reduction"
    return "element-wise"


def profile_torch(preset: str, batch_size: int, steps: int) -> dict[str, Any]:
    if tr is None:
        raise app.UsageError("--frameworks=torch needs PyTorch (pip install -e '.[bench]').")
    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile, record_function  # noqa: PLC0415

    torch.set_num_threads(os.cpu_count() or 1)
    config = tt.get_config("cmma", preset, batch_size, "xla")
    decoder = FLAGS.torch_decoder[0]
    runner = tr.TorchStep(config, batch_size, FLAGS.num_attributes, "eager", decoder=decoder)
    runner.step()

    def step():  # TorchStep.step, with its three parts labelled
        with record_function("forward"):
            runner.optimizer.zero_grad(set_to_none=True)
            eps = torch.randn(runner.batch_size, runner.latent_dim)
            loss, _, _ = runner.loss_fn(runner.x, runner.y, eps)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            params = list(runner.model.parameters())
            norms = (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(
                [p.grad for p in params]))), torch.linalg.vector_norm(torch.stack(
                    torch._foreach_norm(params))))
            runner.optimizer.step()
        del norms
        return loss.item()

    with quiet.Monitor() as monitor:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            wall = (time.perf_counter() - start) / steps
    per_op: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    parts = ("forward", "backward", "optimizer")
    for event in prof.events():
        if event.name in parts:
            continue
        parent, phase = event.cpu_parent, "forward"
        while parent is not None:
            if parent.name in parts:
                phase = parent.name
                break
            parent = parent.cpu_parent
        if "backward" in event.name.lower():  # autograd runs the backward outside the label
            phase = "backward"
        entry = per_op[(event.name, phase)]
        entry[0] += event.self_cpu_time_total / 1e3 / steps
        entry[1] += 1
    ops = [{"name": name, "ms": ms, "category": _torch_category(name), "phase": phase,
            "source": f"{count / steps:g} calls/step"}
           for (name, phase), (ms, count) in per_op.items() if ms > 0]
    return _summary(f"torch eager ({decoder} decoder)", ops, wall, monitor)


# ---------------------------------------------------------------------------------------------
# Tables


def _summary(label: str, ops: list[dict[str, Any]], wall: float, monitor: quiet.Monitor,
             idle: float | None = None) -> dict[str, Any]:
    """`idle`: ms per step during which no operation ran (default: the wall time not covered
    by the sum of the operations, for a runtime whose operations run one after another)."""
    total = sum(o["ms"] for o in ops)
    if idle is None:
        idle = max(0.0, 1e3 * wall - total)
    by_category = {c: sum(o["ms"] for o in ops if o["category"] == c) for c in CATEGORIES}
    phases = sorted({o["phase"] for o in ops})
    by_phase = {p: sum(o["ms"] for o in ops if o["phase"] == p) for p in phases}
    return {"label": label, "wall_ms_per_step": 1e3 * wall, "op_ms_per_step": total,
            "idle_ms_per_step": idle,
            "async_ms_per_step": sum(o.get("async_ms", 0.0) for o in ops),
            "by_category": by_category, "by_phase": by_phase,
            "ops": sorted(ops, key=lambda o: -o["ms"]), **monitor.summary()}


def markdown(profiles: list[dict[str, Any]], top: int) -> str:
    lines = ["| category | " + " | ".join(f"{p['label']} ms/step (share)" for p in profiles) +
             " |", "| --- |" + " ---: |" * len(profiles)]
    for c in CATEGORIES:
        cells = [f"{p['by_category'][c]:.1f} ({100 * p['by_category'][c] / p['op_ms_per_step']:.0f}%)"
                 for p in profiles]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("| sum of operations | " + " | ".join(f"{p['op_ms_per_step']:.1f}"
                                                       for p in profiles) + " |")
    lines.append("| of which asynchronous work, estimated | " + " | ".join(
        f"{p['async_ms_per_step']:.1f}" for p in profiles) + " |")
    lines.append("| no operation running | " + " | ".join(f"{p['idle_ms_per_step']:.1f}"
                                                          for p in profiles) + " |")
    lines.append("| wall time of a step (profiled) | " + " | ".join(
        f"{p['wall_ms_per_step']:.1f}" for p in profiles) + " |")
    lines += ["", "By part of the step (ms/step): " + "; ".join(
        p["label"] + ": " + ", ".join(f"{k} {v:.1f}" for k, v in p["by_phase"].items())
        for p in profiles)]
    for p in profiles:
        lines += ["", f"The {top} most expensive operations, {p['label']}:", "",
                  "| operation | ms/step | category | part | source |", "| --- | ---: | --- | --- | --- |"]
        for o in p["ops"][:top]:
            asynchronous = f" ({o['async_ms']:.2f} asynchronous)" if o.get("async_ms") else ""
            lines.append(f"| `{o['name'][:60]}` | {o['ms']:.2f}{asynchronous} | {o['category']} "
                         f"| {o['phase']} "
                         f"| {o['source'].replace('|', '/')} |")
    lines += ["", quiet.describe(profiles)]
    return "\n".join(lines)


def main(argv):
    del argv
    env = tt.environment()
    cmd = "python " + " ".join(sys.argv)
    tables, results = [], []
    for preset in FLAGS.presets:
        for batch_size in (int(b) for b in FLAGS.batch_sizes):
            profiles = [{"jax": profile_jax, "torch": profile_torch}[f](preset, batch_size,
                                                                         FLAGS.steps)
                        for f in FLAGS.frameworks]
            results.append({"preset": preset, "batch_size": batch_size, "profiles": profiles})
            tables.append(f"CMMA, {preset} preset, batch {batch_size}, float32, {FLAGS.steps} "
                          f"profiled steps:\n\n" + markdown(profiles, FLAGS.top))
    table = (f"{cmd}\n\n{env['processor']}, {env['cpu_count']} CPUs, jax {env['jax']}, "
             f"{env['time']}.\n\n" + "\n\n".join(tables))
    tt.write(FLAGS.out, {"command": cmd, "environment": env, "results": results}, table)
    print(table)


if __name__ == "__main__":
    app.run(main)
