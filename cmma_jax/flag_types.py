"""List-valued command-line flags, parsed and checked in one place for every door in launch/.

absl's `DEFINE_list` gives strings, and each door used to convert them itself, so that
`--iwae_samples=abc` failed with a raw `ValueError` from `int()` that named no flag. These
definitions convert while the flags are parsed; a bad value stops the program before anything runs
with absl's one-line error naming the flag, the value and what it takes:

    FATAL Flags parsing error: flag --iwae_samples=abc: expected integers, comma-separated
    (e.g. 1,10,100); 'abc' is not one.

The doors' other shared pieces are here too: the flags of a door that trains (`--workdir`,
`--dataset`, `--data_dir`, `--prepared_dir`: `DEFINE_training_flags`, `data_flags`,
`training_workdir`), and the two ways a door stops on bad input: absl's usage error
(`check_no_arguments`, `settings_or_usage_error`) or one line naming the door (`exit_on`).

A bottom layer: absl only.
"""

from __future__ import annotations

import ast
import collections.abc
import contextlib
import dataclasses
import inspect
import os
import re
import sys
import typing
from typing import Callable, Iterator, Mapping, Optional, Sequence

from absl import app, flags

# The flags these functions define belong to the door that calls them (its --help lists them).
flags.disclaim_key_flags()


class _ListOf(flags.ListParser):
    """Comma-separated items, each converted by `convert` (which raises ValueError on a bad one),
    optionally exactly `count` of them."""

    def __init__(self, convert: Callable[[str], object], what: str, example: str,
                 count: Optional[int] = None):
        super().__init__()
        self._convert, self._what, self._example, self._count = convert, what, example, count

    def parse(self, argument):
        items = argument if isinstance(argument, list) else super().parse(argument)
        values = []
        for item in items:
            try:
                values.append(self._convert(str(item).strip()))
            except ValueError:
                raise ValueError(f"expected {self._what}, comma-separated (e.g. {self._example});"
                                 f" {str(item).strip()!r} is not one.") from None
        if self._count is not None and len(values) != self._count:
            raise ValueError(f"expected exactly {self._count} {self._what} (e.g. "
                             f"{self._example}), got {len(values)}.")
        return values

    def flag_type(self):
        return f"comma-separated {self._what}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _index_triple(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(text)
    return tuple(_non_negative_int(p) for p in parts)  # type: ignore[return-value]


def _define(parser: _ListOf, name: str, default: Optional[Sequence], help_: str,
            flag_values: flags.FlagValues):
    return flags.DEFINE(parser, name, default, help_, flag_values,
                        serializer=flags.CsvListSerializer(","))


# Each takes absl's usual (name, default, help) and an optional `flag_values` (default: the
# program's flags).


def DEFINE_positive_ints(name, default, help_, count=None, flag_values=flags.FLAGS):  # noqa: N802
    """A list of integers >= 1 (`--iwae_samples=1,10,100`)."""
    parser = _ListOf(_positive_int, "integers >= 1", "1,10,100", count)
    return _define(parser, name, default, help_, flag_values)


def DEFINE_indices(name, default, help_, flag_values=flags.FLAGS):  # noqa: N802
    """A list of integers >= 0 (`--faces=0,3,5`, `--seeds=0,1,2`)."""
    parser = _ListOf(_non_negative_int, "integers >= 0", "0,3,5")
    return _define(parser, name, default, help_, flag_values)


def DEFINE_positive_floats(name, default, help_, flag_values=flags.FLAGS):  # noqa: N802
    """A list of finite numbers > 0 (`--parzen_sigmas=0.05,0.1,0.2`)."""
    parser = _ListOf(_positive_float, "numbers > 0", "0.05,0.1,0.2")
    return _define(parser, name, default, help_, flag_values)


def DEFINE_floats(name, default, help_, count=None, flag_values=flags.FLAGS):  # noqa: N802
    """A list of finite numbers, optionally exactly `count` (`--traverse_values=-3,3,7`)."""
    parser = _ListOf(_finite_float, "numbers", "-3,3,7", count)
    return _define(parser, name, default, help_, flag_values)


def DEFINE_index_triples(name, default, help_, flag_values=flags.FLAGS):  # noqa: N802
    """A list of a:b:c triples of integers >= 0 (`--arithmetic_faces=0:1:2,3:4:5`)."""
    parser = _ListOf(_index_triple, "a:b:c triples of integers >= 0", "0:1:2,3:4:5")
    return _define(parser, name, default, help_, flag_values)


class _KeyValues(flags.ArgumentParser):
    """key=value items, comma-separated; commas inside brackets stay ("a=(1,2),b=3"); each value
    a Python literal (int, float, tuple, True, None) where it reads as one, else the string."""

    def parse(self, argument):
        if isinstance(argument, dict):
            return dict(argument)
        out = {}
        for item in _split_top_level(str(argument)):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected key=value items, comma-separated (e.g. "
                                 f"training.batch_size=32,model.z_dim=64); {item!r} is not one.")
            out[key.strip()] = _literal(value.strip())
        return out

    def flag_type(self):
        return "comma-separated key=value"


def _split_top_level(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    return [i for i in items + [current] if i.strip()]


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def DEFINE_key_values(name, default, help_, flag_values=flags.FLAGS):  # noqa: N802
    """{key: value} from `key=value,...` (`--override=training.batch_size=32,model.z_dim=(8,8)`);
    the one parser of such overrides for every door."""
    return flags.DEFINE(_KeyValues(), name, default or {}, help_, flag_values)


# Flags generated from a settings dataclass: the dataclass is the one declaration of every
# field's name, type, default and help (its docstring's "Attributes:" section); the doors define
# the flags from it and build the settings back, so that no default is written twice.

_KINDS: dict[str, Callable[..., object]] = {
    "positive_ints": DEFINE_positive_ints, "indices": DEFINE_indices,
    "positive_floats": DEFINE_positive_floats, "floats": DEFINE_floats,
    "index_triples": DEFINE_index_triples,
}


def _attribute_help(cls) -> dict[str, str]:
    """{field: help} from the class docstring's "Attributes:" section ("a, b: text" gives both)."""
    out: dict[str, str] = {}
    lines = (inspect.getdoc(cls) or "").splitlines()
    inside = False
    names: list[str] = []
    text: list[str] = []

    def flush():
        for n in names:
            out[n] = " ".join(text).strip()

    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        match = re.match(r"^  ([a-z_][\w, ]*):\s*(.*)$", line)
        if match:
            flush()
            names = [n.strip() for n in match.group(1).split(",")]
            text = [match.group(2)]
        elif line.startswith("    ") and names:
            text.append(line.strip())
        elif line.strip() and not line.startswith(" "):
            break
    flush()
    return out


def _shape(annotation) -> tuple[type | None, type | None, bool]:
    """(base type: int, float, str, bool or tuple; a tuple's item type; optional?)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        return tuple, typing.get_args(annotation)[0], optional
    if typing.get_origin(annotation) in (dict, Mapping, collections.abc.Mapping):
        return dict, None, optional
    return annotation, None, optional


def define_settings_flags(cls, *, only: Sequence[str] | None = None, skip: Sequence[str] = (),
                          rename: Mapping[str, str] | None = None,
                          flag_values=flags.FLAGS) -> list[str]:
    """One flag per field of the frozen dataclass `cls` (those in `only`, less `skip`), named as
    the field (or `rename[field]`), with the field's default and its docstring line as help.

    Types: bool, int, float and str give absl's flags; an optional int takes 0 for None ("all");
    a mapping `key=value,...` (`DEFINE_key_values`); a tuple of str a list flag; other tuples the kind in the field's `metadata["flag"]`
    ("positive_ints", "indices", "positive_floats", "floats", "index_triples"; default: indices
    for ints, floats for floats); `metadata["choices"]` makes a str field an enum. A field whose
    default is made by a factory gets no default on the command line (the dataclass's applies).
    Returns the fields defined, for `settings_from_flags`.
    """
    rename = dict(rename or {})
    helps = _attribute_help(cls)
    hints = typing.get_type_hints(cls)
    defined = []
    for field in dataclasses.fields(cls):
        if (only is not None and field.name not in only) or field.name in skip:
            continue
        name = rename.get(field.name, field.name)
        base, item, optional = _shape(hints[field.name])
        default = None if field.default is dataclasses.MISSING else field.default
        help_ = helps.get(field.name) or field.name
        kind = field.metadata.get("flag")
        if field.metadata.get("choices"):
            flags.DEFINE_enum(name, default, list(field.metadata["choices"]), help_,
                              flag_values=flag_values)
        elif base is bool:
            flags.DEFINE_bool(name, default, help_, flag_values=flag_values)
        elif base is int:
            flags.DEFINE_integer(name, default, help_ + (" Give 0 for None." if optional else ""),
                                 flag_values=flag_values)
        elif base is float:
            flags.DEFINE_float(name, default, help_, flag_values=flag_values)
        elif base is str:
            flags.DEFINE_string(name, default, help_, flag_values=flag_values)
        elif base is dict:
            DEFINE_key_values(name, default, help_ + " On the command line: key=value,... "
                              "(commas inside brackets stay).", flag_values=flag_values)
        elif base is tuple:
            listed = None if default is None else list(default)
            if item is str:
                flags.DEFINE_list(name, listed, help_, flag_values=flag_values)
            else:
                kind = kind or ("floats" if item is float else "indices")
                extra = {"count": field.metadata["count"]} if "count" in field.metadata else {}
                _KINDS[kind](name, listed, help_, flag_values=flag_values, **extra)
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no flag for {hints[field.name]}.")
        defined.append(field.name)
    return defined


def settings_from_flags(cls, fields: Sequence[str], *, rename: Mapping[str, str] | None = None,
                        flag_values=flags.FLAGS, **given):
    """`cls(**values of the flags of `fields`, **given)`: lists as tuples, an optional int's 0
    as None, an unset flag of a factory-made field left to the dataclass."""
    rename = dict(rename or {})
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for name in fields:
        value = flag_values[rename.get(name, name)].value
        base, _, optional = _shape(hints[name])
        if value is None and by_name[name].default is dataclasses.MISSING:
            continue  # the dataclass's factory default
        if base is int and optional and value == 0:
            value = None
        if isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**{**values, **given})


def settings_or_usage_error(cls, fields: Sequence[str], **kwargs):
    """`settings_from_flags(cls, fields, **kwargs)` for a door: settings that do not fit together
    (their `ValueError`) stop it with absl's usage error."""
    try:
        return settings_from_flags(cls, fields, **kwargs)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


# The doors' other shared pieces.


def check_no_arguments(argv: Sequence[str]) -> None:
    """A door's first step: arguments that are not flags stop it with absl's usage error."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")


@contextlib.contextmanager
def exit_on(*errors: type[BaseException], door: str) -> Iterator[None]:
    """Around a door's library call: one of `errors` (input the user can fix: a missing workdir,
    an output folder that is a file) ends the program with `<door>: <message>` on stderr and exit
    code 1, not a traceback."""
    try:
        yield
    except errors as e:
        sys.exit(f"{door}: {e}")


def DEFINE_training_flags(workdir_help: str, flag_values=flags.FLAGS) -> None:  # noqa: N802
    """The flags of a door that trains: `--workdir` (`workdir_help`: what goes there, its
    default) and where the data is, `--dataset`, `--data_dir`, `--prepared_dir` (`data_flags`)."""
    flags.DEFINE_string("workdir", None, workdir_help, flag_values=flag_values)
    flags.DEFINE_string("dataset", None, "synthetic_faces (default, offline), celeba (a local "
                        "folder), celeb_a (upstream tfds) or lfw. Sets config.data.name.",
                        flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "The raw dataset folder for celeba or lfw (e.g. "
                        "../shared/data/celeba). Sets config.data.data_dir.",
                        flag_values=flag_values)
    flags.DEFINE_string("prepared_dir", None, "Where prepared datasets are cached (default "
                        "$CMMA_DATA_DIR, else ~/tensorflow_datasets). Sets "
                        "config.data.prepared_dir.", flag_values=flag_values)


def data_flags(flag_values=flags.FLAGS) -> dict[str, Optional[str]]:
    """`--dataset`, `--data_dir` and `--prepared_dir` (`DEFINE_training_flags`) as
    `{"name", "data_dir", "prepared_dir"}`, None where not given: the keywords of
    `cmma_jax.configs.base.set_data`."""
    return {"name": flag_values.dataset or None, "data_dir": flag_values.data_dir or None,
            "prepared_dir": flag_values.prepared_dir or None}


def training_workdir(run: str, dataset: str, flag_values=flags.FLAGS) -> str:
    """`--workdir` (`DEFINE_training_flags`), else `workdirs/<run>_<dataset>`."""
    return flag_values.workdir or os.path.join("workdirs", f"{run}_{dataset}")


__all__ = ["DEFINE_positive_ints", "DEFINE_indices", "DEFINE_positive_floats", "DEFINE_floats",
           "DEFINE_index_triples", "DEFINE_key_values", "define_settings_flags",
           "settings_from_flags", "settings_or_usage_error", "check_no_arguments", "exit_on",
           "DEFINE_training_flags", "data_flags", "training_workdir"]
