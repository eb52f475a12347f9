"""Reading, cropping and resizing face images (numpy and Pillow only).

Shared by the CelebA and LFW builders (at prepare time, possibly in worker processes) and by the
pipeline's map for the upstream tfds `celeb_a` dataset (at read time). Kept free of JAX and
tensorflow-datasets (of this package it imports only `cmma_jax.images`, for the image shape) so
that worker processes start quickly.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from cmma_jax.images import IMAGE_SHAPE

IMAGE_SIZE = IMAGE_SHAPE[0]  # faces are square

# The CelebA face crop, relative to the image size so that any resolution with CelebA's aspect
# works (the official 178x218 aligned images, the shared 89x109 copy, ...): a square of side
# 0.8 x width, centred horizontally and at 0.55 x height vertically. On 178x218 that is the box
# (17.8, 48.7)-(160.2, 191.1): forehead to chin with some hair, like the common 64x64 CelebA crops.
CELEBA_CROP_SIDE = 0.8
CELEBA_CROP_CENTER_Y = 0.55


class UnreadableImageError(ValueError):
    """An image file that exists but cannot be decoded (corrupt, truncated, not an image)."""


class BadImageSizeError(UnreadableImageError):
    """An image that decodes but is far from its dataset's size or aspect (`ExpectedSize`).

    A bad image like an undecodable one: an error naming the file, or skipped (with a warning)
    within the builders' `max_bad_images`.
    """


# How far from its dataset's size an image may be. An image is bad when its aspect ratio (width /
# height) differs from the dataset's by more than MAX_ASPECT_DEVIATION (a factor of 1.25 either
# way), or when its short side is under the dataset's `min_short_side` (below). Each dataset's
# minimum keeps the face crop at least MIN_FACE_SIDE source pixels, half the 64-px output, i.e.
# a face upsampled at most 2x: CelebA's crop is 0.8 x width (so width >= 40), LFW's 250x250 crops
# are 84 or 100 px of 250 (so width >= 96 for LFWcrop's 84-px box), LFWcrop's faces are the crop
# (so >= 32). Real images are nowhere near these limits: the shared CelebA copy is half size
# (89x109) and passes; a 1x1 or 500x50 image, a thumbnail or a rotated photo does not.
MAX_ASPECT_DEVIATION = 0.25
MIN_FACE_SIDE = 32


@dataclasses.dataclass(frozen=True)
class ExpectedSize:
    """What a dataset's source images look like; `check` refuses an image far from it."""

    what: str  # "CelebA's aligned images", for the message
    width: int
    height: int
    min_short_side: int

    def problem(self, width: int, height: int) -> str | None:
        """Why a `width` x `height` image is too far from this size, or None if it is not."""
        if min(width, height) < self.min_short_side:
            return (
                f"its short side is under {self.min_short_side} px, too small for a face"
                f" (the face crop would have under {MIN_FACE_SIDE} px)"
            )
        ratio = (width / height) / (self.width / self.height)
        if max(ratio, 1.0 / ratio) > 1.0 + MAX_ASPECT_DEVIATION:
            return (
                f"its aspect (width / height = {width / height:.3g}) differs from"
                f" {self.width / self.height:.3g} by more than {MAX_ASPECT_DEVIATION:.0%}"
            )
        return None

    def check(self, image: Image.Image, path: str | os.PathLike[str]) -> None:
        """Raises BadImageSizeError, naming the file, if `image` is far from this size."""
        problem = self.problem(*image.size)
        if problem is not None:
            raise BadImageSizeError(
                f"Image {os.fspath(path)} is {image.size[0]}x{image.size[1]} (width x height),"
                f" far from {self.what} ({self.width}x{self.height} or a rescaled copy): {problem}"
            )


CELEBA_SIZE = ExpectedSize("CelebA's aligned images", 178, 218, min_short_side=40)
LFW_SIZE = ExpectedSize("LFW's person-folder JPEGs", 250, 250, min_short_side=96)
LFWCROP_SIZE = ExpectedSize("LFWcrop's faces", 64, 64, min_short_side=MIN_FACE_SIDE)


def celeba_crop_box(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the CelebA face crop for an image of this size."""
    side = CELEBA_CROP_SIDE * width
    cx, cy = 0.5 * width, CELEBA_CROP_CENTER_Y * height
    left, top = cx - side / 2, cy - side / 2
    if top < 0 or top + side > height:
        raise ValueError(
            f"A {width}x{height} image is too wide for the CelebA crop (a square of side"
            f" {CELEBA_CROP_SIDE} x width centred at {CELEBA_CROP_CENTER_Y} x height); CelebA's"
            " aligned images are 178x218 (width x height) or a rescaled copy of them."
        )
    return (left, top, left + side, top + side)


def crop_celeba(image: Image.Image | np.ndarray) -> np.ndarray:
    """Crops the face square out of an aligned CelebA image and resizes it to 64x64.

    Args:
        image: a PIL image or a uint8 array [H, W, 3] of any size with CelebA's aspect.

    Returns:
        uint8 [64, 64, 3].
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    box = celeba_crop_box(*image.size)
    # Lanczos with a box: the resampling filter covers the whole source region when shrinking
    # (no aliasing) and sub-pixel crop coordinates are kept exactly.
    out = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS, box=box)
    return np.asarray(out, dtype=np.uint8)


def resize_square(image: Image.Image) -> np.ndarray:
    """An RGB image resized to 64x64 (LFWcrop faces already are); uint8 [64, 64, 3]."""
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Opens and fully decodes an image file.

    Raises:
        FileNotFoundError: the file does not exist.
        UnreadableImageError: it exists but cannot be decoded; the message names the file.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated or corrupt file fails here, not later
            return image.copy() if image.mode == "RGB" else image.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImageError(f"Cannot decode image {os.fspath(path)}: {e}") from e


def load_faces(
    paths: Sequence[str],
    size: ExpectedSize,
    to_face: Callable[[Image.Image], np.ndarray],
    errors: tuple[type[Exception], ...] = (FileNotFoundError, UnreadableImageError),
) -> list[np.ndarray | str]:
    """Reads images, checks each against its dataset's `size` and makes it a face (`to_face`:
    uint8 [64, 64, 3]); for each path the face or, for one of `errors`, an error message.

    The unit of work of a prepare-time worker process: errors come back as strings so that the
    builder can decide (raise, or skip with a warning) in the main process.
    """
    out: list[np.ndarray | str] = []
    for path in paths:
        try:
            image = read_image(path)
            size.check(image, path)
            out.append(to_face(image))
        except errors as e:
            out.append(f"{type(e).__name__}: {e}")
    return out


def load_celeba_images(paths: Sequence[str]) -> list[np.ndarray | str]:
    """Reads and crops CelebA images (`load_faces`; a size the crop refuses is a ValueError)."""
    return load_faces(paths, CELEBA_SIZE, crop_celeba, (FileNotFoundError, ValueError))


def load_square_images(paths: Sequence[str]) -> list[np.ndarray | str]:
    """Reads images and resizes them to 64x64 (LFWcrop; `load_faces`)."""
    return load_faces(paths, LFWCROP_SIZE, resize_square)


def load_compressed(args: tuple[str, Sequence[str]]) -> list[bytes | str]:
    """Prepare-time unit of work: reads images, crops them, returns zlib-compressed pixels.

    Args:
        args: (kind, paths); kind "celeba" crops with `crop_celeba`, "square" uses `resize_square`.

    Returns:
        For each path, `zlib.compress(uint8 [64, 64, 3].tobytes())`, or an error message (str)
        saying why the image could not be read.
    """
    kind, paths = args
    load = {"celeba": load_celeba_images, "square": load_square_images}[kind]
    return [x if isinstance(x, str) else zlib.compress(x.tobytes()) for x in load(paths)]
