"""Reading a split in fixed-size chunks, for evaluation: `SplitReader` and `Chunk`.

        for chunk in SplitReader(config.data, "test", batch_size=64, limit=1000):
            chunk.images[: chunk.num_valid]   # the faces, float32 [n, 64, 64, 3] in [0, 1]
            chunk.raw_attributes              # the dataset's raw values; chunk.attributes(enc)

A split is read through `cmma_jax.data.pipeline.load_split` from a config's `data` section, with
the raw attribute encoding, in file order (the "train" split in its shuffled training order for
`seed`), and regrouped into chunks of one size, the last one padded, so that a jitted function
sees a single shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from cmma_jax.data import pipeline
from cmma_jax.metrics import pad_rows


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A fixed-size chunk of consecutive faces of a split (the last one padded).

    Attributes:
      start: the index in the split of the first face.
      images: `[n, H, W, 3]` float32 in [0, 1]; rows past `num_valid` repeat the last valid face.
      raw_attributes: `[n, A]` the dataset's raw attribute values (CelebA: -1/+1; LFW: scores).
      num_valid: how many rows are real faces.
    """

    start: int
    images: np.ndarray
    raw_attributes: np.ndarray
    num_valid: int

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    @property
    def indices(self) -> np.ndarray:
        """`[n]` int32 global indices (padding rows continue the count; their results are
        dropped)."""
        return np.arange(self.start, self.start + self.size, dtype=np.int32)

    @property
    def binary_attributes(self) -> np.ndarray:
        """`[n, A]` {0, 1}: raw value > 0 (the classifier's labels)."""
        return pipeline.encode_attributes(self.raw_attributes, "binary")

    def attributes(self, encoding: str) -> np.ndarray:
        """`[n, A]` in a model's encoding (`config.data.attribute_encoding`)."""
        return pipeline.encode_attributes(self.raw_attributes, encoding)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def _pad(images: np.ndarray, attributes: np.ndarray, size: int):
    """Pads both to `size` rows by repeating the last row (`metrics.pad_rows`)."""
    return pad_rows(images, size), pad_rows(attributes, size)


class SplitReader:
    """The first `limit` faces of a split, in file order, as fixed-size `Chunk`s.

    Reads through `pipeline.load_split` (a config's `data` section) with the raw attribute
    encoding, on this process alone. The loader drops incomplete batches, so it reads with the
    largest batch size that divides the number of faces, and regroups into chunks of `batch_size`
    (the last padded), so that a jitted function sees one shape. The "train" split comes in its
    shuffled training order for `seed`.

    Attributes:
      num_examples: the number of faces read (min(limit, faces in the split)).
      attribute_names: the dataset's attribute names.
    """

    def __init__(self, data_config, split: str, *, batch_size: int, limit: int | None = None,
                 seed: int = 0):
        if split not in pipeline.SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose one of {pipeline.SPLITS}.")
        config: dict[str, Any] = dict(data_config)  # a whole config is refused by load_split
        config["attribute_encoding"] = "raw"
        self.data_config, self.split, self.batch_size = config, split, int(batch_size)
        self.seed = int(seed)
        with self._load(batch_size=1) as probe:
            total = probe.num_examples
            self.attribute_names = probe.attribute_names
        self.num_examples = total if limit is None else min(int(limit), total)
        if self.num_examples < 1:
            raise ValueError(f"The {split!r} split has no faces to evaluate.")

    def _load(self, *, batch_size: int) -> pipeline.Loaded:
        return pipeline.load_split(self.data_config, self.split, batch_size=batch_size,
                                   seed=self.seed, shard_index=0, shard_count=1)

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def __iter__(self) -> Iterator[Chunk]:
        n, size = self.num_examples, self.batch_size
        read = _largest_divisor_at_most(n, max(size, 64))
        images, attributes, start, buffered = [], [], 0, 0
        with self._load(batch_size=read) as data:
            for _ in range(n // read):
                batch = next(data.iterator)
                images.append(batch["image"])
                attributes.append(batch["attributes"])
                buffered += read
                while buffered >= size:
                    im, at = np.concatenate(images), np.concatenate(attributes)
                    yield Chunk(start, im[:size], at[:size], size)
                    images, attributes = [im[size:]], [at[size:]]
                    start += size
                    buffered -= size
        if buffered:
            im, at = np.concatenate(images), np.concatenate(attributes)
            yield Chunk(start, *_pad(im, at, size), buffered)


def split_chunks(data_config, split: str, *, batch_size: int, limit: int | None = None,
                 seed: int = 0) -> SplitReader:
    """`SplitReader(data_config, split, ...)`: iterate it for `Chunk`s."""
    return SplitReader(data_config, split, batch_size=batch_size, limit=limit, seed=seed)


def chunks_from_arrays(images: np.ndarray, raw_attributes: np.ndarray,
                       batch_size: int) -> list[Chunk]:
    """`Chunk`s of in-memory arrays (faces `[N, ...]`, raw attributes `[N, A]`), for tests and
    for callers with their own data."""
    images, raw_attributes = np.asarray(images, np.float32), np.asarray(raw_attributes, np.float32)
    if images.shape[0] != raw_attributes.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {raw_attributes.shape[0]} attribute rows.")
    out = []
    for start in range(0, len(images), batch_size):
        im, at = images[start:start + batch_size], raw_attributes[start:start + batch_size]
        valid = len(im)
        out.append(Chunk(start, *_pad(im, at, batch_size), valid))
    return out
