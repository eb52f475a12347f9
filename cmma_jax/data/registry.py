"""The datasets this package reads: one `Dataset` entry per name, in `REGISTRY`.

An entry says how to make the dataset's tfds builder, which builder options it takes (each builder
module declares them as `OPTIONS`), and its attribute names. The input pipeline
(`cmma_jax.data.pipeline`) looks datasets up here instead of branching on their names; a new
dataset is a builder module and one entry below.

Two folders, named as in the configs' `data` section and the launch flags:
    data_dir      the raw dataset folder the user has (CelebA's or LFW's files); only the
                  datasets with `reads_folder` take one.
    prepared_dir  where prepared (array_record) datasets are cached; tfds's `data_dir`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import tensorflow_datasets as tfds

from cmma_jax.data import celeba as celeba_lib
from cmma_jax.data import lfw as lfw_lib
from cmma_jax.data import synthetic_faces as synthetic_lib

# The options of the lfw builder, for as long as `lfw.py` does not declare its own `OPTIONS`.
_LFW_OPTIONS = ("num_train", "num_validation", "max_bad_images", "num_workers")

MakeBuilder = Callable[[str | None, str, dict[str, Any]], tfds.core.DatasetBuilder]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset.

    Attributes:
        name: the name in configs and `pipeline.load` (`DATASETS`).
        options: the builder options it takes (besides the two folders).
        attribute_names: its attribute names in column order (for "lfw": the released file's; the
            names of a given folder are read by `names_of`).
        make_builder: `(data_dir, prepared_dir, options) -> builder`, not prepared yet; options
            already checked against `options`.
        reads_folder: whether it is prepared from a raw folder (`data_dir`).
        upstream: a tfds dataset that tfds downloads itself, read through `tfds.data_source`.
        names_of: `(builder, data_dir) -> names or None`, for datasets whose names depend on the
            folder (None: `attribute_names` always).
        figure_defaults: the attributes the papers' figures show by default
            (`cmma_jax.figures`): "rows" (Figure 4's two row attributes), "columns" (switched on
            one at a time), "edits" (Figure 6), "remove" (Figure 7), "arithmetic" (the two that
            pick face-arithmetic triples). None: the figures need the names given.
        recorded_options: builder options that change the faces and that a workdir records
            explicitly: option -> (today's default, the value a workdir written before the
            option existed was trained with) (`cmma_jax.workdirs`).
    """

    name: str
    options: tuple[str, ...]
    attribute_names: tuple[str, ...]
    make_builder: MakeBuilder
    reads_folder: bool
    upstream: bool = False
    names_of: Callable[[tfds.core.DatasetBuilder, str | None], tuple[str, ...] | None] | None = None
    figure_defaults: Mapping[str, Any] | None = None
    recorded_options: Mapping[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)


def _synthetic_faces(data_dir, prepared_dir, options):
    if data_dir is not None:
        raise ValueError(
            "synthetic_faces is rendered locally and takes no data_dir (raw dataset folder)."
        )
    options = dict(options)
    num_workers = options.pop("num_workers", None)
    return synthetic_lib.SyntheticFaces(
        config=synthetic_lib.make_config(**options), data_dir=prepared_dir, num_workers=num_workers
    )


def _celeba(data_dir, prepared_dir, options):
    return celeba_lib.CelebA(source_dir=data_dir, data_dir=prepared_dir, **options)


def _lfw(data_dir, prepared_dir, options):
    return lfw_lib.Lfw(source_dir=data_dir, data_dir=prepared_dir, **options)


def _celeb_a(data_dir, prepared_dir, options):
    del options  # takes none
    if data_dir is not None:
        raise ValueError(
            "celeb_a is tfds's upstream dataset, downloaded by tfds, and takes no data_dir (raw"
            " dataset folder); for a local CelebA folder use name='celeba'."
        )
    return tfds.builder("celeb_a", data_dir=prepared_dir, file_format="array_record")


def _lfw_names(builder, data_dir):
    """The names of the prepared dataset if there is one, else of the attribute file's header."""
    if os.path.isdir(os.fspath(builder.data_dir)) and builder.info.metadata:
        names = builder.info.metadata.get("attribute_names")
        if names:
            return tuple(names)
    return lfw_lib.attribute_names_in(
        data_dir, getattr(builder.builder_config, "attribute_file", None)
    )


# The figures' attributes. LFW's rows are the paper's (Male, Asian); CelebA has no 'Asian'
# (erratum 9) and uses Pale_Skin; synthetic_faces has CelebA's names.
_CELEBA_FIGURES = dict(
    rows=("Male", "Pale_Skin"),
    columns=("Mouth_Slightly_Open", "Eyeglasses", "Bushy_Eyebrows", "Big_Nose", "Pointy_Nose",
             "Big_Lips"),
    edits=("Big_Nose", "Eyeglasses", "Mustache", "Big_Lips"),
    remove="Eyeglasses",
    arithmetic=("Male", "Pale_Skin"),
)

REGISTRY: Mapping[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("synthetic_faces", synthetic_lib.OPTIONS, synthetic_lib.ATTRIBUTE_NAMES,
                _synthetic_faces, reads_folder=False, figure_defaults=_CELEBA_FIGURES,
                recorded_options={"jitter": (synthetic_lib.DEFAULT_JITTER, 1.0)}),
        Dataset("celeba", celeba_lib.OPTIONS, celeba_lib.ATTRIBUTE_NAMES, _celeba,
                reads_folder=True, figure_defaults=_CELEBA_FIGURES),
        Dataset("celeb_a", (), celeba_lib.ATTRIBUTE_NAMES, _celeb_a, reads_folder=False,
                upstream=True, figure_defaults=_CELEBA_FIGURES),
        Dataset("lfw", tuple(getattr(lfw_lib, "OPTIONS", _LFW_OPTIONS)), lfw_lib.ATTRIBUTE_NAMES,
                _lfw, reads_folder=True, names_of=_lfw_names,
                figure_defaults=dict(_CELEBA_FIGURES, rows=("Male", "Asian"))),
    )
}

DATASETS: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> Dataset:
    """The entry of a dataset; ValueError naming the known ones for another name."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}.") from None


def check_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options as a dict, if the dataset's builder takes every one of them."""
    taken = get(name).options
    options = dict(options or {})
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for dataset {name!r}; it takes {list(taken) or 'none'}."
        )
    return options
