"""A device-resident input path for splits that fit in device memory.

        loaded = load_split_resident(config.data, "train", batch_size=64, seed=0,
                                     sharding=batch_sharding)   # None: not resident ("auto")
        batch = next(loaded.iterator)   # jax Arrays already on the devices, with `sharding`

The prepared split is read once through the same tfds data source as the grain path (uint8
images [N, 64, 64, 3] and raw attributes), put on the devices once (replicated over the devices
of `sharding`), and every step gathers its batch there by index: epoch e is ordered by
`jax.random.permutation(fold_in(key(seed), e), N)`, and batch b of the epoch is the rows
`perm[b·B : (b+1)·B]` (the remainder of an epoch is dropped). Images become float32 in [0, 1]
(the same `x * (1/255)` as the grain path) and attributes are encoded ("binary", "signed",
"raw", as `pipeline.encode_attributes`) on the device, inside the gather. No host work sits
between steps. The order differs from the grain path's (another shuffle), the distribution does
not: every training example once per epoch.

Position: the number of batches consumed. `get_state()` / `set_state()` give and take it as a
small JSON dict; `checkpoint_save_args()` / `checkpoint_restore_args()` are the orbax items that
`cmma_jax.checkpoints.save` / `restore` write and read for it (a JSON item "data" instead of the
grain iterator's).

`data.device_resident` chooses (`resolve`): "auto" (or unset) puts the split on the devices when
its uint8 images and attributes take at most `AUTO_FRACTION` of the first device's memory
(`memory_stats()["bytes_limit"]`); where a device reports no memory (the CPU), "auto" is off, so
CPU runs keep the grain path. "true" forces it, "false" refuses it. For now it serves one
process on a mesh (the trainer's default parallelism): multi-process and `pmap` runs keep the
grain path under "auto" and are refused with "true".
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cmma_jax.data import pipeline
from cmma_jax.images import IMAGE_SHAPE

AUTO_FRACTION = 0.25  # "auto": resident when the split takes at most this share of the device
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_setting(value) -> bool | str:
    """`data.device_resident` as True, False or "auto" (None and "auto" are "auto")."""
    if value is None or isinstance(value, bool):
        return "auto" if value is None else value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"data.device_resident must be 'auto', 'true' or 'false'; got {value!r}.")


def split_bytes(num_examples: int, num_attributes: int) -> int:
    """Device bytes of a resident split: uint8 images and float32 raw attributes."""
    return int(num_examples) * (int(np.prod(IMAGE_SHAPE)) + 4 * int(num_attributes))


def device_memory_bytes(device=None) -> int | None:
    """The memory of a device (`memory_stats()["bytes_limit"]`), or None where unknown (CPU)."""
    device = device if device is not None else jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    if not stats or not stats.get("bytes_limit"):
        return None
    return int(stats["bytes_limit"])


def resolve(setting, nbytes: int, *, parallelism: str = "mesh",
            process_count: int | None = None, device_memory: int | None | str = "ask",
            fraction: float = AUTO_FRACTION) -> bool:
    """Whether a split of `nbytes` goes on the devices under `data.device_resident = setting`.

    Raises:
      ValueError: "true" for a run this path does not serve yet (several processes, pmap), or a
        split that does not fit in the device's memory.
    """
    setting = parse_setting(setting)
    if setting is False:
        return False
    process_count = jax.process_count() if process_count is None else process_count
    supported = process_count == 1 and parallelism == "mesh"
    memory = device_memory_bytes() if device_memory == "ask" else device_memory
    if setting == "auto":
        return bool(supported and memory is not None and nbytes <= fraction * memory)
    if not supported:
        raise ValueError(
            "data.device_resident=true serves one process with training.parallelism='mesh' for "
            f"now; this run has {process_count} process(es) and parallelism={parallelism!r}. "
            "Set --config.data.device_resident=false (or auto) to use the grain path.")
    if memory is not None and nbytes > memory:
        raise ValueError(
            f"data.device_resident=true: the split takes {nbytes / 2**20:.0f} MiB, more than the "
            f"device's {memory / 2**20:.0f} MiB. Use --config.data.device_resident=false.")
    return True


def read_split(source, *, upstream_celeb_a: bool = False, chunk: int = 1024
               ) -> tuple[np.ndarray, np.ndarray]:
    """All records of a data source: uint8 images [N, 64, 64, 3] and float32 raw attributes
    [N, A], mapped exactly as the grain path maps them (`pipeline._ToArrays`)."""
    to_arrays = pipeline._ToArrays(upstream_celeb_a=upstream_celeb_a)  # pylint: disable=protected-access
    n = len(source)
    images, attributes = None, None
    get_many = getattr(source, "__getitems__", None)
    for start in range(0, n, chunk):
        keys = list(range(start, min(start + chunk, n)))
        records = get_many(keys) if get_many is not None else [source[i] for i in keys]
        for i, record in zip(keys, records):
            arrays = to_arrays.map(record)
            if images is None:
                images = np.empty((n,) + tuple(np.shape(arrays["image"])), np.uint8)
                attributes = np.empty((n,) + np.shape(arrays["attributes"]), np.float32)
            images[i] = arrays["image"]
            attributes[i] = arrays["attributes"]
    return images, attributes


class ResidentIterator:
    """Batches gathered on the devices from a resident split; see the module docstring.

    Args:
      images: uint8 [N, 64, 64, 3]; attributes: float32 raw [N, A] (numpy).
      batch_size: rows per batch (this process's; the whole batch with one process).
      seed: the shuffle seed.
      encoding: one of `pipeline.ENCODINGS`.
      sharding: the batches' sharding (the trainer's batch sharding over its mesh); the split is
        replicated over its devices. None: the first local device.
    """

    def __init__(self, images: np.ndarray, attributes: np.ndarray, *, batch_size: int,
                 seed: int, encoding: str = "binary", sharding=None):
        pipeline.check_encoding(encoding)
        self.num_examples = int(images.shape[0])
        self.batch_size = int(batch_size)
        self.batches_per_epoch = self.num_examples // self.batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"The split has {self.num_examples} examples, fewer than one batch "
                             f"of {self.batch_size}.")
        self.seed, self.encoding = int(seed), encoding
        if sharding is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        self.sharding = sharding
        whole = (jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
                 if isinstance(sharding, jax.sharding.NamedSharding) else sharding)
        self._images = jax.device_put(np.asarray(images, np.uint8), whole)
        self._attributes = jax.device_put(np.asarray(attributes, np.float32), whole)
        n, b = self.num_examples, self.batch_size
        self._permutation = jax.jit(
            lambda epoch: jax.random.permutation(
                jax.random.fold_in(jax.random.key(self.seed), epoch), n),
            out_shardings=whole)

        def gather(images_, attributes_, perm, start):
            idx = jax.lax.dynamic_slice(perm, (start,), (b,))
            return {"image": images_[idx].astype(jnp.float32) * jnp.float32(1.0 / 255.0),
                    "attributes": pipeline.encode_attributes(attributes_[idx], encoding, jnp)}

        self._gather = jax.jit(gather, out_shardings=sharding)
        self.position = 0
        self._epoch, self._perm = None, None

    def __iter__(self) -> "ResidentIterator":
        return self

    def __next__(self) -> dict[str, jax.Array]:
        epoch, b = divmod(self.position, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self._permutation(np.uint32(epoch))
        batch = self._gather(self._images, self._attributes, self._perm,
                             np.int32(b * self.batch_size))
        self.position += 1
        return batch

    # --- position ---------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The position as a JSON-able dict (with what it is valid for)."""
        return {"kind": "device_resident", "position": self.position, "seed": self.seed,
                "batch_size": self.batch_size, "num_examples": self.num_examples}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Moves to a saved position (of an iterator over the same split, seed and batch)."""
        state = dict(state)
        if state.get("kind") != "device_resident":
            raise ValueError(f"Not the position of a device-resident iterator: {state!r}; was "
                             "the checkpoint saved with data.device_resident off?")
        mine = {k: getattr(self, k) for k in ("seed", "batch_size", "num_examples")}
        theirs = {k: state.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(f"The saved data position is of another iterator ({theirs}); this "
                             f"one has {mine}.")
        self.position = int(state["position"])

    def checkpoint_save_args(self):
        """The orbax item that `cmma_jax.checkpoints.save` writes as "data"."""
        import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
        return ocp.args.JsonSave(self.get_state())

    def checkpoint_restore_args(self):
        """The orbax item that `cmma_jax.checkpoints.restore` reads; the result goes to
        `set_state`."""
        import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
        return ocp.args.JsonRestore()

    def close(self) -> None:
        """Frees the resident split. Idempotent."""
        self._images = self._attributes = self._perm = None

    def __enter__(self) -> "ResidentIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_resident(name: str, split: str, *, batch_size: int, seed: int = 0,
                  encoding: str = "binary", setting="auto", parallelism: str = "mesh",
                  sharding=None, data_dir=None, prepared_dir=None,
                  options: Mapping[str, Any] | None = None) -> pipeline.Loaded | None:
    """A split on the devices as a `pipeline.Loaded` (its `loader` is None), or None when
    `setting` ("auto", "true", "false") decides against it (`resolve`): then use `pipeline.load`.
    """
    where = dict(data_dir=data_dir, prepared_dir=prepared_dir, options=options)
    if parse_setting(setting) is False:
        return None
    source = pipeline.data_source(name, split, **where)
    names = pipeline.attribute_names(name, **where)
    nbytes = split_bytes(len(source), len(names))
    if not resolve(setting, nbytes, parallelism=parallelism):
        return None
    start = time.perf_counter()
    images, attributes = read_split(source, upstream_celeb_a=name == "celeb_a")
    iterator = ResidentIterator(images, attributes, batch_size=batch_size, seed=seed,
                                encoding=encoding, sharding=sharding)
    logging.info("The %s split of %s is on the devices (%d examples, %.0f MiB) after %.1f s.",
                 split, name, iterator.num_examples, nbytes / 2**20, time.perf_counter() - start)
    return pipeline.Loaded(iterator=iterator, attribute_names=tuple(names),
                           num_examples=iterator.num_examples,
                           num_examples_per_shard=iterator.batches_per_epoch * batch_size,
                           batches_per_epoch=iterator.batches_per_epoch, loader=None)


def load_split_resident(data_config, split: str, *, batch_size: int, seed: int,
                        parallelism: str = "mesh", sharding=None) -> pipeline.Loaded | None:
    """`load_resident` from a config's `data` section (`data.device_resident` decides)."""
    data_config = pipeline._section(data_config)  # pylint: disable=protected-access
    return load_resident(
        data_config["name"], split, batch_size=batch_size, seed=int(seed),
        encoding=data_config["attribute_encoding"],
        setting=data_config.get("device_resident"), parallelism=parallelism,
        sharding=sharding, **pipeline._where(data_config))  # pylint: disable=protected-access
