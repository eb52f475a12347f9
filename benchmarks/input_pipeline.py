"""Throughput of the input pipeline alone: batches/sec and images/sec per dataset and worker count.

Measures `cmma_jax.data.pipeline.load(...)` on the training split, as a trainer consumes it
(shuffled, repeated, batch 64, float32 images and encoded attributes), with no model attached.
Preparation is done (or reused) first and not timed; the first batch, which includes starting
any worker processes, is timed separately. Each configuration is then timed `--repeats` times
over `--batches` batches, and the median is reported, together with its ratio to the rate at
which a train step consumes images (`--consumer_images_per_sec`).

The default consumer rate, 16 images/sec, is the best paper-size CMMA train step rate measured on
the 2-core CPU machine this project is developed on (a step at batch 64 takes >= 4 s); pass the
rate measured for your model and machine. The target is a ratio of at least 5.

Datasets: synthetic_faces (the default variant, prepared in --prepared_dir on first use); celeba
from --celeba_dir (default ../shared/data/celeba beside the checkout; skipped if absent); lfw
from --lfw_dir, or, when none is given, from a folder written here in LFWcrop's layout with random
64x64 faces and scores (the same code path as the real files: PPM faces prepared into the same
record format).

    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --workers 0,2,4 --batches 200 --consumer_images_per_sec 12
    python benchmarks/input_pipeline.py --datasets lfw --lfw_dir SUBSET --lfw_num_train 1700 \\
        --lfw_num_validation 150 --batch_size 256 --json out.json   # (accelerator_check.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from cmma_jax.data import lfw
from cmma_jax.data import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CELEBA = os.path.join(os.path.dirname(REPO), "shared", "data", "celeba")


def write_lfw_like_folder(root: str, num_rows: int = 2_400, seed: int = 0) -> str:
    """An LFW folder with random faces and scores, for timing when no real LFW is given."""
    rng = np.random.default_rng(seed)
    faces = os.path.join(root, lfw.FACES_DIR)
    os.makedirs(faces, exist_ok=True)
    lines = [
        "# lfw-format benchmark fixture",
        "\t".join(["#", "person", "imagenum", *lfw.FILE_ATTRIBUTE_NAMES]),
    ]
    for i in range(num_rows):
        person = f"Person {i // 4:05d}"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            os.path.join(faces, lfw.face_filename(person, i % 4 + 1))
        )
        scores = rng.normal(size=lfw.NUM_ATTRIBUTES)
        lines.append("\t".join([person, str(i % 4 + 1)] + [f"{v:.6f}" for v in scores]))
    with open(os.path.join(root, lfw.ATTRIBUTE_FILE), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


def time_pipeline(
    name: str, *, batch_size: int, workers: int, batches: int, repeats: int, **load_kwargs
):
    """(first-batch seconds, [images/sec per repeat]) for one configuration."""
    start = time.perf_counter()
    data = pipeline.load(
        name,
        "train",
        batch_size=batch_size,
        seed=0,
        worker_count=workers,
        shard_index=0,
        shard_count=1,
        **load_kwargs,
    )
    with data:
        next(data.iterator)
        first = time.perf_counter() - start
        for _ in range(min(batches // 5, 20)):  # fill the workers' buffers
            next(data.iterator)
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(batches):
                batch = next(data.iterator)
            rates.append(batches * batch_size / (time.perf_counter() - start))
        assert batch["image"].shape == (batch_size, 64, 64, 3)
    return first, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prepared_dir",
        default=None,
        help="prepared datasets (default: pipeline.default_prepared_dir())",
    )
    parser.add_argument("--celeba_dir", default=DEFAULT_CELEBA)
    parser.add_argument(
        "--lfw_dir", default=None, help="real LFW folder; default: a generated LFW-format folder"
    )
    parser.add_argument("--datasets", default="synthetic_faces,celeba,lfw")
    parser.add_argument("--lfw_rows", type=int, default=2_400,
                        help="rows of the generated LFW-format folder (no --lfw_dir)")
    parser.add_argument("--lfw_num_train", type=int, default=None,
                        help="lfw split: train rows (default: 2,000 generated, else the paper's)")
    parser.add_argument("--lfw_num_validation", type=int, default=None,
                        help="lfw split: validation rows (default: 200 generated, else the "
                        "paper's)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=100, help="batches per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--consumer_images_per_sec",
        type=float,
        default=16.0,
        help="images/sec a train step consumes (default: best paper-size CMMA step here)",
    )
    args = parser.parse_args()

    prepared_dir = args.prepared_dir or pipeline.default_prepared_dir()
    workers = [int(w) for w in args.workers.split(",")]
    tmp = tempfile.TemporaryDirectory()
    configs = []
    for name in args.datasets.split(","):
        if name == "synthetic_faces":
            configs.append((name, {"prepared_dir": prepared_dir}, "default size (20,000 train)"))
        elif name == "celeba":
            if not os.path.isdir(args.celeba_dir):
                print(f"# celeba skipped: {args.celeba_dir} not found")
                continue
            configs.append(
                (name, {"prepared_dir": prepared_dir, "data_dir": args.celeba_dir}, args.celeba_dir)
            )
        elif name == "lfw":
            split = {k: v for k, v in (("num_train", args.lfw_num_train),
                                       ("num_validation", args.lfw_num_validation)) if v}
            if args.lfw_dir:
                kwargs = {"prepared_dir": prepared_dir, "data_dir": args.lfw_dir}
                if split:
                    kwargs["options"] = split
                configs.append((name, kwargs, args.lfw_dir))
            else:
                root = write_lfw_like_folder(os.path.join(tmp.name, "lfw"), args.lfw_rows)
                configs.append(
                    (
                        name,
                        {
                            "prepared_dir": os.path.join(tmp.name, "tfds"),
                            "data_dir": root,
                            "options": {"num_train": 2_000, "num_validation": 200, **split},
                        },
                        f"generated LFW-format folder, {split.get('num_train', 2_000):,} train",
                    )
                )
        else:
            raise SystemExit(f"unknown dataset {name!r}")

    print(
        f"# input pipeline, batch {args.batch_size}, {args.batches} batches x {args.repeats}"
        f" repeats, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print(f"# consumer: {args.consumer_images_per_sec:g} images/sec; target ratio >= 5")
    rows = []
    print("| dataset | source | workers | first batch (s) | batches/s | images/s | x consumer |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, kwargs, note in configs:
        start = time.perf_counter()
        pipeline.prepare(name, **{k: v for k, v in kwargs.items()})
        prepare_seconds = time.perf_counter() - start
        if prepare_seconds > 1:
            print(f"# {name}: prepared in {prepare_seconds:.1f} s (not timed below)")
        for w in workers:
            first, rates = time_pipeline(
                name,
                batch_size=args.batch_size,
                workers=w,
                batches=args.batches,
                repeats=args.repeats,
                **kwargs,
            )
            images = statistics.median(rates)
            rows.append({"dataset": name, "source": note, "workers": w, "batch_size":
                         args.batch_size, "first_batch_seconds": first, "images_per_second":
                         images, "images_per_second_repeats": rates,
                         "consumer_images_per_second": args.consumer_images_per_sec,
                         "ratio_to_consumer": images / args.consumer_images_per_sec})
            print(
                f"| {name} | {note} | {w} | {first:.2f} | {images / args.batch_size:.1f} |"
                f" {images:.0f} | {images / args.consumer_images_per_sec:.0f}x |",
                flush=True,
            )
    tmp.cleanup()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
