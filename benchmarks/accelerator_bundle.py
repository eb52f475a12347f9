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
    python benchmarks/accelerator_bundle.py export-params OUT_DIR WORKDIR [WORKDIR ...]
        The latest parameters of each training workdir (no optimizer state), rounded to float16,
        in OUT_DIR/params_<model>_<i>of<n>.npz (np.savez_compressed, at most ~15 MiB each; keys:
        the '/'-joined paths of the parameter tree; `__meta__`: the model, step, config,
        attribute names and metrics.jsonl rows as JSON). Refuses to leave more than 8 files
        (16 MiB each, 64 MiB in all) in OUT_DIR: what the device machine sends back.
    python benchmarks/accelerator_bundle.py import-params SRC_DIR DEST_DIR
        Rebuilds, from the params_*.npz files in SRC_DIR, one training workdir per model in
        DEST_DIR/<model> (config.json, attributes.json, metrics.jsonl and a checkpoint written by
        cmma_jax.checkpoints, hashed): `cmma_jax.workdirs.load_model`, launch/evaluate.py,
        launch/generate.py and launch/learning_curves.py read it, and launch/train.py resumes it
        (`--resume`: the checkpoint also holds a fresh data-loader position; the optimizer
        state is a fresh one from `init_state`).

The summary and data subcommands use only the standard library and numpy/Pillow (and
cmma_jax.data.lfw for the LFW layout), so that they run before anything else is installed; no JAX
is imported. export-params and import-params import JAX and cmma_jax (after the setup part).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from param_files import (MIB, _listing, _read_jsonl, check_sendable,  # noqa: E402
                         export_params, import_params)

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
    result = {"environment": env, "parts": parts, "tests": _tests(work), "peaks": peaks,
              "throughput": throughput, "input_pipeline": pipeline,
              "pair": _pair(out_dir, work)}
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
    lines += _pair_markdown(s.get("pair"))
    return "\n".join(lines)


def _pair(out_dir: str, work: str) -> dict | None:
    """The pair part's outcome per model: training (steps, epochs, seconds, how it stopped, the
    validation bound), the test-split evaluation, the files of its parameters; and every file in
    OUT_DIR with its size."""
    settings = _load(os.path.join(work, "pair_settings.json"))
    if settings is None:
        return None
    rec = os.path.join(work, "pair")
    results = _load(os.path.join(rec, "eval", "results.json")) or {}
    evaluated = {m.get("model"): m for m in results.get("models", [])}
    export = _load(os.path.join(rec, "export.json")) or {}
    resumed = _load(os.path.join(rec, "resumed.json")) or {}
    models = {}
    for name in settings["models"]:
        train = _load(os.path.join(rec, f"train_{name}.json"))
        if train is None:
            continue
        rows = _read_jsonl(os.path.join(rec, name, "metrics.jsonl"))
        config = _load(os.path.join(rec, name, "config.json")) or {}
        batch = (config.get("training") or {}).get("batch_size") or settings["batch_size"]
        epoch = lambda step: None if step is None else round(  # noqa: E731
            step * batch / settings["num_train"], 2)
        val = [(r["step"], r["val_elbo"]) for r in rows if "val_elbo" in r]
        rates = sorted(r["steps_per_sec"] for r in rows[1:] if "steps_per_sec" in r)
        start = (resumed.get(name) or {}).get("step", 0)
        step = train.get("last_checkpoint")
        best = max(val, key=lambda v: v[1]) if val else None
        m = evaluated.get(name) or {}
        models[name] = {
            **train, "start_step": start, "steps": step,
            "steps_this_run": None if step is None else step - start,
            "epochs": epoch(step), "steps_per_sec_median": rates[len(rates) // 2] if rates
            else None,
            "validation_points": len(val),
            "final_val_elbo": val[-1][1] if val else None,
            "final_val_elbo_step": val[-1][0] if val else None,
            "best_val_elbo": best[1] if best else None,
            "best_val_elbo_epoch": epoch(best[0]) if best else None,
            "test_bound": (m.get("bound") or {}).get("nats"),
            "test_iwae": {k: v.get("nats") for k, v in (m.get("iwae") or {}).items()},
            "test_parzen": (m.get("parzen") or {}).get("nats"),
            "parzen_sigma": (m.get("parzen") or {}).get("sigma"),
            "evaluated_step": m.get("step"),
            "param_files": (export.get("models", {}).get(name) or {}).get("files", []),
            "rounding": (export.get("models", {}).get(name) or {}).get("rounding")}
    listing = _listing(out_dir)

    def exit_of(name):
        try:
            with open(os.path.join(rec, name)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    return {**settings, "models": models, "evaluate_exit": exit_of("evaluate.exit"),
            "curves_exit": exit_of("curves.exit"),
            "curves_png": os.path.exists(os.path.join(rec, "learning_curves.png")), "roundtrip": _load(os.path.join(rec, "roundtrip.json")),
            "test_faces": (next(iter(evaluated.values()), {}).get("bound") or {}).get(
                "num_images"),
            "evaluation_notes": results.get("notes", []), "files": listing,
            "files_problems": check_sendable(listing)}


def _fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def _pair_markdown(p: dict | None) -> list[str]:
    if not p:
        return []
    lines = ["", "## The pair on LFW (launch/train.py, launch/evaluate.py)", "",
             f"{p['preset']} preset, batch {p['batch_size']}, {p['num_train']} training and "
             f"{p['num_validation']} validation faces of {p['data']}"
             + (f"; resumed from {', '.join(p['resumed_from'])} (a fresh optimizer state)"
                if p.get("resumed_from") else "") + ". Bounds in nats per face (higher is "
             f"better), test split ({p.get('test_faces') or '?'} faces).", "",
             "| model | steps (this run) | epochs | seconds (share) | stopped | steps/s "
             "| final val bound | best val bound (epoch) | test bound | test IWAE | Parzen |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for name, m in p["models"].items():
        stopped = ("SIGTERM, checkpointed" if m["stopped_by_sigterm"]
                   else "finished" if m["exit"] == 0 else f"exit {m['exit']}")
        iwae = ", ".join(f"K={k}: {_fmt(v)}" for k, v in m["test_iwae"].items()) or "–"
        lines.append(
            f"| {name} | {m['steps']} ({m['steps_this_run']}) | {_fmt(m['epochs'], '.2f')} "
            f"| {m['seconds']} ({m['share']}) | {stopped} | {_fmt(m['steps_per_sec_median'])} "
            f"| {_fmt(m['final_val_elbo'])} | {_fmt(m['best_val_elbo'])} "
            f"({_fmt(m['best_val_elbo_epoch'], '.2f')}) | {_fmt(m['test_bound'])} | {iwae} "
            f"| {_fmt(m['test_parzen'])} |")
    lines += [f"- note: {n}" for n in p.get("evaluation_notes", [])]
    lines += ["", f"launch/evaluate.py: exit {p.get('evaluate_exit')} (124: cut by its time "
              f"limit); launch/learning_curves.py: exit {p.get('curves_exit')}, "
              + ("work/pair/learning_curves.png in logs.tar.gz" if p.get("curves_png") else
                 "no PNG (no matplotlib there: draw it here from the imported workdirs)")
              + "; the validation bound of each run in work/pair/<model>/metrics.jsonl."]
    lines += ["", "Files sent back (float16 parameters in params_*.npz: "
              "`python benchmarks/accelerator_bundle.py import-params OUT_DIR DEST`; sizes when "
              "this summary was written, before its own and logs.tar.gz's last rewrite):", ""]
    lines += [f"- {n}: {b / MIB:.2f} MiB" for n, b in p["files"].items()]
    lines += [f"- PROBLEM: {x}" for x in p.get("files_problems", [])]
    rt = p.get("roundtrip")
    if rt:
        lines += ["", "Round trip (import-params, load_model): " + "; ".join(
            f"{k}: loads {v['loads']}, within float16 rounding "
            f"{v.get('within_float16_rounding')} (max |diff| {v.get('max_abs_difference', 0):.2g})"
            for k, v in rt.items())]
    return lines


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
    p = sub.add_parser("export-params")
    p.add_argument("out_dir")
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--report", help="Also write the report (JSON) here.")
    p = sub.add_parser("import-params")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--data_dir", help="The raw dataset folder now (e.g. .lfw).")
    p.add_argument("--prepared_dir", help="Where the prepared dataset is (or goes) now.")
    p.add_argument("--resume", action="store_true", help="Make the checkpoint resumable by "
                   "launch/train.py (adds a fresh data-loader position; reads the dataset).")
    p.add_argument("--compare", help="A folder of the original workdirs (<model>/) to compare "
                   "the imported parameters with.")
    p.add_argument("--report", help="Also write the report (JSON) here.")
    args = parser.parse_args()
    if args.cmd == "lfw-subset":
        print(f"{lfw_subset(args.src, args.dest, args.rows)} faces copied to {args.dest}")
    elif args.cmd == "fake-lfw":
        fake_lfw(args.dest, args.rows)
    elif args.cmd == "consumer":
        print(f"{consumer(args.path, args.model, args.batch):.1f}")
    elif args.cmd == "summary":
        summary(args.out_dir, args.work_dir)
    elif args.cmd in ("export-params", "import-params"):
        if args.cmd == "export-params":
            report = export_params(args.out_dir, args.workdirs)
        else:
            report = import_params(args.src, args.dest, data_dir=args.data_dir,
                                   prepared_dir=args.prepared_dir, resume=args.resume,
                                   compare=args.compare)
        text = json.dumps(report, indent=1)
        if args.report:
            with open(args.report, "w") as f:
                f.write(text + "\n")
        print(text)
        if args.cmd == "import-params" and not all(
                r["loads"] and r.get("within_float16_rounding", True) for r in report.values()):
            sys.exit("import-params: the imported parameters do not match")


if __name__ == "__main__":
    main()
