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


# ---------------------------------------------------------------------------------------------
# Parameters: exported on the device (float16, split into files the device tool sends back) and
# imported here (or on the device, to resume) as training workdirs.

PARAMS_PREFIX = "params_"
META_KEY = "__meta__"
MIB = 1 << 20
# What the device tool sends back: at most 8 files, 16 MiB each, 64 MiB together.
MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES = 8, 16 * MIB, 64 * MIB
# Raw float16 bytes per parameter file: np.savez_compressed only shrinks them (deflate adds at
# most a few bytes per 16 KiB block to data it cannot compress), so a file stays under 16 MiB.
PART_BYTES = 15 * MIB
FLOAT16_MAX = 65504.0
# The check's own files, always among those sent back.
CHECK_FILES = ("summary.json", "summary.md", "logs.tar.gz")


def _leaf_name(path) -> str:
    """'/'-joined keys of a tree path (dict keys, attribute names, sequence indices)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def flat_params(params) -> dict:
    """{'/'-joined path: host array} of a parameter tree, in the tree's order."""
    import jax
    import numpy as np

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = _leaf_name(path)
        if name in out or name == META_KEY or "#" in name:
            raise ValueError(f"parameter path {name!r} cannot be a key of the export")
        out[name] = np.asarray(leaf)
    return out


def to_float16(flat: dict) -> tuple[dict, dict]:
    """Every leaf cast to float16, after checking that it is finite and within float16's range
    (|x| <= 65504); with the largest rounding errors."""
    import numpy as np

    out, max_abs_err, max_rel_err, max_abs, zeroed = {}, 0.0, 0.0, 0.0, 0
    for name, x in flat.items():
        x = np.asarray(x, np.float32)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: non-finite values; nothing exported")
        top = float(np.max(np.abs(x))) if x.size else 0.0
        if top > FLOAT16_MAX:
            raise ValueError(f"{name}: |x| up to {top:g}, beyond float16's {FLOAT16_MAX:g}")
        h = x.astype(np.float16)
        if not np.all(np.isfinite(h)):
            raise ValueError(f"{name}: non-finite after the float16 cast")
        err = np.abs(h.astype(np.float32) - x)
        normal = np.abs(x) >= np.finfo(np.float16).tiny
        max_abs = max(max_abs, top)
        max_abs_err = max(max_abs_err, float(err.max()) if x.size else 0.0)
        if normal.any():
            max_rel_err = max(max_rel_err, float((err[normal] / np.abs(x[normal])).max()))
        zeroed += int(np.count_nonzero((h == 0) & (x != 0)))
        out[name] = h
    return out, {"max_abs_value": max_abs, "max_abs_rounding_error": max_abs_err,
                 "max_relative_rounding_error_normal": max_rel_err,
                 "values_flushed_to_zero": zeroed}


def plan_parts(arrays: dict, part_bytes: int = PART_BYTES) -> list[dict]:
    """The arrays grouped into parts of at most `part_bytes` raw bytes, in order; an array
    larger than that is cut along its first axis into pieces 'name#0', 'name#1', ..."""
    pieces = []
    for name, a in arrays.items():
        if a.nbytes <= part_bytes:
            pieces.append((name, a))
            continue
        if a.ndim == 0 or a.shape[0] < 2:
            raise ValueError(f"{name} ({a.nbytes} bytes) cannot be cut into {part_bytes}-byte "
                             "pieces")
        row = a.nbytes // a.shape[0]
        rows = max(1, part_bytes // row)
        for i, start in enumerate(range(0, a.shape[0], rows)):
            pieces.append((f"{name}#{i}", a[start:start + rows]))
    parts, current, size = [], {}, 0
    for name, a in pieces:
        if current and size + a.nbytes > part_bytes:
            parts.append(current)
            current, size = {}, 0
        current[name] = a
        size += a.nbytes
    if current:
        parts.append(current)
    return parts


def _read_jsonl(path: str) -> list:
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a kill mid-write
    except OSError:
        pass
    return rows


def _listing(out_dir: str) -> dict:
    return {n: os.path.getsize(os.path.join(out_dir, n)) for n in sorted(os.listdir(out_dir))
            if os.path.isfile(os.path.join(out_dir, n))}


def export_params(out_dir: str, workdirs_: list[str], *, part_bytes: int = PART_BYTES,
                  max_files: int = MAX_FILES) -> dict:
    """Writes each workdir's latest parameters (no optimizer state) as float16 .npz parts in
    `out_dir` (see the module docstring); returns a report. Workdirs without a checkpoint are
    skipped (named in the report). Raises ValueError, before writing anything, when the files
    would not fit in what the device tool sends back."""
    import numpy as np

    sys.path.insert(0, REPO)
    from cmma_jax import checkpoints, workdirs

    os.makedirs(out_dir, exist_ok=True)
    plans, report = [], {"models": {}, "skipped": [], "files": {}}
    for workdir in workdirs_:
        if checkpoints.latest_step(workdir) is None:
            report["skipped"].append(f"{workdir}: no checkpoint")
            continue
        model = workdirs.load_model(workdir, best=False)
        flat = flat_params(model.params)
        half, rounding = to_float16(flat)
        with open(os.path.join(workdir, workdirs.CONFIG_FILE)) as f:
            config = json.load(f)
        meta = {"format": 1, "model": model.name, "step": model.step,
                "dtype": "float16 (rounded from the float32 parameters)",
                "num_params": int(sum(a.size for a in flat.values())),
                "shapes": {k: list(a.shape) for k, a in flat.items()},
                "config": config, "attribute_names": list(model.attribute_names),
                "rounding": rounding, "source_workdir": os.path.abspath(workdir)}
        plans.append((model.name, meta, plan_parts(half, part_bytes),
                      _read_jsonl(os.path.join(workdir, "metrics.jsonl"))))
    names = [m for m, *_ in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"two workdirs of one model: {names}")
    others = {n for n in os.listdir(out_dir) if not n.startswith(PARAMS_PREFIX)}
    count = len(others | set(CHECK_FILES)) + sum(len(parts) for _, _, parts, _ in plans)
    if count > max_files:
        raise ValueError(f"{count} files would be sent back (the check's own and "
                         f"{[(m, len(p)) for m, _, p, _ in plans]} parameter files), over "
                         f"{max_files}; nothing exported")
    for old in os.listdir(out_dir):
        if old.startswith(PARAMS_PREFIX):
            os.remove(os.path.join(out_dir, old))
    for name, meta, parts, metrics in plans:
        written = []
        for i, part in enumerate(parts, 1):
            file_meta = dict(meta, part=i, parts=len(parts), keys=sorted(part))
            if i == 1:
                file_meta["metrics"] = [r for r in metrics if r.get("step", 0) <= meta["step"]]
            path = os.path.join(out_dir, f"{PARAMS_PREFIX}{name}_{i}of{len(parts)}.npz")
            np.savez_compressed(path, **part, **{META_KEY: np.array(json.dumps(file_meta))})
            written.append(os.path.basename(path))
        report["models"][name] = {
            "step": meta["step"], "num_params": meta["num_params"], "files": written,
            "float32_bytes": 4 * meta["num_params"], "rounding": meta["rounding"]}
    listing = _listing(out_dir)
    report["files"] = listing
    report["problems"] = check_sendable(listing)
    if report["problems"]:
        raise ValueError("; ".join(report["problems"]))
    return report


def check_sendable(listing: dict) -> list[str]:
    """What keeps a folder's files {name: bytes} from being sent back by the device tool."""
    problems = [f"{n}: {b / MIB:.1f} MiB, over {MAX_FILE_BYTES // MIB} MiB"
                for n, b in listing.items() if b > MAX_FILE_BYTES]
    if len(listing) > MAX_FILES:
        problems.append(f"{len(listing)} files, over {MAX_FILES}")
    if sum(listing.values()) > MAX_TOTAL_BYTES:
        problems.append(f"{sum(listing.values()) / MIB:.1f} MiB in all, over "
                        f"{MAX_TOTAL_BYTES // MIB} MiB")
    return problems


def read_exported(src: str) -> dict:
    """{model: (meta of part 1, {leaf name: float16 array})} from the params_*.npz in `src`
    (every part of a model must be there, all of one step)."""
    import numpy as np

    found: dict = {}
    for path in sorted(glob.glob(os.path.join(src, f"{PARAMS_PREFIX}*.npz"))):
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz[META_KEY]))
            arrays = {k: npz[k] for k in npz.files if k != META_KEY}
        found.setdefault(meta["model"], []).append((meta, arrays))
    out = {}
    for model, parts in found.items():
        parts.sort(key=lambda p: p[0]["part"])
        n, steps = parts[0][0]["parts"], {p[0]["step"] for p in parts}
        if [p[0]["part"] for p in parts] != list(range(1, n + 1)) or len(steps) != 1:
            raise ValueError(f"{src}: the {model} files are not parts 1..{n} of one step "
                             f"(found parts {[p[0]['part'] for p in parts]}, steps {steps})")
        merged: dict = {}
        for _, arrays in parts:
            merged.update(arrays)
        leaves = {}
        for name in parts[0][0]["shapes"]:
            if name in merged:
                leaves[name] = merged[name]
            else:
                pieces = sorted((k for k in merged if k.startswith(name + "#")),
                                key=lambda k: int(k.rsplit("#", 1)[1]))
                if not pieces:
                    raise ValueError(f"{src}: {model} leaf {name} missing")
                leaves[name] = np.concatenate([merged[k] for k in pieces])
        out[model] = (parts[0][0], leaves)
    return out


def import_params(src: str, dest: str, *, data_dir: str | None = None,
                  prepared_dir: str | None = None, resume: bool = False,
                  compare: str | None = None) -> dict:
    """Rebuilds a training workdir per model from the params_*.npz in `src` (see the module
    docstring); returns a report. `compare`: a folder of the original workdirs (<model>/), whose
    latest parameters the imported ones must match within float16 rounding."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    sys.path.insert(0, REPO)
    from cmma_jax import checkpoints, files, workdirs
    from cmma_jax.models import MODELS

    exported = read_exported(src)
    if not exported:
        raise FileNotFoundError(f"no {PARAMS_PREFIX}*.npz in {src}")
    report = {}
    for name, (meta, leaves) in exported.items():
        workdir = os.path.join(dest, name)
        if checkpoints.latest_step(workdir) is not None:
            raise FileExistsError(f"{workdir} already holds checkpoints; import elsewhere")
        config = workdirs.upgrade_config(ml_collections.ConfigDict(meta["config"]))
        with config.unlocked():
            if data_dir:
                config.data.data_dir = data_dir
            if prepared_dir:
                config.data.prepared_dir = prepared_dir
        names = tuple(meta["attribute_names"])
        model_lib = MODELS[config.model.name]
        example = workdirs.example_batch(int(config.training.batch_size), len(names))
        # The init_state of the run (its seed): a state of the right structure and dtypes, whose
        # parameters are replaced; its optimizer state is the fresh one of init_state.
        init_key = jax.random.split(jax.random.key(int(config.training.seed)), 3)[0]
        state = model_lib.init_state(init_key, config, example)
        template, treedef = jax.tree_util.tree_flatten_with_path(state.params)
        wanted = [_leaf_name(p) for p, _ in template]
        if set(wanted) != set(leaves):
            raise ValueError(f"{name}: the exported leaves do not match the model's: missing "
                             f"{sorted(set(wanted) - set(leaves))[:5]}, extra "
                             f"{sorted(set(leaves) - set(wanted))[:5]}")
        new = []
        for (path, leaf), key in zip(template, wanted):
            if tuple(leaves[key].shape) != tuple(leaf.shape):
                raise ValueError(f"{name} {key}: shape {leaves[key].shape} != {leaf.shape}")
            new.append(jnp.asarray(leaves[key], dtype=leaf.dtype))
        step = int(meta["step"])
        state = state.replace(params=jax.tree_util.tree_unflatten(treedef, new),
                              step=jnp.asarray(step, dtype=state.step.dtype))
        workdirs.write_records(workdir, config, names)
        metrics = [r for r in meta.get("metrics", []) if r.get("step", 0) <= step]
        files.write_text(os.path.join(workdir, "metrics.jsonl"),
                         "".join(json.dumps(r) + "\n" for r in metrics))
        train_data = position = None
        if resume:
            # launch/train.py restores the data loader's position with the state: a fresh one
            # (the data order starts again), of the same kind as the run's (grain, or resident).
            from cmma_jax import presets
            from cmma_jax import train as train_lib

            resolved = presets.resolve_config(config)
            train_data = train_lib.load_data(
                resolved, "train",
                batch_size=int(resolved.training.batch_size) // jax.process_count())
            position = getattr(train_data.iterator, "grain_iterator", train_data.iterator)
        manager = checkpoints.manager(workdir)
        try:
            checkpoints.save(manager, step, state, position)
            manager.wait_until_finished()
        finally:
            manager.close()
            if train_data is not None:
                train_data.close()
        checkpoints.record_hashes(workdir, [step])
        entry = {"workdir": workdir, "step": step, "num_params": meta["num_params"],
                 "metrics_rows": len(metrics), "resumable": resume}
        loaded = workdirs.load_model(workdir, best=False)
        got = flat_params(loaded.params)
        entry["loads"] = loaded.step == step and all(
            np.array_equal(got[k], leaves[k].astype(np.float32)) for k in leaves)
        if compare:
            original = flat_params(workdirs.load_model(os.path.join(compare, name),
                                                       best=False).params)
            errs, ok = [], True
            for k, ref in original.items():
                ref = np.asarray(ref, np.float32)
                err = np.abs(got[k] - ref)
                # float16 round to nearest: half a unit in the last place (2^-11 relative),
                # 2^-25 below the normal range.
                ok &= bool(np.all(err <= np.abs(ref) * 2.0 ** -11 + 2.0 ** -24))
                errs.append(float(err.max()) if err.size else 0.0)
            entry["compared_with"] = os.path.join(compare, name)
            entry["max_abs_difference"] = max(errs)
            entry["within_float16_rounding"] = ok
        report[name] = entry
    return report


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
