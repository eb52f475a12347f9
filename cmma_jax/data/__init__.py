"""Datasets and the input pipeline: the bottom layer's data room.

Modules:
    pipeline: `load(name, split, batch_size=..., seed=...)` -> fixed-shape dict batches through
        tfds data sources and grain; the same from a config's `data` section (`load_split`,
        `prepare_from_config`, `builder_options`, `attribute_names_from_config`);
        `attribute_names`, `prepare`, `get_state` / `set_state`.
    preparing: a dataset's tfds builder, preparing it once (under a lock), a split's source;
        its names are `pipeline`'s too.
    batching: the grain side of `pipeline` (attribute encodings, `GlobalBatchSampler`,
        `BatchIterator`, `Loaded`); its names are `pipeline`'s too.
    reading: a split in fixed-size `Chunk`s, in file order (`SplitReader`), for evaluation.
    registry: one entry per dataset (its builder, the options it takes, its attribute names).
    synthetic_faces: the `synthetic_faces` tfds builder (rendered locally, no download).
    celeba: the `celeba` tfds builder (a local CelebA folder) and CelebA's crop and names.
    lfw: the `lfw_attributes` tfds builder (LFWcrop faces + lfw_attributes.txt, the paper's data).
    lfw_folder: an LFW folder's attribute file and face layouts, as `lfw` reads them.

Nothing here imports `cmma_jax` outside this package except `cmma_jax.images` (the image shape).

The names of `pipeline` used most are available here too (`cmma_jax.data.load`, ...); they are
imported on first use, so that importing this package (as prepare-time worker processes do)
stays cheap: a worker needs only the builder modules, not grain or JAX.
"""

_PIPELINE_NAMES = (
    "DATASETS",
    "ENCODINGS",
    "SPLITS",
    "BatchIterator",
    "Loaded",
    "attribute_names",
    "attribute_names_from_config",
    "builder_options",
    "check_num_attributes",
    "data_source",
    "default_prepared_dir",
    "encode_attributes",
    "get_builder",
    "get_state",
    "load",
    "load_split",
    "prepare",
    "prepare_from_config",
    "set_state",
)


def __getattr__(name):
    if name in _PIPELINE_NAMES:
        from cmma_jax.data import pipeline  # pylint: disable=g-import-not-at-top

        return getattr(pipeline, name)
    raise AttributeError(f"module 'cmma_jax.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PIPELINE_NAMES))
