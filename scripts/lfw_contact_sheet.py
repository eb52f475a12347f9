"""Writes a contact sheet of the prepared LFW faces: an 8x8 grid of 64x64 faces shown at 2x.

The faces are rows spread evenly over the attribute file (row 0, k, 2k, ...), so the sheet shows
the three splits and many people. By default each face is made by the function the `lfw` builder
runs when it prepares the dataset (`lfw.load_cropped`: the layout's crop box, Lanczos to 64x64),
so nothing is prepared; with --prepared_dir the faces are read from the prepared dataset instead
(prepared there first if it is not yet). No attribute value is written.

    python scripts/lfw_contact_sheet.py                      # docs/lfw_contact_sheet.png
    python scripts/lfw_contact_sheet.py --data_dir ~/lfw --output /tmp/sheet.png
    python scripts/lfw_contact_sheet.py --crop_box 70,75,180,185 --output /tmp/110.png
"""

from __future__ import annotations

import argparse
import os
import zlib

import numpy as np
from PIL import Image

from cmma_jax.data import _images
from cmma_jax.data import lfw
from cmma_jax.images import save_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "lfw")
DEFAULT_OUTPUT = os.path.join(REPO, "docs", "lfw_contact_sheet.png")


def faces_from_folder(data_dir, rows, layout=None, crop_box=None):
    """The 64x64 faces of attribute rows `rows`, cropped as the builder crops them."""
    lay = lfw.find_layout(data_dir, layout)
    table = lfw.read_attribute_file(lfw.find_attribute_file(data_dir))
    paths = [
        os.path.join(lay.image_dir, lay.path(table.people[r], table.imagenums[r])) for r in rows
    ]
    if lay.name == lfw.LFWCROP:
        out = _images.load_compressed(("square", paths))
    else:
        out = lfw.load_cropped((crop_box or lfw.CROP_BOXES[lay.name], paths))
    for path, face in zip(paths, out):
        if isinstance(face, str):
            raise RuntimeError(f"{path}: {face}")
    return [np.frombuffer(zlib.decompress(f), np.uint8).reshape(lfw.IMAGE_SHAPE) for f in out]


def faces_from_prepared(data_dir, prepared_dir, rows, **options):
    """The faces of attribute rows `rows` from the prepared dataset (full file, default split)."""
    builder = lfw.Lfw(source_dir=data_dir, data_dir=prepared_dir, **options)
    builder.download_and_prepare(file_format="array_record")
    sources = builder.as_data_source()
    sizes = [len(sources[s]) for s in lfw.SPLITS]
    if builder.info.metadata.get("skipped_images"):
        raise RuntimeError("Skipped images shift the rows; use the folder instead.")
    faces = []
    for r in rows:
        split = 0
        while r >= sizes[split]:
            r -= sizes[split]
            split += 1
        faces.append(np.asarray(sources[lfw.SPLITS[split]][r]["image"]))
    return faces


def contact_sheet(faces, *, columns=8, scale=2, gap=2):
    """The faces in a grid on white, each magnified `scale` times (nearest neighbour)."""
    size = lfw.IMAGE_SHAPE[0] * scale
    rows = -(-len(faces) // columns)
    sheet = Image.new(
        "RGB", (columns * size + (columns - 1) * gap, rows * size + (rows - 1) * gap), "white"
    )
    for i, face in enumerate(faces):
        image = Image.fromarray(face).resize((size, size), Image.NEAREST)
        sheet.paste(image, ((i % columns) * (size + gap), (i // columns) * (size + gap)))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="the raw LFW folder")
    parser.add_argument("--prepared_dir", default=None, help="read the prepared dataset here")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="PNG file to write")
    parser.add_argument("--grid", type=int, default=8, help="faces per row and column")
    parser.add_argument("--scale", type=int, default=2, help="pixel magnification")
    parser.add_argument("--colors", type=int, default=256, help="palette size of the PNG")
    parser.add_argument("--layout", default=None, help="lfwcrop, lfw or lfw-deepfunneled")
    parser.add_argument("--crop_box", default=None, help="left,top,right,bottom in a 250x250 image")
    args = parser.parse_args()
    crop_box = None if args.crop_box is None else [float(v) for v in args.crop_box.split(",")]
    table = lfw.read_attribute_file(lfw.find_attribute_file(args.data_dir))
    count = args.grid * args.grid
    rows = [int(r) for r in np.linspace(0, len(table.people) - 1, count)]
    if args.prepared_dir:
        faces = faces_from_prepared(
            args.data_dir, args.prepared_dir, rows, layout=args.layout, crop_box=crop_box
        )
    else:
        faces = faces_from_folder(args.data_dir, rows, args.layout, crop_box)
    sheet = contact_sheet(faces, columns=args.grid, scale=args.scale)
    save_png(args.output, sheet, colors=args.colors)
    print(
        f"Wrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB,"
        f" {sheet.size[0]}x{sheet.size[1]}, rows {rows[0]}..{rows[-1]} of {len(table.people)})."
    )


if __name__ == "__main__":
    main()
