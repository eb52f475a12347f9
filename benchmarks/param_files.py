"""Parameters that travel from the accelerator: exported on the device (float16, split into files
the device tool sends back) and imported here (or on the device, to resume) as training workdirs.
The `export-params` and `import-params` commands of `benchmarks/accelerator_bundle.py` (see its
docstring and benchmarks/ACCELERATOR.md); the summary there reads their listings.

Only the standard library at import time: JAX, numpy and cmma_jax are imported by the functions
that need them (after the accelerator check's setup part).
"""

from __future__ import annotations

import glob
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
