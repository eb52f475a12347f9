"""The trainer's loop overhead: `cmma_jax.train` steps/s against the bare jitted step it runs.

For one model, preset and batch size, alternating `--repeats` times and in this order:
  bare: the step the trainer compiles (`train_throughput.Step`: `train.make_step`, one batch
    already on the devices, reused; no data, no logging), timed over `--steps` steps;
  trainer (one per input path, `--paths`: "grain" and "resident", `data.device_resident`):
    `train.train_and_evaluate` resumed in one temporary workdir for `--steps` more steps, on the
    real data, with logging every `--log_every` steps. Its rate is the trainer's own
    `steps_per_sec` of metrics.jsonl, which counts everything between steps (the input pipeline,
    putting the batch on the devices, the metric fetches and non-finite checks at each log, the
    progress line, metrics.jsonl) and leaves out what runs every few hundred steps (checkpoints,
    sample grids, the validation bound: one checkpoint at the end of each call here, no hooks).
    The first log interval of each call holds the compilation and is dropped.
The overhead of a path is 1 - trainer rate / bare rate, each repeat against the bare timing of
the same repeat, and its median over repeats is reported.

    python benchmarks/loop_overhead.py --dataset lfw --data_dir ../shared/data/lfw
    python benchmarks/loop_overhead.py --preset paper --batch_size 64 --steps 60 --log_every 10

Writes `--out` (JSON) and prints a Markdown table (also written next to the JSON, `.md`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput  # noqa: E402  (benchmarks/train_throughput.py)

from cmma_jax import configs, data, train  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cmma", help="cmma, cvae, cgan or vlae")
    parser.add_argument("--preset", default="small", help="paper, small or tiny")
    parser.add_argument("--batch_size", type=int, default=16, help="global batch size")
    parser.add_argument("--conv_impl", default="auto", help="model.conv_impl")
    parser.add_argument("--dataset", default="synthetic_faces", help="synthetic_faces, celeba, lfw")
    parser.add_argument("--data_dir", default=None, help="the raw dataset folder (celeba, lfw)")
    parser.add_argument("--prepared_dir", default=None,
                        help="prepared datasets (default: the package's cache)")
    parser.add_argument("--data_options", default="",
                        help="dataset builder options, key=value, comma-separated "
                        "(e.g. num_train=512 for a small synthetic_faces)")
    parser.add_argument("--paths", default="grain,resident", help="input paths: grain, resident")
    parser.add_argument("--steps", type=int, default=250, help="steps per timed repeat, each kind")
    parser.add_argument("--log_every", type=int, default=50,
                        help="the trainer's log interval (a metric fetch each)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats")
    parser.add_argument("--out", default="benchmarks/results/loop_overhead.json",
                        help="JSON output path")
    args = parser.parse_args(argv)
    if args.steps < 2 * args.log_every or args.steps % args.log_every:
        parser.error("--steps must be a multiple of --log_every, at least twice it.")
    args.paths = args.paths.split(",")
    return args


RESIDENT = {"grain": "false", "resident": "true"}


def trainer_config(args, workdir_steps: int):
    config = configs.CONFIGS[args.model].get_config(args.preset)
    config.model.conv_impl = args.conv_impl
    config.data.name = args.dataset
    config.data.data_dir = args.data_dir
    config.data.prepared_dir = args.prepared_dir
    if args.data_options:
        config.data.options = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in
                               (item.split("=", 1) for item in args.data_options.split(","))}
    config.training.batch_size = args.batch_size
    config.training.num_steps = workdir_steps
    config.training.log_every = args.log_every
    config.training.checkpoint_every = args.steps
    config.training.sample_every = 10 ** 9  # the sample grid only after the last step
    config.training.num_eval = 0
    config.training.keep_checkpoints = 1
    return config


def trainer_rate(args, workdir: str, path: str, until: int) -> float:
    """Steps/s of the trainer from its own metrics rows of this call (the first dropped)."""
    config = trainer_config(args, until)
    config.data.device_resident = RESIDENT[path]
    start = until - args.steps
    train.train_and_evaluate(config, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    rows = [r for r in rows if start + args.log_every < r["step"] <= until]
    if not rows:
        raise ValueError("--steps must hold at least two --log_every intervals.")
    seconds = sum(args.log_every / r["steps_per_sec"] for r in rows)
    return len(rows) * args.log_every / seconds


def main(argv=None):
    args = parse_args(argv)
    num_attributes = len(data.attribute_names_from_config(trainer_config(args, 1).data))
    step = train_throughput.Step(args.model, args.preset, args.batch_size, args.conv_impl,
                                 num_attributes=num_attributes)
    records = {"bare": [], **{p: [] for p in args.paths}}
    with tempfile.TemporaryDirectory() as tmp:
        workdirs = {p: os.path.join(tmp, p) for p in args.paths}
        done = {p: 0 for p in args.paths}
        for repeat in range(args.repeats):
            records["bare"].append(args.steps / step.time(args.steps))
            for p in args.paths:
                done[p] += args.steps
                records[p].append(trainer_rate(args, workdirs[p], p, done[p]))
            print(f"# repeat {repeat + 1}: " + ", ".join(
                f"{k} {v[-1]:.2f} steps/s" for k, v in records.items()), flush=True)
    overheads = {p: [1 - t / b for t, b in zip(records[p], records["bare"])] for p in args.paths}
    env = train_throughput.environment()
    payload = {"environment": env, "model": args.model, "preset": args.preset,
               "batch_size": args.batch_size, "conv_impl": step.resolved_impl,
               "dataset": args.dataset, "steps_per_repeat": args.steps,
               "log_every": args.log_every, "steps_per_sec": records,
               "overhead": overheads,
               "median_overhead": {p: statistics.median(v) for p, v in overheads.items()}}
    lines = [f"{args.model}/{args.preset}, batch {args.batch_size}, conv {step.resolved_impl}, "
             f"{args.dataset}; {args.repeats} alternating repeats of {args.steps} steps; "
             f"{env['processor']}, {env['cpu_count']} CPUs, {env['backend']}",
             "",
             "| path | steps/s (median) | each repeat | overhead vs bare (median) | each repeat |",
             "| --- | ---: | --- | ---: | --- |"]
    for name, rates in records.items():
        over = overheads.get(name)
        lines.append(
            f"| {name} | {statistics.median(rates):.2f} | "
            f"{', '.join(f'{r:.2f}' for r in rates)} | "
            + (f"{100 * statistics.median(over):.1f}% | "
               f"{', '.join(f'{100 * o:.1f}%' for o in over)} |" if over else "— | — |"))
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(table + "\n")
    jax.clear_caches()


if __name__ == "__main__":
    main()
