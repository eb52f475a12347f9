"""`synthetic_faces`: procedurally rendered 64x64 faces whose attributes are known exactly.

Rendered locally with numpy and Pillow when the dataset is prepared, so that every command works
offline. 20 binary attributes, named as CelebA names them (see `ATTRIBUTE_NAMES` and the table
in `cmma_jax/data/_render.py`), each visible in the image; nuisance variation that is not an
attribute (position, scale, rotation, skin tone, hair shade, eye and clothes colour, background
gradient and clutter, lighting direction and gain) keeps the task from being trivial. The pose
(position, scale, rotation) is aligned by default, as in CelebA's and LFW's released images
(`DEFAULT_JITTER`); `jitter=1.0` spreads it over release 1.0.0's full ranges.

Deterministic: example `i` of split `s` is rendered from `np.random.default_rng([seed, s, i])`
(splits numbered train 0, validation 1, test 2), so it does not depend on the split sizes or on
the number of worker processes that render it.

Usage:

    builder = SyntheticFaces(data_dir="~/tensorflow_datasets")            # 20k/2k/2k, seed 0
    builder = SyntheticFaces(config=make_config(num_train=500), data_dir=...)  # a small variant
    builder = SyntheticFaces(config=make_config(jitter=1.0), data_dir=...)     # release 1.0.0's poses
    builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source(split="train")  # source[i] -> {"image", "attributes", "index"}

Attributes are stored as float32 in {-1, +1} (CelebA's encoding); `cmma_jax.data.pipeline`
re-encodes them as configured.

Ground truth. Every face is rendered from a `FaceSpec`, so its true counterfactual (the same face
with one attribute switched, everything else unchanged) can be rendered exactly:

    config = config_from_options(model_config.data.options)     # the variant a model saw
    spec = example_spec(config, "test", 7)                      # what test record 7 was drawn from
    image = render_face(spec.switch_attribute("Eyeglasses"))    # the same face, glasses switched
    images, attributes = render_counterfactuals(config, "test", 0, 100, "Eyeglasses")

The hair colours switch together as the renderer draws them (`_render.FaceSpec.switch_attribute`:
switching a hair colour on turns the face's own colour off; switching the face's hair colour off
gives red hair, the colour drawn when no hair attribute is set).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from cmma_jax.data import _parallel
from cmma_jax.data._builder import LocalBuilder
from cmma_jax.data import _render
from cmma_jax.data._render import (  # noqa: F401
    ATTRIBUTE_NAMES,
    HAIR_COLOURS,
    PERIODIC_NUISANCE,
    FaceSpec,
    render_face,
    sample_face,
)
from cmma_jax.images import IMAGE_SHAPE

SPLITS = ("train", "validation", "test")
DEFAULT_SIZES = {"train": 20_000, "validation": 2_000, "test": 2_000}
# The pose's spread (`_render.sample_nuisance`): 1 draws faces anywhere within +-5 pixels,
# tilted up to +-12 degrees, at scales 0.8-1 (release 1.0.0 of this dataset); the default, 0, draws
# aligned faces (centred, upright, scale 0.9), as CelebA's "aligned" and LFW's deep-funneled images
# are. On fully jittered faces the CPU-sized CMMA drew no eyes, mouths or glasses in 15,000 steps;
# on aligned ones it draws them within the README's 3,000; at jitter 0.25 (+-1.25 pixels, +-3
# degrees) hardly (RESULTS.md, "Synthetic faces: readable in minutes").
DEFAULT_JITTER = 0.0
_CHUNK = 250  # examples per unit of work for a worker process
# The builder options (`cmma_jax.data.registry`): the sizes and seed of `make_config`, and the
# builder's render processes.
OPTIONS = ("num_train", "num_validation", "num_test", "seed", "jitter", "num_workers")


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
    """Split sizes and seed of a `synthetic_faces` variant (the name should say which)."""

    num_train: int = DEFAULT_SIZES["train"]
    num_validation: int = DEFAULT_SIZES["validation"]
    num_test: int = DEFAULT_SIZES["test"]
    seed: int = 0
    jitter: float = DEFAULT_JITTER

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}


def make_config(
    *,
    num_train: int = DEFAULT_SIZES["train"],
    num_validation: int = DEFAULT_SIZES["validation"],
    num_test: int = DEFAULT_SIZES["test"],
    seed: int = 0,
    jitter: float = DEFAULT_JITTER,
) -> SyntheticFacesConfig:
    """The config for these sizes, seed and pose jitter (0: aligned faces, 1: the full pose
    ranges; `_render.sample_nuisance`): "default" for the defaults, else a name saying them.

    Each variant is prepared in its own folder (`<data_dir>/synthetic_faces/<name>/<version>`).
    """
    sizes = (num_train, num_validation, num_test)
    if any(n < 0 for n in sizes) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            f"Split sizes and seed must be non-negative integers; got sizes {sizes}, seed {seed!r}."
        )
    jitter = _render.check_jitter(jitter)
    if sizes == tuple(DEFAULT_SIZES.values()) and seed == 0 and jitter == DEFAULT_JITTER:
        return SyntheticFaces.builder_configs["default"]
    return SyntheticFacesConfig(
        name=f"train{num_train}_validation{num_validation}_test{num_test}_seed{seed}"
        + ("" if jitter == DEFAULT_JITTER else f"_jitter{jitter:g}"),
        description=f"{num_train}/{num_validation}/{num_test} examples, seed {seed}, "
        f"pose jitter {jitter:g}.",
        num_train=num_train,
        num_validation=num_validation,
        num_test=num_test,
        seed=seed,
        jitter=jitter,
    )


def render_split(config: SyntheticFacesConfig, split: str, start: int, stop: int):
    """Images uint8 [N, 64, 64, 3] and attributes float32 [N, A] of examples `start..stop-1`.

    Exactly what the prepared dataset holds at those indices (used by tests and the contact sheet).
    """
    return _stack(_render.render_range((config.seed, SPLITS.index(split), start, stop,
                                        config.jitter)))


def config_from_options(options) -> SyntheticFacesConfig:
    """The variant that a config's `data.options` (or `pipeline.load`'s options) prepares.

    None values mean the default and `num_workers` changes nothing rendered; both are ignored.

    Raises:
        ValueError: for an option this builder does not take (naming the ones it takes).
    """
    options = {k: v for k, v in dict(options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"synthetic_faces does not take the option(s) {unknown}; it takes {list(OPTIONS)}."
        )
    options.pop("num_workers", None)
    return make_config(**{k: float(v) if k == "jitter" else int(v) for k, v in options.items()})


def _check_range(config: SyntheticFacesConfig, split: str, start: int, stop: int) -> int:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    size = config.split_sizes()[split]
    if not 0 <= start <= stop <= size:
        raise IndexError(
            f"Examples {start}..{stop - 1} are not all in the {split!r} split of "
            f"synthetic_faces/{config.name}, which has {size}; ask for indices below {size}."
        )
    return SPLITS.index(split)


def example_spec(config: SyntheticFacesConfig, split: str, index: int) -> FaceSpec:
    """The `FaceSpec` of example `index` of a split: record `index` of the prepared split is
    `render_face` of it (its attributes are `spec.attribute_vector()`).

    Raises:
        IndexError: if the split has no example `index`.
    """
    split_index = _check_range(config, split, index, index + 1)
    return _render.example_spec(config.seed, split_index, index, config.jitter)


def split_specs(config: SyntheticFacesConfig, split: str, start: int, stop: int) -> list[FaceSpec]:
    """The `FaceSpec`s of examples `start..stop-1` of a split (see `example_spec`)."""
    split_index = _check_range(config, split, start, stop)
    return [_render.example_spec(config.seed, split_index, i, config.jitter)
            for i in range(start, stop)]


def _stack(results):
    images = (
        np.stack([r[0] for r in results]) if results else np.zeros((0,) + IMAGE_SHAPE, np.uint8)
    )
    attributes = (
        np.stack([r[1] for r in results])
        if results
        else np.zeros((0, len(ATTRIBUTE_NAMES)), np.float32)
    )
    return images, attributes


def render_counterfactuals(
    config: SyntheticFacesConfig, split: str, start: int, stop: int, attribute: str
):
    """The true counterfactuals of examples `start..stop-1` of a split: each face with
    `attribute` switched (`FaceSpec.switch_attribute`), every other attribute (but the hair
    colours switched with it) and all the nuisance unchanged.

    Returns:
        Images uint8 [N, 64, 64, 3] and attributes float32 [N, A] in {-1, +1}, in the layout of
        `render_split`.

    Raises:
        KeyError: for an attribute that is not one of `ATTRIBUTE_NAMES`.
        IndexError: for indices outside the split.
    """
    if attribute not in ATTRIBUTE_NAMES:
        raise KeyError(f"Unknown attribute {attribute!r}; expected one of {ATTRIBUTE_NAMES}.")
    split_index = _check_range(config, split, start, stop)
    return _stack(
        _render.render_counterfactual_range(
            (config.seed, split_index, start, stop, config.jitter, attribute)
        )
    )


class SyntheticFaces(LocalBuilder):
    """Procedurally rendered faces with exactly known CelebA-style attributes."""

    name = "synthetic_faces"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: 20 attributes, 64x64.",
        "1.1.0": "The pose's spread is an option (jitter); the default draws aligned faces "
        "(jitter 0); jitter=1 renders release 1.0.0's faces.",
    }
    BUILDER_CONFIGS = [
        SyntheticFacesConfig(
            name="default",
            description="20,000 / 2,000 / 2,000 examples, seed 0, aligned (pose jitter 0).",
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """Creates the builder.

        Args:
            num_workers: render processes (None: one per core for large splits, else none).
            **kwargs: `tfds.core.DatasetBuilder`'s (`config`, `data_dir`, ...).
        """
        self._num_workers = num_workers
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # The images are compressed by the render workers; example i of a split is record i of
        # the prepared split.
        return self._face_info(
            description=__doc__.split("\n\n")[0],
            attribute_names=ATTRIBUTE_NAMES,
            encoding="signed",
            extra_features={"index": np.int64},
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        sizes = self.builder_config.split_sizes()
        return {split: self._generate_examples(split, n) for split, n in sizes.items() if n > 0}

    def _generate_examples(self, split: str, num_examples: int):
        config = self.builder_config
        split_index = SPLITS.index(split)
        chunks = [
            (config.seed, split_index, start, min(start + _CHUNK, num_examples), config.jitter)
            for start in range(0, num_examples, _CHUNK)
        ]
        num_workers = self._num_workers
        if num_workers is None:
            num_workers = _parallel.default_num_workers(num_examples)
        results = _parallel.ordered_map(_render.render_range_compressed, chunks, num_workers)
        for index, (image, attributes) in enumerate(results):
            yield index, {"image": image, "attributes": attributes, "index": index}
