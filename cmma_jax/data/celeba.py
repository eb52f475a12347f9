"""`celeba`: CelebA from a local folder in the official layout, prepared as 64x64 faces.

The folder (passed as `source_dir`, or as tfds's manual directory) holds:

    img_align_celeba/000001.jpg ...  the "Align&Cropped" images, at any resolution with
                                     CelebA's aspect (official 178x218; the shared copy: 89x109)
    list_attr_celeba.txt             line 1: number of rows; line 2: the 40 attribute names;
                                     then "FILENAME v1 ... v40" with values -1 or 1
    list_eval_partition.txt          optional: "FILENAME s", s = 0 train, 1 validation, 2 test

Each face is cropped relative to the image size (`cmma_jax.data._images.crop_celeba`: a square of
side 0.8 x width centred at (0.5 x width, 0.55 x height)) and resized to 64x64 with Lanczos
filtering, once, at prepare time. Records keep the attribute file's order.

Splits: the official partition when `list_eval_partition.txt` is there. Otherwise a
deterministic split by the attribute file's row order (which is file-name order in CelebA's
files): validation and test get `round(N / 18)` rows each (5.6%), taken from the end, and train
the rest; for the 9,000-face shared copy that is train 000001-008000, validation 008001-008500,
test 008501-009000.

Bad input raises an error that names the file and the fix: a missing folder or attribute file,
a malformed attribute or partition file, a listed image that is absent or cannot be decoded, an
image far from CelebA's size or aspect (`_images.CELEBA_SIZE`: a 1x1 image is no face).
With `max_bad_images=N`, up to N absent, undecodable or badly sized images are skipped instead,
with a warning that gives their count and names (also kept in the prepared dataset's metadata).

The upstream tfds `celeb_a` dataset (downloaded by tfds) is read by `cmma_jax.data.pipeline`
with the same crop and output format; this module provides the crop and the attribute names.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from cmma_jax.data._builder import (
    BadImages,
    LocalBuilder,
    folder_config_name,
    index_rows,
    read_index_file,
)

IMAGE_DIR = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = ("train", "validation", "test")
# The builder options (`cmma_jax.data.registry`); the folder itself is `source_dir`.
OPTIONS = ("max_bad_images", "num_workers")

# CelebA's 40 attributes, in the order of list_attr_celeba.txt (and of tfds `celeb_a`).
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)

_LAYOUT = (
    f"a folder holding {IMAGE_DIR}/ (the aligned JPEGs), {ATTRIBUTE_FILE} and optionally "
    f"{PARTITION_FILE}, as in CelebA's official release"
)


@dataclasses.dataclass(frozen=True)
class AttributeTable:
    """The parsed attribute file.

    Attributes:
        names: the attribute names of line 2.
        filenames: one per row, in file order.
        values: int8 [N, A], each -1 or 1.
    """

    names: tuple[str, ...]
    filenames: tuple[str, ...]
    values: np.ndarray


def _fix(path: str) -> str:
    return (
        f"Check {path} against CelebA's official file (line 1: the number of rows; line 2: the 40 "
        "attribute names; then one row per image: the file name and 40 values, each 1 or -1)."
    )


def read_attribute_file(path: str | os.PathLike[str]) -> AttributeTable:
    """Parses `list_attr_celeba.txt`.

    Raises:
        FileNotFoundError: the file is absent.
        ValueError: a malformed file (a row count that is not the file's, other names than
            CelebA's 40 in their order, a row without 40 values of 1 or -1, a file listed twice);
            the message gives the file, the line and the fix.
    """
    path = os.fspath(path)
    lines = read_index_file(
        path,
        not_found=f"CelebA attribute file {path} not found. The CelebA folder must be {_LAYOUT};"
        f" copy {ATTRIBUTE_FILE} from the CelebA release (Anno/) into it.",
        header="a row count and a line of names",
        fix=_fix(path),
    )
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise ValueError(
            f"{path}, line 1: expected the number of rows, got {lines[0][:80]!r}. {_fix(path)}"
        ) from None
    names = tuple(lines[1].split())
    if names != ATTRIBUTE_NAMES:
        raise ValueError(
            f"{path}, line 2: expected CelebA's {len(ATTRIBUTE_NAMES)} attribute names in the"
            f" official order ({' '.join(ATTRIBUTE_NAMES[:3])} ... {ATTRIBUTE_NAMES[-1]}), got"
            f" {len(names)} names ({' '.join(names[:3])} ...). {_fix(path)}"
        )
    filenames, rows = [], []
    for lineno, fields in index_rows(
        lines, path, num_keys=1, num_values=len(names), value="value", fix=_fix(path)
    ):
        try:
            row = [int(v) for v in fields[1:]]
        except ValueError:
            raise ValueError(
                f"{path}, line {lineno}: attribute values must be integers 1 or -1, got "
                f"{' '.join(fields[1:6])} ... (row {fields[0]!r}). {_fix(path)}"
            ) from None
        if any(v not in (-1, 1) for v in row):
            bad = sorted({v for v in row if v not in (-1, 1)})
            raise ValueError(
                f"{path}, line {lineno}: attribute values must be 1 or -1, got {bad} (row"
                f" {fields[0]!r}). {_fix(path)}"
            )
        filenames.append(fields[0])
        rows.append(row)
    if not filenames:
        raise ValueError(f"{path} lists no images. {_fix(path)}")
    if declared != len(filenames):
        raise ValueError(
            f"{path}, line 1: says {declared} rows but the file has {len(filenames)}; a truncated"
            f" or edited file? Fix line 1 or restore the file. {_fix(path)}"
        )
    if len(set(filenames)) != len(filenames):
        seen, dups = set(), []
        for name in filenames:
            if name in seen:
                dups.append(name)
            seen.add(name)
        raise ValueError(
            f"{path} lists {len(dups)} file(s) twice, e.g. {dups[:3]}; each image must have one"
            " row."
        )
    return AttributeTable(names=names, filenames=tuple(filenames), values=np.asarray(rows, np.int8))


def read_partition_file(path: str | os.PathLike[str], filenames: tuple[str, ...]) -> np.ndarray:
    """Parses `list_eval_partition.txt`: the split (0 train, 1 validation, 2 test) of each file.

    Args:
        path: the partition file.
        filenames: the files to look up (the attribute file's rows); rows for other files are
          ignored.

    Returns:
        int8 [N]: the split of each of `filenames`.

    Raises:
        ValueError: a malformed line, or a file of `filenames` without a row.
    """
    path = os.fspath(path)
    partition = {}
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(
                    f"{path}, line {lineno}: expected 'FILENAME SPLIT' with SPLIT 0 (train), 1"
                    f" (validation) or 2 (test), got {line.strip()[:80]!r}. Restore the file from"
                    " CelebA's release (Eval/), or delete it to split by file order instead."
                )
            partition[fields[0]] = int(fields[1])
    missing = [name for name in filenames if name not in partition]
    if missing:
        raise ValueError(
            f"{path} has no row for {len(missing)} of the {len(filenames)} images of"
            f" {ATTRIBUTE_FILE}, e.g. {missing[:3]}. Use the partition file that belongs to this"
            " attribute file, or delete it to split by file order instead."
        )
    return np.asarray([partition[name] for name in filenames], np.int8)


def split_by_file_order(num_examples: int) -> np.ndarray:
    """The split of each row when there is no partition file: int8 [N] (0 train, 1 val, 2 test).

    Validation and test get `round(N / 18)` rows each, taken from the end (validation first);
    train gets the rest. For N = 9,000: 8,000 / 500 / 500.
    """
    held_out = int(round(num_examples / 18))
    split = np.zeros((num_examples,), np.int8)
    split[num_examples - 2 * held_out : num_examples - held_out] = 1
    split[num_examples - held_out :] = 2
    return split


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """What preparing a CelebA folder will read: the parsed files and the split of each row."""

    source_dir: str
    table: AttributeTable
    split: np.ndarray  # int8 [N]
    partition_file_used: bool


def plan_source(source_dir: str | os.PathLike[str]) -> SourcePlan:
    """Checks a CelebA folder and parses its attribute and partition files.

    Raises:
        FileNotFoundError: the folder, its image folder or its attribute file is absent.
        ValueError: a malformed attribute or partition file.
    """
    source_dir = os.path.abspath(os.path.expanduser(os.fspath(source_dir)))
    if not os.path.isdir(source_dir):
        raise FileNotFoundError(
            f"CelebA folder {source_dir} does not exist. Pass source_dir={_LAYOUT} (for example "
            "../shared/data/celeba)."
        )
    image_dir = os.path.join(source_dir, IMAGE_DIR)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(
            f"CelebA image folder {image_dir} not found. The CelebA folder must be {_LAYOUT};"
            " extract img_align_celeba.zip into it."
        )
    table = read_attribute_file(os.path.join(source_dir, ATTRIBUTE_FILE))
    partition_path = os.path.join(source_dir, PARTITION_FILE)
    if os.path.isfile(partition_path):
        split = read_partition_file(partition_path, table.filenames)
        used = True
    else:
        split = split_by_file_order(len(table.filenames))
        used = False
    return SourcePlan(source_dir=source_dir, table=table, split=split, partition_file_used=used)


@dataclasses.dataclass(eq=False)
class CelebAConfig(tfds.core.BuilderConfig):
    """Which folder to read (None: tfds's manual directory) and how many bad images to tolerate."""

    source_dir: str | None = None
    max_bad_images: int = 0


def make_config(
    source_dir: str | os.PathLike[str] | None = None, *, max_bad_images: int = 0
) -> CelebAConfig:
    """The config for a folder: named after the folder and a fingerprint of its files.

    A changed attribute or partition file, a replaced image (the fingerprint covers the bytes of
    every file in the image folder) or a different folder gets a new name, so it is prepared
    afresh rather than read stale from the cache; new modification times alone do not.
    """
    if max_bad_images < 0:
        raise ValueError(f"max_bad_images must be >= 0, got {max_bad_images}.")
    if source_dir is None:
        if max_bad_images == 0:
            return CelebA.builder_configs["manual"]
        return CelebAConfig(name=f"manual_bad{max_bad_images}", max_bad_images=max_bad_images)
    source_dir = os.path.abspath(os.path.expanduser(os.fspath(source_dir)))
    return CelebAConfig(
        name=folder_config_name(
            source_dir,
            (ATTRIBUTE_FILE, PARTITION_FILE),
            {"max_bad_images": max_bad_images},
            image_dir=IMAGE_DIR,
        ),
        description=f"CelebA read from {source_dir}.",
        source_dir=source_dir,
        max_bad_images=max_bad_images,
    )


class CelebA(LocalBuilder):
    """CelebA faces cropped to 64x64 with their 40 attributes, from a local folder."""

    name = "celeba"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "64x64 crop (side 0.8 x width, centre at 0.55 x height)."}
    BUILDER_CONFIGS = [
        CelebAConfig(name="manual", description="CelebA read from tfds's manual directory.")
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "manual"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Place CelebA in the manual directory as {_LAYOUT}, or pass source_dir=<that folder>."
    )
    FOLDER_NAME = "CelebA"
    FOLDER_LAYOUT = _LAYOUT

    def __init__(
        self,
        *,
        source_dir: str | os.PathLike[str] | None = None,
        max_bad_images: int = 0,
        num_workers: int | None = None,
        config: CelebAConfig | str | None = None,
        **kwargs,
    ):
        """Creates the builder.

        Args:
            source_dir: the CelebA folder; None reads tfds's manual directory instead.
            max_bad_images: absent, undecodable or badly sized images to skip (with a warning)
                before failing.
            num_workers: decoding processes (None: one per core for large folders, else none).
            config: an explicit config (overrides source_dir and max_bad_images).
            **kwargs: `tfds.core.DatasetBuilder`'s (`data_dir`, ...).
        """
        if config is None:
            config = make_config(source_dir, max_bad_images=max_bad_images)
        self._num_workers = num_workers
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # Record i of a split is its i-th row in file order.
        return self._face_info(
            description="CelebA aligned faces, cropped and resized to 64x64, with 40 attributes.",
            attribute_names=ATTRIBUTE_NAMES,
            encoding="signed",
            extra_features={"filename": tfds.features.Text()},
            homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        )

    def _split_generators(self, dl_manager):
        plan = plan_source(self._source_dir(dl_manager))
        image_dir = os.path.join(plan.source_dir, IMAGE_DIR)
        self._bad = BadImages(
            max_bad_images=self.builder_config.max_bad_images,
            listed_in=os.path.join(plan.source_dir, ATTRIBUTE_FILE),
            image_dir=image_dir,
        )
        present = set(os.listdir(image_dir))
        self._bad.check_present(plan.table.filenames, present)
        self.info.metadata["partition"] = (
            "official" if plan.partition_file_used else "file_order_18ths"
        )
        self.info.metadata["source_dir"] = plan.source_dir
        return {
            split: self._generate_examples(plan, np.flatnonzero(plan.split == i), present)
            for i, split in enumerate(SPLITS)
            if np.any(plan.split == i)
        }

    def _generate_examples(self, plan: SourcePlan, rows: np.ndarray, present: set[str]):
        table = plan.table
        image_dir = os.path.join(plan.source_dir, IMAGE_DIR)
        for row, filename, image in self._read_faces(
            "celeba", image_dir, table.filenames, rows, present
        ):
            yield row, {
                "image": image,
                "attributes": table.values[row].astype(np.float32),
                "filename": filename,
            }


def attribute_names() -> tuple[str, ...]:
    """CelebA's 40 attribute names, in file order."""
    return ATTRIBUTE_NAMES
