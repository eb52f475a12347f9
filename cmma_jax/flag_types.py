"""List-valued command-line flags, parsed and checked in one place for every door in launch/.

absl's `DEFINE_list` gives strings, and each door used to convert them itself, so that
`--iwae_samples=abc` failed with a raw `ValueError` from `int()` that named no flag. These
definitions convert while the flags are parsed; a bad value stops the program before anything runs
with absl's one-line error naming the flag, the value and what it takes:

    FATAL Flags parsing error: flag --iwae_samples=abc: expected integers, comma-separated
    (e.g. 1,10,100); 'abc' is not one.

A bottom layer: absl only.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from absl import flags


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


__all__ = ["DEFINE_positive_ints", "DEFINE_indices", "DEFINE_positive_floats", "DEFINE_floats",
           "DEFINE_index_triples"]
