"""Reading typed values back out of JSON records (``--json`` lines, reports, journals).

Results are frozen dataclasses that write themselves as JSON and read themselves back
(``to_json`` / ``from_json``). A record read back may come from a user's edited report or
from another version of lipsync-fix, so every value is checked for its type here, once,
with one line naming the key: a string where a number belongs must not reach the fix as a
delay, and a missing key must not become a silent default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from lipsync_fix.errors import RecordError

T = TypeVar("T")


def _where(context: str, key: str) -> str:
    return f"{context}: {key!r}" if context else repr(key)


def need(record: Mapping[str, Any], key: str, context: str = "") -> Any:
    """``record[key]``, or a :class:`RecordError` naming the missing key."""
    if not isinstance(record, Mapping):
        raise RecordError(f"{context or 'a record'} is not a JSON object")
    if key not in record:
        raise RecordError(f"{_where(context, key)} is missing")
    return record[key]


def number(record: Mapping[str, Any], key: str, context: str = "", *,
           finite: bool = True, optional: bool = False) -> float | None:
    """A float (ints are floats too; booleans are not numbers). ``null`` only when
    ``optional``; NaN and infinities only when not ``finite``."""
    if optional and record.get(key) is None:
        return None
    value = need(record, key, context)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{_where(context, key)} must be a number, not {value!r}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise RecordError(f"{_where(context, key)} must be a finite number, not {value!r}")
    return value


def integer(record: Mapping[str, Any], key: str, context: str = "", *,
            minimum: int | None = 0) -> int:
    """An int (a float with an integral value is refused: counts are written as ints)."""
    value = need(record, key, context)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{_where(context, key)} must be a whole number, not {value!r}")
    if minimum is not None and value < minimum:
        raise RecordError(f"{_where(context, key)} must be at least {minimum}, not {value}")
    return value


def text(record: Mapping[str, Any], key: str, context: str = "", *,
         choices: tuple[str, ...] | None = None, optional: bool = False) -> str | None:
    if optional and record.get(key) is None:
        return None
    value = need(record, key, context)
    if not isinstance(value, str):
        raise RecordError(f"{_where(context, key)} must be a string, not {value!r}")
    if choices is not None and value not in choices:
        raise RecordError(f"{_where(context, key)} must be one of {', '.join(choices)}, "
                          f"not {value!r}")
    return value


def items(record: Mapping[str, Any], key: str, read: Callable[[Any, str], T],
          context: str = "") -> tuple[T, ...]:
    """A JSON list, each element read by ``read(element, context_of_element)``."""
    value = need(record, key, context)
    if not isinstance(value, list):
        raise RecordError(f"{_where(context, key)} must be a list, not {value!r}")
    return tuple(read(element, f"{_where(context, key)}[{i}]")
                 for i, element in enumerate(value))


def strings(record: Mapping[str, Any], key: str, context: str = "") -> tuple[str, ...]:
    def one(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise RecordError(f"{where} must be a string, not {value!r}")
        return value

    return items(record, key, one, context)


def numbers(record: Mapping[str, Any], key: str, context: str = "") -> tuple[float, ...]:
    def one(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise RecordError(f"{where} must be a finite number, not {value!r}")
        return float(value)

    return items(record, key, one, context)
