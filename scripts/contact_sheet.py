"""Writes a contact sheet of the synthetic_faces dataset: one row per attribute, off/on pairs.

Each pair is a face of the dataset's train split (rendered exactly as the prepared dataset holds
it) in which the attribute is off, next to the same face with only that attribute turned on:
same pose, lighting, background and other attributes. For a hair colour, "on" repaints the hair.

    python scripts/contact_sheet.py                       # docs/synthetic_faces_contact_sheet.png
    python scripts/contact_sheet.py --pairs 6 --scale 1 --output /tmp/sheet.png
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cmma_jax.data import _render
from cmma_jax.data import synthetic_faces

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO, "docs", "synthetic_faces_contact_sheet.png")


def off_examples(name: str, count: int, seed: int) -> list[_render.FaceSpec]:
    """The first `count` train faces (of the dataset with this seed) where `name` is off."""
    specs = []
    index = 0
    while len(specs) < count:
        spec = _render.sample_face(
            _render.example_rng(seed, synthetic_faces.SPLITS.index("train"), index),
            synthetic_faces.DEFAULT_JITTER,
        )
        if not spec.attributes[name]:
            specs.append(spec)
        index += 1
    return specs


def contact_sheet(*, pairs: int = 3, seed: int = 0, scale: int = 2) -> Image.Image:
    """The sheet as a PIL image: a label column, then `pairs` (off, on) pairs per attribute."""
    size = _render.IMAGE_SIZE * scale
    label_width, header, gap, pair_gap = 150, 22, 2, 10
    names = _render.ATTRIBUTE_NAMES
    width = label_width + pairs * (2 * size + gap + pair_gap)
    height = header + len(names) * (size + gap)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for p in range(pairs):
        x = label_width + p * (2 * size + gap + pair_gap)
        draw.text((x + size // 2, 4), "off", fill=(90, 90, 90), font=font, anchor="ma")
        draw.text((x + size + gap + size // 2, 4), "on", fill=(0, 0, 0), font=font, anchor="ma")
    for row, name in enumerate(names):
        y = header + row * (size + gap)
        draw.text((6, y + size // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        for p, spec in enumerate(off_examples(name, pairs, seed)):
            x = label_width + p * (2 * size + gap + pair_gap)
            for k, face in enumerate((spec, spec.replace_attribute(name, True))):
                image = Image.fromarray(_render.render_face(face))
                if scale != 1:
                    image = image.resize((size, size), Image.NEAREST)
                sheet.paste(image, (x + k * (size + gap), y))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="PNG file to write")
    parser.add_argument("--pairs", type=int, default=3, help="off/on pairs per attribute")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (0: the default dataset)")
    parser.add_argument(
        "--scale", type=int, default=2, help="pixel magnification (nearest neighbour)"
    )
    args = parser.parse_args()
    sheet = contact_sheet(pairs=args.pairs, seed=args.seed, scale=args.scale)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    # A dithered 256-colour palette keeps the file small (about a third) without banding the
    # background gradients.
    sheet.quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
    ).save(args.output, optimize=True)
    print(
        f"Wrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB,"
        f" {sheet.size[0]}x{sheet.size[1]})."
    )


if __name__ == "__main__":
    main()
