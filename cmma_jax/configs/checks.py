"""The valid values of every config field: ONE declaration per section, checked before anything
runs.

`check_config(config)` walks `FIELDS` and refuses a value of the wrong kind or out of its range
with one message that names every bad field, its value and what it accepts, e.g.

    --config.optimizer.warmup_steps=-5: must be an integer >= 0.
    --config.optimizer.grad_clip_norm=-1.0: must be None or a number > 0.

Without it, a negative warm-up left the learning rate at 0 for a whole run and a negative clipping
norm turned Adam into gradient ascent, both silently. Fields a config lacks are skipped (the
classifier's config has other sections); fields a config has but `FIELDS` does not declare are
accepted as they are (names, folders, flags).

The trainer (`cmma_jax.train.validate_config`) and the classifier (`cmma_jax.classifier`) call it
before a workdir is touched. It sits in the models' layer: the choices of the string fields come
from the modules that define them (`nets`, `losses`, `models.vlae`, `data`), never written again.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import ml_collections

from cmma_jax import data, losses, nets
from cmma_jax.models import vlae


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one field accepts.

    Attributes:
      kind: "int", "float", "bool", "choice", "ints" (a tuple of ints), "floats", "range" (a
        (low, high) pair of finite floats with low < high).
      low, high: bounds of the value (or of each element of a tuple), None for none.
      low_open: the low bound excluded (> rather than >=); likewise `high_open`.
      none: None is accepted (the preset's value, or "off").
      choices: for "choice"; a callable is called when checked (names from a registry).
      length: for tuples, the required number of elements (None: any, at least one).
    """

    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    none: bool = False
    choices: Sequence[str] | Callable[[], Sequence[str]] = ()
    length: Optional[int] = None

    def describe(self) -> str:
        """What the field accepts, in words."""
        if self.kind == "choice":
            what = f"one of {tuple(self._choices())}"
        elif self.kind == "bool":
            what = "True or False"
        elif self.kind == "range":
            what = "a (low, high) pair of finite numbers with low < high"
        else:
            if self.kind in ("int", "float"):
                what = "an integer" if self.kind == "int" else "a number"
            else:
                count = self.length if self.length is not None else "one or more"
                what = f"a tuple of {count} {'integers' if self.kind == 'ints' else 'numbers'}"
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            if bounds:
                each = ", each" if self.kind in ("ints", "floats") else ""
                what += f"{each} " + " and ".join(bounds)
        return f"None or {what}" if self.none else what

    def _choices(self) -> Sequence[str]:
        return self.choices() if callable(self.choices) else self.choices

    def _number_ok(self, value: Any, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if integer and not float(value).is_integer():
            return False
        if not math.isfinite(float(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open
                                      else value > self.high):
            return False
        return True

    def accepts(self, value: Any) -> bool:
        """Whether `value` is valid for the field."""
        if value is None:
            return self.none
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return value in self._choices()
        if self.kind in ("int", "float"):
            return self._number_ok(value, self.kind == "int")
        if not isinstance(value, (tuple, list)):
            return False
        if self.kind == "range":
            return (len(value) == 2 and all(self._number_ok(v, False) for v in value)
                    and value[0] < value[1])
        if not value or (self.length is not None and len(value) != self.length):
            return False
        return all(self._number_ok(v, self.kind == "ints") for v in value)


def _int(low=None, **kw) -> Rule:
    return Rule("int", low=low, **kw)


def _positive_int(**kw) -> Rule:
    return Rule("int", low=1, **kw)


def _positive(**kw) -> Rule:
    return Rule("float", low=0, low_open=True, **kw)


# The declaration: section -> field -> rule. Sections and fields a config lacks are skipped.
FIELDS: dict[str, dict[str, Rule]] = {
    "model": {
        "dtype": Rule("choice", choices=nets.COMPUTE_DTYPES),
        "conv_impl": Rule("choice", choices=nets.CONV_IMPLS),
        "decoder_variance": Rule("choice", choices=nets.DECODER_VARIANCES, none=True),
        "decoder_sigma": _positive(none=True),
        "decoder_log_var_range": Rule("range", none=True),
        "latent_log_var_range": Rule("range", none=True),
        "prior_log_var_range": Rule("range", none=True),
        "encoder_features": Rule("ints", low=1, length=3, none=True),
        "latent_dim": _positive_int(none=True),
        "attribute_hidden": _positive_int(none=True),
        "discriminator_hidden": _positive_int(none=True),
        "ladder_latent_dims": Rule("ints", low=1, length=nets.NUM_LADDER_LAYERS, none=True),
        "ladder_hidden": _positive_int(none=True),
        "ladder_head_features": _positive_int(none=True),
        "ladder_inject_features": _positive_int(none=True),
        "feed_attributes_to_encoder": Rule("bool"),
        "condition_decoder": Rule("bool"),
        "conditional": Rule("bool"),
        "gan_loss": Rule("choice", choices=losses.GAN_LOSS_KINDS),
        "mmd_kernel": Rule("choice", choices=vlae.MMD_KERNELS),
        "mmd_weight": Rule("float", low=0),
        "mmd_layer_weights": Rule("floats", low=0, length=nets.NUM_LADDER_LAYERS, none=True),
        "mmd_scales": Rule("floats", low=0, low_open=True),
        "mmd_unbiased": Rule("bool"),
        # The attribute classifier's network.
        "features": Rule("ints", low=1),
        "hidden": _positive_int(),
        "input_pool": _positive_int(),
    },
    "data": {
        "attribute_encoding": Rule("choice", choices=data.ENCODINGS),
        "num_attributes": _positive_int(none=True),
        "worker_count": _int(0),
    },
    "data.options": {
        "num_train": _positive_int(none=True),
        "num_validation": _int(0, none=True),
        "num_test": _int(0, none=True),
        "seed": _int(0, none=True),
        "max_bad_images": _int(0, none=True),
        "num_workers": _int(0, none=True),
        "max_rows": _positive_int(none=True),
    },
    "training": {
        "batch_size": _positive_int(),
        "num_steps": _positive_int(),
        "seed": _int(0),
        "log_every": _positive_int(),
        "sample_every": _positive_int(),
        "checkpoint_every": _positive_int(),
        "keep_checkpoints": _positive_int(),
        "eval_every": _positive_int(none=True),
        "num_eval": _int(0, none=True),
        "stop_patience": _int(0, none=True),
        "stop_min_delta": Rule("float", low=0),
        "kl_warmup_steps": _int(0),
        "parallelism": Rule("choice", choices=("mesh", "pmap")),
        "steps_per_call": _positive_int(),
        "flip": Rule("bool"),
    },
    "optimizer": {
        "learning_rate": _positive(),
        "generator_lr": _positive(),
        "discriminator_lr": _positive(),
        "b1": Rule("float", low=0, high=1, high_open=True),
        "b2": Rule("float", low=0, high=1, high_open=True),
        "eps": _positive(),
        "grad_clip_norm": Rule("float", low=0, none=True),  # None or 0: no clipping
        "warmup_steps": _int(0),
        "prior_lr_scale": Rule("float", low=0, none=True),
    },
}


def _section(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            return None
        node = node[part]
    return node


def problems(config: ml_collections.ConfigDict) -> list[str]:
    """One line per declared field whose value the config may not have (empty: all valid)."""
    out = []
    for section_name, rules in FIELDS.items():
        section = _section(config, section_name)
        if section is None:
            continue
        for field, rule in rules.items():
            if field not in section:
                continue
            value = section[field]
            if not rule.accepts(value):
                out.append(f"--config.{section_name}.{field}={value!r}: must be "
                           f"{rule.describe()}.")
    return out


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses a config with any value out of its declared range (`FIELDS`).

    Raises:
      ValueError: naming every bad field, its value and what it accepts.
    """
    found = problems(config)
    if found:
        raise ValueError("Invalid settings (nothing was run):\n  " + "\n  ".join(found))


__all__ = ["Rule", "FIELDS", "problems", "check_config"]
