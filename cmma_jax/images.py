"""Images as people see them: the image shape, grids of faces with labels, heat maps, PNG files.

A bottom layer: it imports nothing of `cmma_jax`. Images are float arrays in [0, 1] of shape
`[N, H, W, 3]` (or `[rows, cols, H, W, 3]` for labelled grids); grid labels are drawn with
Pillow's built-in font. The trainer's sample grids (`cmma_jax.train`), the papers' figures
(`cmma_jax.figures`) and the ground truth's probe heat maps (`cmma_jax.evaluate.ground_truth`)
are all drawn with these.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Every face in this project: 64x64 RGB (the CMMA paper's LFWcrop size, section 4).
IMAGE_SHAPE = (64, 64, 3)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (values outside are clipped) -> uint8 in [0, 255]."""
    return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(images: np.ndarray, num_cols: int | None = None, pad: int = 2,
               background: int = 255) -> np.ndarray:
    """Tiles images into one picture.

    Args:
      images: `[N, H, W, C]` in [0, 1], or `[rows, cols, H, W, C]` (then `num_cols` is `cols`).
      num_cols: images per row for the `[N, ...]` form (default: about sqrt(N)).
      pad: pixels between tiles.
      background: grey level of the padding, 0-255.

    Returns:
      A uint8 array `[rows * (H + pad) + pad, cols * (W + pad) + pad, C]`.
    """
    images = np.asarray(images)
    if images.ndim == 5:
        rows, num_cols = images.shape[:2]
        images = images.reshape((-1,) + images.shape[2:])
    elif images.ndim == 4:
        num_cols = num_cols or int(np.ceil(np.sqrt(len(images))))
        rows = int(np.ceil(len(images) / num_cols))
    else:
        raise ValueError(f"image_grid takes [N, H, W, C] or [rows, cols, H, W, C] images, got "
                         f"shape {images.shape}.")
    n, h, w, c = images.shape
    tiles = to_uint8(images)
    grid = np.full((rows * (h + pad) + pad, num_cols * (w + pad) + pad, c), background, np.uint8)
    for i in range(n):
        r, col = divmod(i, num_cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = tiles[i]
    return grid


def _font():
    return ImageFont.load_default()


def _text_size(font):
    """`text -> (width, height)` of text drawn in `font`."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text):
        left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    return text_size


def labelled_grid(images: np.ndarray, row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, pad: int = 2,
                  title: str | None = None) -> Image.Image:
    """A grid of `[rows, cols, H, W, 3]` images with row labels on the left and column labels on
    top (and an optional title), as a Pillow image."""
    images = np.asarray(images)
    if images.ndim != 5:
        raise ValueError(f"labelled_grid takes [rows, cols, H, W, 3] images, got {images.shape}.")
    rows, cols = images.shape[:2]
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows.")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"{len(col_labels)} column labels for {cols} columns.")
    grid = Image.fromarray(image_grid(images, pad=pad))
    font = _font()
    text_size = _text_size(font)
    line_h = text_size("Ag")[1] + 4
    left_w = (max(text_size(t)[0] for t in row_labels) + 8) if row_labels else 0
    # Column labels may be wider than a tile: wrap them on '_' and spaces into several lines.
    tile_w = images.shape[3] + pad
    wrapped = [_wrap(t, tile_w, text_size) for t in col_labels] if col_labels else []
    top_h = (max(len(w) for w in wrapped) * line_h + 4) if wrapped else 0
    title_h = line_h + 4 if title else 0
    canvas = Image.new("RGB", (left_w + grid.width, title_h + top_h + grid.height), "white")
    canvas.paste(grid, (left_w, title_h + top_h))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black", font=font)
    for j, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((left_w + pad + j * tile_w, title_h + 2 + k * line_h), line, fill="black",
                      font=font)
    if row_labels:
        tile_h = images.shape[2] + pad
        for i, text in enumerate(row_labels):
            y = title_h + top_h + pad + i * tile_h + (images.shape[2] - line_h) // 2
            draw.text((4, y), text, fill="black", font=font)
    return canvas


def _wrap(text: str, width: int, text_size) -> list[str]:
    words = text.replace("_", "_ ").split()
    lines, current = [], ""
    for word in words:
        candidate = current + ("" if current.endswith("_") or not current else " ") + word
        if current and text_size(candidate)[0] > width - 2:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines or [""]


# The heat maps' colour map: five stops of viridis, interpolated linearly.
_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
                    np.float64)


def _colour(t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t)) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    c = _VIRIDIS[i] + (t - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])
    return tuple(int(round(v)) for v in c)


def heatmap(values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], *,
            low: float, high: float, title: str, cell: tuple[int, int] = (34, 20)
            ) -> Image.Image:
    """A heat map `[rows, cols]`: cells coloured by the value from `low` (dark) to `high`
    (yellow), the value written in each (2 decimals; "-" for NaN, on grey), row labels on the
    left, column labels written upwards on top, a title above."""
    values = np.asarray(values, np.float64)
    rows, cols = values.shape
    if (len(row_labels), len(col_labels)) != (rows, cols):
        raise ValueError(f"{len(row_labels)} row and {len(col_labels)} column labels for "
                         f"values of shape {values.shape}.")
    font = _font()
    size = _text_size(font)
    cw, ch = cell
    line_h = size("Ag")[1] + 4
    left = max(size(t)[0] for t in row_labels) + 10
    top_labels = max(size(t)[0] for t in col_labels) + 8
    title_h = line_h + 6
    canvas = Image.new("RGB", (left + cols * cw + 4, title_h + top_labels + rows * ch + 4),
                       "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill="black", font=font)
    for j, text in enumerate(col_labels):
        w, _ = size(text)
        label = Image.new("RGB", (w + 4, line_h), "white")
        ImageDraw.Draw(label).text((2, 1), text, fill="black", font=font)
        label = label.rotate(90, expand=True)
        canvas.paste(label, (left + j * cw + (cw - label.width) // 2,
                             title_h + top_labels - label.height - 2))
    y0 = title_h + top_labels
    for i, text in enumerate(row_labels):
        draw.text((4, y0 + i * ch + (ch - line_h) // 2 + 2), text, fill="black", font=font)
        for j in range(cols):
            v = values[i, j]
            box = (left + j * cw, y0 + i * ch, left + (j + 1) * cw - 1, y0 + (i + 1) * ch - 1)
            if np.isfinite(v):
                t = (v - low) / (high - low)
                fill = _colour(t)
                text_colour = "white" if t < 0.6 else "black"
                text = f"{v:.2f}"
            else:
                fill, text_colour, text = (200, 200, 200), "black", "-"
            draw.rectangle(box, fill=fill)
            w, h = size(text)
            draw.text((box[0] + (cw - w) // 2, box[1] + (ch - line_h) // 2 + 2), text,
                      fill=text_colour, font=font)
    return canvas


def save_png(path: str, image: Image.Image | np.ndarray, colors: int | None = None) -> str:
    """Writes a Pillow image or a uint8 array as PNG, creating the folder; returns the path.

    With `colors` (2-256) the image is quantised to a palette of that many colours first, which
    makes grids of faces several times smaller (for documentation).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    if colors is not None:
        image = image.convert("RGB").quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT)
    image.save(path, format="PNG", optimize=colors is not None)
    return path


def tile_images(images: Sequence[Image.Image], max_width: int = 1200,
                gap: int = 12) -> Image.Image:
    """Pillow images in rows on white, left to right and then down: as many to a row as fit in
    `max_width` pixels (at least one), so that a figure of several panels stays readable at the
    width a page shows instead of shrinking every face in one long strip."""
    rows: list[list[Image.Image]] = [[]]
    for im in images:
        row = rows[-1]
        if row and sum(r.width for r in row) + gap * len(row) + im.width > max_width:
            rows.append([])
        rows[-1].append(im)
    return vstack_images([hstack_images(row, gap) for row in rows], gap)


def vstack_images(images: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    """Pillow images one above the other on white, left-aligned."""
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height for im in images) + gap * (len(images) - 1)),
                       "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + gap
    return canvas


def hstack_images(images: Sequence[Image.Image], gap: int = 12) -> Image.Image:
    """Pillow images side by side on white, top-aligned."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    height = max(im.height for im in images)
    canvas = Image.new("RGB", (width, height), "white")
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    return canvas
