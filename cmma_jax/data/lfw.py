"""`lfw`: the paper's data, LFW faces at 64x64 with the 73 attributes of Kumar et al.

The folder (passed as `source_dir`, or as tfds's manual directory) holds an attribute file and
the faces in one of three layouts, found by looking for their folders in this order:

    lfwcrop_color/faces/Aaron_Eckhart_0001.ppm ...         "lfwcrop": LFWcrop colour faces, 64x64
    lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg ...           "lfw": the original LFW, 250x250 JPEG
    lfw-deepfunneled/Aaron_Eckhart/Aaron_Eckhart_0001.jpg  "lfw-deepfunneled": the deep-funneled
                                                           alignment, 250x250 JPEG
    lfw_attributes.txt           Kumar et al.'s attribute scores, as released (real-valued), or
    lfw_attributes_binary.txt    the same layout with values +-1 (a binarised copy)

LFWcrop is the paper's data (section 4: "the cropped LFW faces"). The person-folder layouts are
what LFW's own site releases; a folder nested in a folder of the same name, as some archives
unpack (`lfw-deepfunneled/lfw-deepfunneled/<Person>/`), is read too. The `layout` option picks
one layout where a folder holds several.

The attribute file has a header line, then a tab-separated line of column names (`person`,
`imagenum`, then the 73 attribute names: `Male`, `Asian`, `White`, ...; a leading `#` field is
allowed, as in the released file), then one tab-separated row per image: the person's name, the
image number and 73 values. Row `(person, n)` is the face `<person with spaces as _>_<n as 4
digits>.ppm` (LFWcrop) or `<Person>/<Person>_<NNNN>.jpg` (person folders). Faces without a row
are not used. `lfw_attributes.txt` is read when present, else `lfw_attributes_binary.txt`; the
`attribute_file` option names another.

Attribute names are kept as in the file with spaces replaced by underscores, so that the shared
ones read as CelebA's do (`Mouth_Slightly_Open`, `Big_Nose`, ...). The prepared dataset keeps
the raw values (float32: the real scores, or +-1); `cmma_jax.data.pipeline` offers them raw or
binarised at 0, which reads both files alike.

The face crop of 250x250 images (`CROP_BOXES`): for the original `lfw/` images, LFWcrop's own
fixed box, so that they give LFWcrop's faces; for the deep-funneled images, a 100x100 square
centred at (125, 130), chosen by looking at real faces to frame them as LFWcrop does (eyebrows
to chin, little background). Either is resized to 64x64 with Lanczos. `crop_box` overrides it.

Splits, the paper's: the first 10,000 rows of the attribute file (in file order) are train, the
next 1,000 validation, the rest (2,143 for the released file) test. Both sizes are options, so
that small fixtures can exercise all three splits; `max_rows=N` reads only the first N rows.

Bad input raises an error that names the file and the fix, as for `celeba`; `max_bad_images=N`
skips up to N absent, undecodable or badly sized faces with a warning. An image far from its
layout's size (`_images.LFW_SIZE`, `_images.LFWCROP_SIZE`: e.g. a 1x1 file) is a bad image.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import zlib
from typing import Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from cmma_jax.data import _images
from cmma_jax.data._builder import BadImages, LocalBuilder, folder_config_name
# The folder (its attribute file and layouts) is read in cmma_jax.data.lfw_folder; its names
# are this module's too.
from cmma_jax.data.lfw_folder import (  # noqa: F401
    _LAYOUT,
    ATTRIBUTE_FILE,
    ATTRIBUTE_FILES,
    ATTRIBUTE_NAMES,
    BINARY_ATTRIBUTE_FILE,
    DEEPFUNNELED,
    FACES_DIR,
    FILE_ATTRIBUTE_NAMES,
    LAYOUT_DIRS,
    LAYOUTS,
    LFWCROP,
    NUM_ATTRIBUTES,
    ORIGINAL,
    PAPER_NUM_TRAIN,
    PAPER_NUM_VALIDATION,
    AttributeTable,
    Layout,
    _check_layout_name,
    attribute_names_in,
    check_folder,
    check_source_dir,
    face_filename,
    find_attribute_file,
    find_layout,
    image_path,
    normalize_name,
    paper_split,
    read_attribute_file,
)
from cmma_jax.images import IMAGE_SHAPE

SPLITS = ("train", "validation", "test")

# The face crop of the 250x250 LFW images: (left, top, right, bottom) in pixels of a 250x250
# image (right and bottom exclusive), scaled for an image of another size, then resized to 64x64.
SOURCE_SIZE = 250
# LFWcrop's fixed box (Sanderson and Lovell, ICB 2009; conradsanderson.id.au/lfwcrop): corners
# (83, 92) and (166, 175) inclusive, an 84x84 square, on the original LFW images.
LFWCROP_BOX = (83.0, 92.0, 167.0, 176.0)
# The deep-funneled crop, chosen by looking at real faces: a 100x100 square centred at (125, 130).
# The deep-funneled alignment puts the mean face's eyes at y ~ 110, the mouth at y ~ 157 and the
# chin at y ~ 180, so this box runs from the lower forehead to the chin, the eyes at 30% of its
# height and the mouth at 77%, with the cheeks nearly filling it, as in LFWcrop (eyes ~ 26%, mouth
# ~ 77%). LFWcrop's own box cuts the chin of deep-funneled faces; a 110-130 px square shows hair
# and background at the sides.
DEEPFUNNELED_BOX = (75.0, 80.0, 175.0, 180.0)
CROP_BOXES = {ORIGINAL: LFWCROP_BOX, DEEPFUNNELED: DEEPFUNNELED_BOX}

# The keyword options of the `Lfw` builder besides `source_dir` and tfds's own (`data_dir`, ...).
OPTIONS = (
    "num_train",
    "num_validation",
    "max_bad_images",
    "num_workers",
    "layout",
    "attribute_file",
    "crop_box",
    "max_rows",
)


# --- the face crop ---------------------------------------------------------------------------


def check_crop_box(box: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """A crop box as a tuple of 4 floats, checked to be a non-empty box inside 250x250."""
    if box is None:
        return None
    try:
        left, top, right, bottom = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(
            f"crop_box must be 4 numbers (left, top, right, bottom) in pixels of a"
            f" {SOURCE_SIZE}x{SOURCE_SIZE} image, got {box!r}."
        ) from None
    if not (0 <= left < right <= SOURCE_SIZE and 0 <= top < bottom <= SOURCE_SIZE):
        raise ValueError(
            f"crop_box {box!r} must satisfy 0 <= left < right <= {SOURCE_SIZE} and"
            f" 0 <= top < bottom <= {SOURCE_SIZE} (pixels of a {SOURCE_SIZE}x{SOURCE_SIZE} image)."
        )
    return (left, top, right, bottom)


def crop_face(image: Image.Image | np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Crops `box` (pixels of a 250x250 image, scaled to this image's size) and resizes to 64x64.

    Returns:
        uint8 [64, 64, 3].
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    width, height = image.size
    sx, sy = width / SOURCE_SIZE, height / SOURCE_SIZE
    left, top, right, bottom = box
    # Lanczos with a box, as for CelebA: the filter covers the whole region when shrinking.
    out = image.resize(
        (IMAGE_SHAPE[1], IMAGE_SHAPE[0]),
        Image.LANCZOS,
        box=(left * sx, top * sy, right * sx, bottom * sy),
    )
    return np.asarray(out, dtype=np.uint8)


def load_cropped(args: tuple[Sequence[float], Sequence[str]]) -> list[bytes | str]:
    """Prepare-time unit of work for the 250x250 layouts (run in worker processes).

    Args:
        args: (box, paths): the crop box (`crop_face`) and the JPEG files.

    Returns:
        For each path, `zlib.compress(uint8 [64, 64, 3].tobytes())`, or an error message (str).
    """
    box, paths = args
    faces = _images.load_faces(paths, _images.LFW_SIZE, functools.partial(crop_face, box=box))
    return [x if isinstance(x, str) else zlib.compress(x.tobytes()) for x in faces]


# --- the builder -----------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class LfwConfig(tfds.core.BuilderConfig):
    """The folder to read (None: tfds's manual directory) and the builder's options (`Lfw`)."""

    source_dir: str | None = None
    num_train: int = PAPER_NUM_TRAIN
    num_validation: int = PAPER_NUM_VALIDATION
    max_bad_images: int = 0
    layout: str | None = None
    attribute_file: str | None = None
    crop_box: tuple[float, float, float, float] | None = None
    max_rows: int | None = None


def make_config(
    source_dir: str | os.PathLike[str] | None = None,
    *,
    num_train: int = PAPER_NUM_TRAIN,
    num_validation: int = PAPER_NUM_VALIDATION,
    max_bad_images: int = 0,
    layout: str | None = None,
    attribute_file: str | os.PathLike[str] | None = None,
    crop_box: Sequence[float] | None = None,
    max_rows: int | None = None,
) -> LfwConfig:
    """The config for a folder: named after it and a fingerprint of its files and options."""
    if min(num_train, num_validation, max_bad_images) < 0:
        raise ValueError("num_train, num_validation and max_bad_images must be >= 0.")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be None (all rows) or >= 1, got {max_rows}.")
    _check_layout_name(layout)
    options = {
        "num_train": num_train,
        "num_validation": num_validation,
        "max_bad_images": max_bad_images,
        "layout": layout,
        "attribute_file": None if attribute_file is None else os.fspath(attribute_file),
        "crop_box": check_crop_box(crop_box),
        "max_rows": max_rows,
    }
    extra = {k: options[k] for k in ("layout", "attribute_file", "crop_box", "max_rows")}
    if source_dir is None:
        if (num_train, num_validation, max_bad_images) == (
            PAPER_NUM_TRAIN,
            PAPER_NUM_VALIDATION,
            0,
        ) and all(v is None for v in extra.values()):
            return Lfw.builder_configs["manual"]
        name = f"manual_{num_train}_{num_validation}_bad{max_bad_images}"
        if any(v is not None for v in extra.values()):
            name += "_" + hashlib.sha1(repr(sorted(extra.items())).encode()).hexdigest()[:8]
        return LfwConfig(name=name, **options)
    source_dir = os.path.abspath(os.path.expanduser(os.fspath(source_dir)))
    # The fingerprint covers the layout found now, so that a folder given another layout later
    # is prepared afresh.
    # It also covers the bytes of every image of that layout, so that a replaced image is
    # prepared afresh too (and new modification times alone are not).
    try:
        found_layout = find_layout(source_dir, layout)
        found, image_dir = found_layout.name, found_layout.image_dir
    except (FileNotFoundError, ValueError):
        found, image_dir = None, None
    index_files = ATTRIBUTE_FILES if attribute_file is None else (options["attribute_file"],)
    return LfwConfig(
        name=folder_config_name(
            source_dir, index_files, {**options, "found_layout": found}, image_dir=image_dir
        ),
        description=f"LFW faces and attributes read from {source_dir}.",
        source_dir=source_dir,
        **options,
    )


class Lfw(LocalBuilder):
    """LFW faces (64x64: LFWcrop, or cropped from 250x250 JPEGs) with Kumar et al.'s 73
    attributes, as in the file (real-valued scores or +-1)."""

    # tfds has its own `lfw` (identities, no attributes); this builder needs another name.
    name = "lfw_attributes"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "LFWcrop colour faces joined with lfw_attributes.txt; the paper's split.",
        "1.1.0": (
            "Also the 250x250 lfw/ and lfw-deepfunneled/ person folders (cropped to 64x64) and"
            " lfw_attributes_binary.txt; options layout, attribute_file, crop_box, max_rows."
        ),
    }
    BUILDER_CONFIGS = [
        LfwConfig(name="manual", description="LFW read from tfds's manual directory.")
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "manual"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Place {_LAYOUT} in the manual directory, or pass source_dir."
    FOLDER_NAME = "LFW"
    FOLDER_LAYOUT = _LAYOUT

    def __init__(
        self,
        *,
        source_dir: str | os.PathLike[str] | None = None,
        num_train: int = PAPER_NUM_TRAIN,
        num_validation: int = PAPER_NUM_VALIDATION,
        max_bad_images: int = 0,
        num_workers: int | None = None,
        layout: str | None = None,
        attribute_file: str | os.PathLike[str] | None = None,
        crop_box: Sequence[float] | None = None,
        max_rows: int | None = None,
        config: LfwConfig | str | None = None,
        **kwargs,
    ):
        """Creates the builder.

        Args:
            source_dir: the LFW folder; None reads tfds's manual directory instead.
            num_train, num_validation: the split (first rows train, next validation, rest test).
            max_bad_images: absent, undecodable or badly sized faces to skip (with a warning)
                before failing.
            num_workers: decoding processes (None: one per core for large folders, else none).
            layout: "lfwcrop", "lfw" or "lfw-deepfunneled" (`LAYOUTS`); None: the first present.
            attribute_file: the attribute file, a name in the folder or a path; None:
                `lfw_attributes.txt`, else `lfw_attributes_binary.txt`.
            crop_box: (left, top, right, bottom) of the face in a 250x250 image; None: the
                layout's (`CROP_BOXES`). Not for LFWcrop, whose faces are cropped already.
            max_rows: read only the first `max_rows` attribute rows (None: all); the split
                applies to them.
            config: an explicit config (overrides the options above).
            **kwargs: `tfds.core.DatasetBuilder`'s (`data_dir`, ...).
        """
        if config is None:
            config = make_config(
                source_dir,
                num_train=num_train,
                num_validation=num_validation,
                max_bad_images=max_bad_images,
                layout=layout,
                attribute_file=attribute_file,
                crop_box=crop_box,
                max_rows=max_rows,
            )
        self._num_workers = num_workers
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # Record i of a split is its i-th row in file order.
        return self._face_info(
            description=(
                "LFW faces (64x64) with Kumar et al.'s 73 attributes (real-valued scores or +-1)."
            ),
            attribute_names=ATTRIBUTE_NAMES,
            encoding="raw",
            extra_features={"filename": tfds.features.Text()},
            homepage="https://www.cs.columbia.edu/CAVE/databases/pubfig/",
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        source_dir = check_folder(self._source_dir(dl_manager))
        layout = find_layout(source_dir, config.layout)
        if layout.name == LFWCROP and config.crop_box is not None:
            raise ValueError(
                f"crop_box applies to the 250x250 layouts (lfw/, lfw-deepfunneled/); the LFWcrop"
                f" faces in {layout.image_dir} are cropped already. Drop crop_box, or pass"
                " layout='lfw' or 'lfw-deepfunneled'."
            )
        attribute_path = find_attribute_file(source_dir, config.attribute_file)
        table = read_attribute_file(attribute_path).head(config.max_rows)
        split = paper_split(len(table.people), config.num_train, config.num_validation)
        paths = [layout.path(p, n) for p, n in zip(table.people, table.imagenums)]
        self._bad = BadImages(
            max_bad_images=config.max_bad_images,
            listed_in=attribute_path,
            image_dir=layout.image_dir,
        )
        if layout.name == LFWCROP:
            present = set(os.listdir(layout.image_dir))
            present = {p for p in paths if p in present}
        else:
            present = {p for p in paths if os.path.isfile(os.path.join(layout.image_dir, p))}
        self._bad.check_present(paths, present)
        if layout.name == LFWCROP:
            work = "square"
            box = None
        else:
            box = config.crop_box or CROP_BOXES[layout.name]
            work = box
        logging.info(
            "Preparing LFW from %s (layout %s, crop %s) with %s.",
            layout.image_dir,
            layout.name,
            box,
            attribute_path,
        )
        # The names in the file (normalised): their spelling may differ from FILE_ATTRIBUTE_NAMES.
        self.info.metadata["attribute_names"] = list(table.names)
        self.info.metadata["source_dir"] = source_dir
        self.info.metadata["layout"] = layout.name
        self.info.metadata["image_dir"] = layout.image_dir
        self.info.metadata["attribute_file"] = attribute_path
        self.info.metadata["attribute_values"] = "binary" if table.is_binary else "scores"
        self.info.metadata["crop_box"] = None if box is None else list(box)
        return {
            name: self._generate_examples(
                table, paths, np.flatnonzero(split == i), present, layout.image_dir, work
            )
            for i, name in enumerate(SPLITS)
        }

    def _generate_examples(self, table, paths, rows, present, image_dir, work):
        if isinstance(work, str):  # LFWcrop: read the 64x64 faces as they are
            load = _images.load_compressed
        else:  # a crop box for the 250x250 JPEGs
            work, load = tuple(work), load_cropped
        for row, path, image in self._read_faces(work, image_dir, paths, rows, present, load):
            filename = os.path.basename(path)
            yield row, {"image": image, "attributes": table.scores[row], "filename": filename}
