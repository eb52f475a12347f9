"""`lfw`: the paper's data, LFWcrop colour faces with the 73 attribute scores of Kumar et al.

The folder (passed as `source_dir`, or as tfds's manual directory) holds:

    lfwcrop_color/faces/Aaron_Eckhart_0001.ppm ...   LFWcrop colour faces, 64x64 PPM
    lfw_attributes.txt                               Kumar et al.'s attribute scores

`lfw_attributes.txt` has a header line, then a tab-separated line of column names (`person`,
`imagenum`, then the 73 attribute names: `Male`, `Asian`, `White`, ...; a leading `#` field is
allowed, as in the released file), then one tab-separated row per image: the person's name, the
image number and 73 real-valued scores (positive: the attribute is present). Row `(person, n)` is
the face `lfwcrop_color/faces/<person with spaces as _>_<n as 4 digits>.ppm`. Faces without a
row are not used.

Attribute names are kept as in the file with spaces replaced by underscores, so that the shared
ones read as CelebA's do (`Mouth_Slightly_Open`, `Big_Nose`, ...). The prepared dataset keeps
the raw scores (float32); `cmma_jax.data.pipeline` offers them raw or binarised at 0.

Splits, the paper's: the first 10,000 rows of the attribute file (in file order) are train, the
next 1,000 validation, the rest (2,143 for the released file) test. Both sizes are options, so
that small fixtures can exercise all three splits.

Bad input raises an error that names the file and the fix, as for `celeba`; `max_bad_images=N`
skips up to N absent or undecodable faces with a warning.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import tensorflow_datasets as tfds

from cmma_jax.data import _images
from cmma_jax.data import _parallel
from cmma_jax.data._builder import BadImages, LocalBuilder, ZlibTensor, folder_config_name

IMAGE_SHAPE = (64, 64, 3)
ATTRIBUTE_FILE = "lfw_attributes.txt"
FACES_DIR = os.path.join("lfwcrop_color", "faces")
SPLITS = ("train", "validation", "test")
PAPER_NUM_TRAIN = 10_000
PAPER_NUM_VALIDATION = 1_000
_CHUNK = 200

# The 73 attribute columns of lfw_attributes.txt, as written in the file.
FILE_ATTRIBUTE_NAMES: tuple[str, ...] = (
    "Male",
    "Asian",
    "White",
    "Black",
    "Baby",
    "Child",
    "Youth",
    "Middle Aged",
    "Senior",
    "Black Hair",
    "Blond Hair",
    "Brown Hair",
    "Bald",
    "No Eyewear",
    "Eyeglasses",
    "Sunglasses",
    "Mustache",
    "Smiling",
    "Frowning",
    "Chubby",
    "Blurry",
    "Harsh Lighting",
    "Flash",
    "Soft Lighting",
    "Outdoor",
    "Curly Hair",
    "Wavy Hair",
    "Straight Hair",
    "Receding Hairline",
    "Bangs",
    "Sideburns",
    "Fully Visible Forehead",
    "Partially Visible Forehead",
    "Obstructed Forehead",
    "Bushy Eyebrows",
    "Arched Eyebrows",
    "Narrow Eyes",
    "Eyes Open",
    "Big Nose",
    "Pointy Nose",
    "Big Lips",
    "Mouth Closed",
    "Mouth Slightly Open",
    "Mouth Wide Open",
    "Teeth Not Visible",
    "No Beard",
    "Goatee",
    "Round Jaw",
    "Double Chin",
    "Wearing Hat",
    "Oval Face",
    "Square Face",
    "Round Face",
    "Color Photo",
    "Posed Photo",
    "Attractive Man",
    "Attractive Woman",
    "Indian",
    "Gray Hair",
    "Bags Under Eyes",
    "Heavy Makeup",
    "Rosy Cheeks",
    "Shiny Skin",
    "Pale Skin",
    "5 o' Clock Shadow",
    "Strong Nose-Mouth Lines",
    "Wearing Lipstick",
    "Flushed Face",
    "High Cheekbones",
    "Brown Eyes",
    "Wearing Earrings",
    "Wearing Necktie",
    "Wearing Necklace",
)
NUM_ATTRIBUTES = len(FILE_ATTRIBUTE_NAMES)  # 73


def normalize_name(name: str) -> str:
    """A file column name as this package names it: spaces become underscores."""
    return "_".join(name.split())


ATTRIBUTE_NAMES: tuple[str, ...] = tuple(normalize_name(n) for n in FILE_ATTRIBUTE_NAMES)

_LAYOUT = (
    f"a folder holding {FACES_DIR}/ (the LFWcrop colour faces, *.ppm) and {ATTRIBUTE_FILE} "
    "(Kumar et al.'s attribute scores)"
)


def face_filename(person: str, imagenum: int) -> str:
    """The LFWcrop file of a row: `Aaron Eckhart`, 1 -> `Aaron_Eckhart_0001.ppm`."""
    return f"{'_'.join(person.split())}_{imagenum:04d}.ppm"


@dataclasses.dataclass(frozen=True)
class AttributeTable:
    """The parsed attribute file.

    Attributes:
        names: the attribute names, normalised (`normalize_name`), in column order.
        people: the person of each row, in file order.
        imagenums: the image number of each row.
        scores: float32 [N, A], the real-valued attribute scores.
    """

    names: tuple[str, ...]
    people: tuple[str, ...]
    imagenums: tuple[int, ...]
    scores: np.ndarray

    @property
    def filenames(self) -> tuple[str, ...]:
        return tuple(face_filename(p, n) for p, n in zip(self.people, self.imagenums))


def _fix(path: str) -> str:
    return (
        f"Check {path} against the released file: a header line; a tab-separated line of column"
        f" names (person, imagenum, then the {NUM_ATTRIBUTES} attribute names); then one"
        f" tab-separated row per image: the name, the image number and {NUM_ATTRIBUTES} real-valued"
        " scores."
    )


def read_attribute_file(path: str | os.PathLike[str]) -> AttributeTable:
    """Parses `lfw_attributes.txt`.

    Raises:
        FileNotFoundError: the file is absent.
        ValueError: the file is malformed; the message gives the file, the line and the fix.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"LFW attribute file {path} not found. The LFW folder must be {_LAYOUT}; download "
            f"{ATTRIBUTE_FILE} from the PubFig/LFW attributes page (Columbia CAVE) into it."
        )
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if len(lines) < 2:
        raise ValueError(
            f"{path} has {len(lines)} line(s); it needs a header line and a line of column names."
            f" {_fix(path)}"
        )
    columns = [c.strip() for c in lines[1].split("\t")]
    if columns and columns[0] == "#":
        columns = columns[1:]
    elif columns and columns[0].startswith("#"):
        columns[0] = columns[0][1:].strip()
    if columns[:2] != ["person", "imagenum"]:
        raise ValueError(
            f"{path}, line 2: the tab-separated column names must start with 'person' and"
            f" 'imagenum', got {columns[:3]}. {_fix(path)}"
        )
    names = tuple(normalize_name(c) for c in columns[2:])
    if len(names) != NUM_ATTRIBUTES:
        raise ValueError(
            f"{path}, line 2: {len(names)} attribute names, expected {NUM_ATTRIBUTES}. {_fix(path)}"
        )
    people, imagenums, rows = [], [], []
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) - 2 != len(names):
            raise ValueError(
                f"{path}, line {lineno}: {len(fields) - 2} attribute scores for {len(names)}"
                f" attribute names (row {fields[0]!r}); every row must give one score per name of"
                f" line 2, tab-separated. {_fix(path)}"
            )
        try:
            imagenum = int(fields[1])
            row = [float(v) for v in fields[2:]]
        except ValueError:
            raise ValueError(
                f"{path}, line {lineno}: expected an integer image number and real-valued scores,"
                f" got {fields[1]!r}, {' '.join(fields[2:5])} ... (row {fields[0]!r}). {_fix(path)}"
            ) from None
        if not all(math.isfinite(v) for v in row):
            raise ValueError(
                f"{path}, line {lineno}: non-finite score (row {fields[0]!r}). {_fix(path)}"
            )
        people.append(fields[0].strip())
        imagenums.append(imagenum)
        rows.append(row)
    if not people:
        raise ValueError(f"{path} lists no images. {_fix(path)}")
    return AttributeTable(
        names=names,
        people=tuple(people),
        imagenums=tuple(imagenums),
        scores=np.asarray(rows, np.float32),
    )


def paper_split(
    num_rows: int, num_train: int = PAPER_NUM_TRAIN, num_validation: int = PAPER_NUM_VALIDATION
) -> np.ndarray:
    """The split of each row, int8 [N]: the first `num_train` train (0), the next `num_validation`
    validation (1), the rest test (2).

    Raises:
        ValueError: fewer rows than `num_train + num_validation + 1` (no test split).
    """
    if num_rows <= num_train + num_validation:
        raise ValueError(
            f"The split needs more than {num_train} + {num_validation} rows in {ATTRIBUTE_FILE} "
            f"(train, then validation, then test); it has {num_rows}. Use the full file, or pass "
            "smaller num_train / num_validation."
        )
    split = np.zeros((num_rows,), np.int8)
    split[num_train : num_train + num_validation] = 1
    split[num_train + num_validation :] = 2
    return split


def check_source_dir(source_dir: str | os.PathLike[str]) -> str:
    """The absolute LFW folder; raises FileNotFoundError naming what is missing."""
    source_dir = os.path.abspath(os.path.expanduser(os.fspath(source_dir)))
    if not os.path.isdir(source_dir):
        raise FileNotFoundError(
            f"LFW folder {source_dir} does not exist. Pass source_dir={_LAYOUT}."
        )
    faces = os.path.join(source_dir, FACES_DIR)
    if not os.path.isdir(faces):
        raise FileNotFoundError(
            f"LFWcrop face folder {faces} not found. The LFW folder must be {_LAYOUT}; extract "
            "lfwcrop_color.zip into it."
        )
    return source_dir


@dataclasses.dataclass(eq=False)
class LfwConfig(tfds.core.BuilderConfig):
    """The folder to read (None: tfds's manual directory), the split sizes, the bad-image budget."""

    source_dir: str | None = None
    num_train: int = PAPER_NUM_TRAIN
    num_validation: int = PAPER_NUM_VALIDATION
    max_bad_images: int = 0


def make_config(
    source_dir: str | os.PathLike[str] | None = None,
    *,
    num_train: int = PAPER_NUM_TRAIN,
    num_validation: int = PAPER_NUM_VALIDATION,
    max_bad_images: int = 0,
) -> LfwConfig:
    """The config for a folder: named after it and a fingerprint of its index file and options."""
    if min(num_train, num_validation, max_bad_images) < 0:
        raise ValueError("num_train, num_validation and max_bad_images must be >= 0.")
    options = {
        "num_train": num_train,
        "num_validation": num_validation,
        "max_bad_images": max_bad_images,
    }
    if source_dir is None:
        if (num_train, num_validation, max_bad_images) == (
            PAPER_NUM_TRAIN,
            PAPER_NUM_VALIDATION,
            0,
        ):
            return Lfw.builder_configs["manual"]
        return LfwConfig(name=f"manual_{num_train}_{num_validation}_bad{max_bad_images}", **options)
    source_dir = os.path.abspath(os.path.expanduser(os.fspath(source_dir)))
    return LfwConfig(
        name=folder_config_name(source_dir, (ATTRIBUTE_FILE,), options),
        description=f"LFWcrop faces and attributes read from {source_dir}.",
        source_dir=source_dir,
        **options,
    )


class Lfw(LocalBuilder):
    """LFWcrop colour faces (64x64) with Kumar et al.'s 73 real-valued attribute scores."""

    # tfds has its own `lfw` (identities, no attributes); this builder needs another name.
    name = "lfw_attributes"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "LFWcrop colour faces joined with lfw_attributes.txt; the paper's split."
    }
    BUILDER_CONFIGS = [
        LfwConfig(name="manual", description="LFW read from tfds's manual directory.")
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "manual"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Place {_LAYOUT} in the manual directory, or pass source_dir."

    def __init__(
        self,
        *,
        source_dir: str | os.PathLike[str] | None = None,
        num_train: int = PAPER_NUM_TRAIN,
        num_validation: int = PAPER_NUM_VALIDATION,
        max_bad_images: int = 0,
        num_workers: int | None = None,
        config: LfwConfig | str | None = None,
        **kwargs,
    ):
        """Creates the builder.

        Args:
            source_dir: the LFW folder; None reads tfds's manual directory instead.
            num_train, num_validation: the split (first rows train, next validation, rest test).
            max_bad_images: absent or undecodable faces to skip (with a warning) before failing.
            num_workers: decoding processes (None: one per core for large folders, else none).
            config: an explicit config (overrides the options above).
            **kwargs: `tfds.core.DatasetBuilder`'s (`data_dir`, ...).
        """
        if config is None:
            config = make_config(
                source_dir,
                num_train=num_train,
                num_validation=num_validation,
                max_bad_images=max_bad_images,
            )
        self._num_workers = num_workers
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "LFWcrop colour faces (64x64) with 73 real-valued attribute scores (Kumar et al.)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": ZlibTensor(shape=IMAGE_SHAPE, dtype=np.uint8, encoding="zlib"),
                    "attributes": tfds.features.Tensor(shape=(NUM_ATTRIBUTES,), dtype=np.float32),
                    "filename": tfds.features.Text(),
                }
            ),
            metadata=tfds.core.MetadataDict(attribute_names=list(ATTRIBUTE_NAMES), encoding="raw"),
            homepage="https://www.cs.columbia.edu/CAVE/databases/pubfig/",
            disable_shuffling=True,  # record i of a split is its i-th row in file order
        )

    def _source_dir(self, dl_manager) -> str:
        if self.builder_config.source_dir is not None:
            return self.builder_config.source_dir
        try:
            return os.fspath(dl_manager.manual_dir)
        except AssertionError as e:
            raise FileNotFoundError(
                f"No LFW folder given and tfds's manual directory is absent or empty ({e}). Pass "
                f"source_dir=<{_LAYOUT}>."
            ) from None

    def _split_generators(self, dl_manager):
        config = self.builder_config
        source_dir = check_source_dir(self._source_dir(dl_manager))
        attribute_path = os.path.join(source_dir, ATTRIBUTE_FILE)
        table = read_attribute_file(attribute_path)
        split = paper_split(len(table.people), config.num_train, config.num_validation)
        faces = os.path.join(source_dir, FACES_DIR)
        filenames = table.filenames
        self._bad = BadImages(
            max_bad_images=config.max_bad_images, listed_in=attribute_path, image_dir=faces
        )
        present = set(os.listdir(faces))
        self._bad.check_present(filenames, present)
        # The names in the file (normalised): their spelling may differ from FILE_ATTRIBUTE_NAMES.
        self.info.metadata["attribute_names"] = list(table.names)
        self.info.metadata["source_dir"] = source_dir
        return {
            name: self._generate_examples(
                table, filenames, np.flatnonzero(split == i), present, faces
            )
            for i, name in enumerate(SPLITS)
        }

    def _generate_examples(self, table, filenames, rows, present, faces):
        rows = [int(r) for r in rows if filenames[r] in present]
        chunks = [
            ("square", [os.path.join(faces, filenames[r]) for r in rows[i : i + _CHUNK]])
            for i in range(0, len(rows), _CHUNK)
        ]
        num_workers = self._num_workers
        if num_workers is None:
            num_workers = _parallel.default_num_workers(len(rows))
        skipped_before = len(self._bad.skipped())
        for row, image in zip(
            rows, _parallel.ordered_map(_images.load_compressed, chunks, num_workers)
        ):
            if isinstance(image, str):
                self._bad.unreadable(filenames[row], image)
                continue
            yield row, {"image": image, "attributes": table.scores[row], "filename": filenames[row]}
        self.info.metadata["skipped_images"] = self._bad.skipped()
        self._bad.warn_skipped(since=skipped_before, total=len(rows))
