"""An LFW folder: its attribute file (parsed, found, split as in the paper) and the layouts of
its faces. The folder's formats are described in `cmma_jax.data.lfw`, whose builder reads it and
which offers every name here too (`lfw.read_attribute_file`, `lfw.find_layout`, ...).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from cmma_jax.data._builder import index_rows, read_index_file

ATTRIBUTE_FILE = "lfw_attributes.txt"  # as released: real-valued scores
BINARY_ATTRIBUTE_FILE = "lfw_attributes_binary.txt"  # the same layout, values +-1
ATTRIBUTE_FILES = (ATTRIBUTE_FILE, BINARY_ATTRIBUTE_FILE)  # read in this order of preference
FACES_DIR = os.path.join("lfwcrop_color", "faces")
PAPER_NUM_TRAIN = 10_000
PAPER_NUM_VALIDATION = 1_000

# The layouts, in the order they are looked for, and their image folders.
LFWCROP = "lfwcrop"
ORIGINAL = "lfw"
DEEPFUNNELED = "lfw-deepfunneled"
LAYOUTS = (LFWCROP, ORIGINAL, DEEPFUNNELED)
LAYOUT_DIRS = {LFWCROP: FACES_DIR, ORIGINAL: "lfw", DEEPFUNNELED: "lfw-deepfunneled"}

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
    f"a folder holding the faces, as {FACES_DIR}/ (the LFWcrop colour faces, *.ppm), lfw/ or"
    " lfw-deepfunneled/ (person folders of 250x250 JPEGs, <Person_Name>/<Person_Name>_NNNN.jpg),"
    f" and {ATTRIBUTE_FILE} (Kumar et al.'s attribute scores) or {BINARY_ATTRIBUTE_FILE}"
)


def face_filename(person: str, imagenum: int, ext: str = ".ppm") -> str:
    """The file of a row: `Aaron Eckhart`, 1 -> `Aaron_Eckhart_0001.ppm` (`ext` ".jpg": JPEG)."""
    return f"{'_'.join(person.split())}_{imagenum:04d}{ext}"


def image_path(layout: str, person: str, imagenum: int) -> str:
    """A row's image, relative to the layout's image folder.

    `Aaron Eckhart`, 1 -> `Aaron_Eckhart_0001.ppm` (LFWcrop) or
    `Aaron_Eckhart/Aaron_Eckhart_0001.jpg` (the person-folder layouts).
    """
    if layout == LFWCROP:
        return face_filename(person, imagenum)
    return os.path.join("_".join(person.split()), face_filename(person, imagenum, ".jpg"))


@dataclasses.dataclass(frozen=True)
class AttributeTable:
    """The parsed attribute file.

    Attributes:
        names: the attribute names, normalised (`normalize_name`), in column order.
        people: the person of each row, in file order.
        imagenums: the image number of each row.
        scores: float32 [N, A], the values as in the file (real scores, or +-1).
    """

    names: tuple[str, ...]
    people: tuple[str, ...]
    imagenums: tuple[int, ...]
    scores: np.ndarray

    @property
    def filenames(self) -> tuple[str, ...]:
        """The LFWcrop file name of each row (`face_filename`)."""
        return tuple(face_filename(p, n) for p, n in zip(self.people, self.imagenums))

    @property
    def is_binary(self) -> bool:
        """Whether every value is -1 or 1 (the binarised file)."""
        return bool(np.all(np.abs(self.scores) == 1.0))

    def head(self, num_rows: int | None) -> "AttributeTable":
        """The first `num_rows` rows (None: all)."""
        if num_rows is None or num_rows >= len(self.people):
            return self
        return AttributeTable(
            names=self.names,
            people=self.people[:num_rows],
            imagenums=self.imagenums[:num_rows],
            scores=self.scores[:num_rows],
        )


def _fix(path: str) -> str:
    return (
        f"Check {path} against the released file: a header line; a tab-separated line of column"
        f" names (person, imagenum, then the {NUM_ATTRIBUTES} attribute names); then one"
        f" tab-separated row per image: the name, the image number and {NUM_ATTRIBUTES} values"
        " (real-valued scores, or +-1 in the binary file)."
    )


def read_attribute_file(path: str | os.PathLike[str]) -> AttributeTable:
    """Parses an attribute file: `lfw_attributes.txt` (real scores) or its binary copy (+-1).

    Raises:
        FileNotFoundError: the file is absent.
        ValueError: a malformed file (columns other than person, imagenum and 73 attribute names;
            a row without an image number and 73 finite scores; an image listed twice); the
            message gives the file, the line and the fix.
    """
    path = os.fspath(path)
    lines = read_index_file(
        path,
        not_found=f"LFW attribute file {path} not found. The LFW folder must be {_LAYOUT};"
        f" download {ATTRIBUTE_FILE} from the PubFig/LFW attributes page (Columbia CAVE) into it.",
        header="a header line and a line of column names",
        fix=_fix(path),
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
    first_line: dict[tuple[str, int], int] = {}
    for lineno, fields in index_rows(
        lines, path, num_keys=2, num_values=len(names), value="score", fix=_fix(path), sep="\t"
    ):
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
        key = (normalize_name(fields[0]), imagenum)
        if key in first_line:
            # A face listed twice would land in two splits (train and test) or weigh double.
            raise ValueError(
                f"{path}, line {lineno}: image {imagenum} of {fields[0].strip()!r} is listed again"
                f" (first on line {first_line[key]}); each image must have one row. {_fix(path)}"
            )
        first_line[key] = lineno
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


def find_attribute_file(
    source_dir: str | os.PathLike[str], attribute_file: str | os.PathLike[str] | None = None
) -> str:
    """The attribute file of an LFW folder: `attribute_file` if given (a name in the folder or a
    path), else the first of `ATTRIBUTE_FILES` present.

    Raises:
        FileNotFoundError: none is present; the message names what was looked for.
    """
    source_dir = os.fspath(source_dir)
    if attribute_file is not None:
        path = os.path.join(source_dir, os.fspath(attribute_file))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"LFW attribute file {path} (attribute_file={os.fspath(attribute_file)!r}) not"
                f" found. Name a file in {source_dir} or give its path; the released one is"
                f" {ATTRIBUTE_FILE}."
            )
        return path
    for name in ATTRIBUTE_FILES:
        path = os.path.join(source_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"LFW attribute file {os.path.join(source_dir, ATTRIBUTE_FILE)} not found (nor"
        f" {BINARY_ATTRIBUTE_FILE}). The LFW folder must be {_LAYOUT}; download {ATTRIBUTE_FILE}"
        " from the PubFig/LFW attributes page (Columbia CAVE) into it."
    )


def attribute_names_in(
    source_dir: str | os.PathLike[str] | None,
    attribute_file: str | os.PathLike[str] | None = None,
) -> tuple[str, ...] | None:
    """The attribute names in the header of a folder's attribute file (`find_attribute_file`:
    `attribute_file` if given, else the released one); None if there is no such file."""
    if source_dir is None:
        return None
    try:
        return read_attribute_file(find_attribute_file(source_dir, attribute_file)).names
    except FileNotFoundError:
        return None


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


# --- layouts ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a folder's faces are: the layout's name (one of `LAYOUTS`) and its image folder."""

    name: str
    image_dir: str

    def path(self, person: str, imagenum: int) -> str:
        """A row's image, relative to `image_dir` (`image_path`)."""
        return image_path(self.name, person, imagenum)


def _layout_dir(source_dir: str, layout: str) -> str | None:
    """The image folder of `layout` in `source_dir`, or None if it has none."""
    path = os.path.join(source_dir, LAYOUT_DIRS[layout])
    if not os.path.isdir(path):
        return None
    if layout != LFWCROP:
        nested = os.path.join(path, LAYOUT_DIRS[layout])  # lfw/lfw/<Person>/, as some archives
        if os.path.isdir(nested):
            return nested
    return path


def _check_layout_name(layout: str | None) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"Unknown LFW layout {layout!r}; expected one of {LAYOUTS} or None.")


def find_layout(source_dir: str | os.PathLike[str], layout: str | None = None) -> Layout:
    """The layout of an LFW folder: `layout` if given, else the first of `LAYOUTS` present.

    Raises:
        FileNotFoundError: the folder, or the layout's image folder, is absent; the message says
            what was expected.
        ValueError: an unknown layout name.
    """
    _check_layout_name(layout)
    source_dir = check_folder(source_dir)
    if layout is not None:
        image_dir = _layout_dir(source_dir, layout)
        if image_dir is None:
            raise FileNotFoundError(
                f"LFW image folder {os.path.join(source_dir, LAYOUT_DIRS[layout])} not found"
                f" (layout={layout!r}). The LFW folder must be {_LAYOUT}."
            )
        return Layout(layout, image_dir)
    for name in LAYOUTS:
        image_dir = _layout_dir(source_dir, name)
        if image_dir is not None:
            return Layout(name, image_dir)
    raise FileNotFoundError(
        f"No LFW faces in {source_dir}: {FACES_DIR} not found, nor lfw/ or lfw-deepfunneled/. The"
        f" LFW folder must be {_LAYOUT}; extract lfwcrop_color.zip, lfw.tgz or"
        " lfw-deepfunneled.tgz into it."
    )


def check_folder(source_dir: str | os.PathLike[str]) -> str:
    """The absolute LFW folder; raises FileNotFoundError if it does not exist."""
    source_dir = os.path.abspath(os.path.expanduser(os.fspath(source_dir)))
    if not os.path.isdir(source_dir):
        raise FileNotFoundError(
            f"LFW folder {source_dir} does not exist. Pass source_dir={_LAYOUT}."
        )
    return source_dir


def check_source_dir(source_dir: str | os.PathLike[str]) -> str:
    """The absolute LFW folder; raises FileNotFoundError naming what is missing."""
    source_dir = check_folder(source_dir)
    find_layout(source_dir)
    return source_dir
