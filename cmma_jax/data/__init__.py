"""Datasets and the input pipeline.

Modules:
    pipeline: `load(name, split, batch_size=..., seed=...)` -> fixed-shape dict batches through
        tfds data sources and grain; `attribute_names`, `prepare`, `get_state` / `set_state`.
    synthetic_faces: the `synthetic_faces` tfds builder (rendered locally, no download).
    celeba: the `celeba` tfds builder (a local CelebA folder) and CelebA's crop and names.
    lfw: the `lfw_attributes` tfds builder (LFWcrop faces + lfw_attributes.txt, the paper's data).

The names of `pipeline` used most are available here too (`cmma_jax.data.load`, ...); they are
imported on first use, so that importing this package (as prepare-time worker processes do)
stays cheap.
"""

_PIPELINE_NAMES = (
    "DATASETS",
    "ENCODINGS",
    "SPLITS",
    "BatchIterator",
    "Loaded",
    "attribute_names",
    "data_source",
    "default_data_dir",
    "encode_attributes",
    "get_builder",
    "get_state",
    "load",
    "prepare",
    "set_state",
)


def __getattr__(name):
    if name in _PIPELINE_NAMES:
        from cmma_jax.data import pipeline  # pylint: disable=g-import-not-at-top

        return getattr(pipeline, name)
    raise AttributeError(f"module 'cmma_jax.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PIPELINE_NAMES))
