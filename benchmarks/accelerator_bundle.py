"""Helpers of `benchmarks/accelerator_check.sh` (see benchmarks/ACCELERATOR.md).

    python benchmarks/accelerator_bundle.py lfw-subset SRC DEST --rows 2000
        An LFW folder of the first `--rows` rows of SRC's attribute file and their faces (the
        same layout and files, copied): small enough to travel to the accelerator (the whole
        prepared LFW is 146 MB, over the 64 MiB a device call carries).
    python benchmarks/accelerator_bundle.py fake-lfw DEST --rows 300
        An LFW-format folder of random faces (when no real LFW is at hand: the dry run).
    python benchmarks/accelerator_bundle.py consumer THROUGHPUT_JSON --model cmma --batch 256
        The images/s the fastest step of that model and batch consumes (for input_pipeline.py).
    python benchmarks/accelerator_bundle.py summary OUT_DIR WORK_DIR
        OUT_DIR/summary.json and OUT_DIR/summary.md from the parts' outputs in WORK_DIR.

Only the standard library and numpy/Pillow (and cmma_jax.data.lfw for the LFW layout) are used,
so that it runs before anything else is installed; no JAX is imported.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lfw_subset(src: str, dest: str, rows: int) -> int:
    """Copies the first `rows` rows of SRC's attribute file and their faces to DEST."""
    sys.path.insert(0, REPO)
    from cmma_jax.data import lfw

    attr = lfw.find_attribute_file(src)
    layout = lfw.find_layout(src)
    with open(attr) as f:
        lines = f.read().splitlines()
    header, body = lines[:2], [line for line in lines[2:] if line.strip()][:rows]
    copied = 0
    for line in body:
        person, imagenum = line.split("\t")[:2]
        rel = layout.path(person, int(imagenum))
        target = os.path.join(dest, os.path.relpath(layout.image_dir, src), rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(layout.image_dir, rel), target)
        copied += 1
    header = [f"# {len(body)} rows (the first of {os.path.basename(attr)}, for the accelerator "
              "check)"] + header[1:]
    with open(os.path.join(dest, os.path.basename(attr)), "w") as f:
        f.write("\n".join(header + body) + "\n")
    return copied


def fake_lfw(dest: str, rows: int) -> None:
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    sys.path.insert(0, REPO)
    import input_pipeline

    input_pipeline.write_lfw_like_folder(dest, rows)


def consumer(path: str, model: str, batch: int) -> float:
    """The highest images/s of `model` at `batch` in a train_throughput JSON (0 if absent)."""
    try:
        with open(path) as f:
            records = json.load(f)["results"]
    except (OSError, ValueError, KeyError):
        return 0.0
    rates = [r["images_per_second"] for r in records
             if r["model"] == model and r["batch_size"] == batch]
    return max(rates, default=0.0)


# ---------------------------------------------------------------------------------------------
# Summary


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _tests(work: str) -> dict | None:
    path = os.path.join(work, "tests.xml")
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return {"error": "tests.xml unreadable (the run was cut off?)"}
    out = {"passed": [], "failed": [], "skipped": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out["failed"].append(name)
        elif case.find("skipped") is not None:
            out["skipped"].append(name)
        else:
            out["passed"].append(name)
    return out


def summary(out_dir: str, work: str) -> dict:
    parts = _load(os.path.join(work, "parts.json")) or []
    env = _load(os.path.join(work, "env.json"))
    throughput = []
    peaks = {}
    for path in sorted(glob.glob(os.path.join(work, "throughput_*.json"))):
        payload = _load(path)
        if payload:
            throughput += payload.get("results", [])
            peaks = payload.get("peak_flops_per_second", peaks)
    pipeline = []
    for path in sorted(glob.glob(os.path.join(work, "input_*.json"))):
        payload = _load(path)
        if payload:
            pipeline += payload.get("rows", [])
    lfw = _load(os.path.join(work, "lfw_train.json"))
    result = {"environment": env, "parts": parts, "tests": _tests(work), "peaks": peaks,
              "throughput": throughput, "input_pipeline": pipeline, "lfw_training": lfw}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(markdown(result) + "\n")
    return result


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def markdown(s: dict) -> str:
    env = s.get("environment") or {}
    lines = ["# Accelerator check", "",
             f"Machine: {env.get('devices', '?')}, backend {env.get('backend', '?')}, "
             f"{env.get('cpu_count', '?')} CPUs, jax {env.get('jax', '?')}, python "
             f"{env.get('python', '?')}; {env.get('time', '')}.", "", "## Parts", "",
             "| part | status | seconds | limit s |", "| --- | --- | ---: | ---: |"]
    for p in s["parts"]:
        lines.append(f"| {p['name']} | {p['status']} | {p['seconds']} | {p['limit']} |")
    t = s.get("tests")
    if t:
        lines += ["", "## Tests on the device", ""]
        if "error" in t:
            lines.append(t["error"])
        else:
            lines.append(f"{len(t['passed'])} passed, {len(t['failed'])} failed, "
                         f"{len(t['skipped'])} skipped.")
            lines += [f"- FAILED {n}" for n in t["failed"]]
    if s["peaks"]:
        lines += ["", "## Peaks", ""]
        for dtype, p in s["peaks"].items():
            theory = (f"{p['theoretical'] / 1e12:.1f} TFLOP/s ({p['theoretical_source']})"
                      if p.get("theoretical") else "not readable")
            lines.append(f"- {dtype}: measured matmul {p['measured'] / 1e12:.1f} TFLOP/s; "
                         f"theoretical {theory}; utilisation against the "
                         f"{p['used_source']} peak.")
    if s["throughput"]:
        lines += ["", "## Train step throughput", "",
                  "| model | batch | dtype | conv_impl | compile s | s/step | images/s "
                  "| model GFLOP/step | executed GFLOP/step | MFU (vs peak) "
                  "| MFU vs measured matmul | flags |",
                  "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| --- |"]
        for r in s["throughput"]:
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['dtype']} | {r['resolved_conv_impl']} "
                f"| {r['compile_seconds']:.1f} | {r['seconds_per_step_median']:.4f} "
                f"| {r['images_per_second']:,.0f} | {r['model_flops_per_step'] / 1e9:.1f} "
                f"| {r['executed_flops_per_step'] / 1e9:.1f} "
                f"| {_pct(r['model_flops_utilisation'])} "
                f"| {_pct(r['model_flops_utilisation_vs_measured_matmul'])} "
                f"| {'; '.join(r['flags'])} |")
    if s["input_pipeline"]:
        lines += ["", "## Input pipeline against the step", "",
                  "| dataset | batch | workers | images/s | step consumes images/s | ratio |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in s["input_pipeline"]:
            lines.append(f"| {r['dataset']} | {r['batch_size']} | {r['workers']} "
                         f"| {r['images_per_second']:,.0f} "
                         f"| {r['consumer_images_per_second']:,.0f} "
                         f"| {r['ratio_to_consumer']:.2f}x |")
    lfw = s.get("lfw_training")
    if lfw:
        lines += ["", "## CMMA on LFW (launch/train.py)", "",
                  f"{lfw.get('note', '')}", "",
                  f"Steps logged: {lfw.get('last_step')}; steps/s (median of the logged "
                  f"intervals after the first): {lfw.get('steps_per_sec_median')}; images/s: "
                  f"{lfw.get('images_per_sec_median')}; last loss: {lfw.get('last_loss')}."]
    return "\n".join(lines)


def lfw_metrics(workdir: str, out: str, note: str) -> None:
    """Reads a training workdir's metrics.jsonl into a small JSON (steps/s and the loss)."""
    rows = []
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pass
    rates = sorted(r["steps_per_sec"] for r in rows[1:] if "steps_per_sec" in r)
    images = sorted(r["images_per_sec"] for r in rows[1:] if "images_per_sec" in r)
    med = lambda v: v[len(v) // 2] if v else None  # noqa: E731
    with open(out, "w") as f:
        json.dump({"note": note, "logged": len(rows),
                   "last_step": rows[-1]["step"] if rows else None,
                   "last_loss": rows[-1].get("loss") if rows else None,
                   "steps_per_sec_median": med(rates), "images_per_sec_median": med(images),
                   "metrics": rows[-20:]}, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("lfw-subset")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--rows", type=int, default=2000)
    p = sub.add_parser("fake-lfw")
    p.add_argument("dest")
    p.add_argument("--rows", type=int, default=300)
    p = sub.add_parser("consumer")
    p.add_argument("path")
    p.add_argument("--model", default="cmma")
    p.add_argument("--batch", type=int, required=True)
    p = sub.add_parser("summary")
    p.add_argument("out_dir")
    p.add_argument("work_dir")
    p = sub.add_parser("lfw-metrics")
    p.add_argument("workdir")
    p.add_argument("out")
    p.add_argument("--note", default="")
    args = parser.parse_args()
    if args.cmd == "lfw-subset":
        print(f"{lfw_subset(args.src, args.dest, args.rows)} faces copied to {args.dest}")
    elif args.cmd == "fake-lfw":
        fake_lfw(args.dest, args.rows)
    elif args.cmd == "consumer":
        print(f"{consumer(args.path, args.model, args.batch):.1f}")
    elif args.cmd == "summary":
        summary(args.out_dir, args.work_dir)
    elif args.cmd == "lfw-metrics":
        lfw_metrics(args.workdir, args.out, args.note)


if __name__ == "__main__":
    main()
