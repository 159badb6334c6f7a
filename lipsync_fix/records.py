"""JSON records (``--json`` lines, report rows, journal lines): their schemas, and reading
typed values back out of them.

**Values.** Results are frozen dataclasses that write themselves as JSON and read themselves
back (``to_json`` / ``from_json``). A record read back may come from a user's edited report
or from another version of lipsync-fix, so every value is checked for its type (:func:`need`,
:func:`number`, :func:`integer`, :func:`text`, :func:`items`), with one line naming the key: a
string where a number belongs must not reach the fix as a delay, and a missing key must not
become a silent default.

**Schemas.** The fields of one command's report rows, and their types.

A batch's report is ``.jsonl`` (each record as its JSON) or ``.csv`` (a column per field).
A CSV cell is text, so a CSV report reads back into the records it was written from only
if the reader knows what each column holds: that is what a :class:`RecordSchema` says, one
per command (``kind``: score, fix, lse). It is owned by the layer that defines the
command's result (the estimate's schema is derived from ``SyncEstimate`` itself, so a
field renamed there is renamed here with no second edit), not by the batch runner, which
only adds the fields every command's rows share (:data:`BATCH_FIELDS`).

Rules of the CSV form, the same for every kind:

* a list of records (per-candidate scores, offsets over time, spans, face tracks) does
  not fit a cell: it is in the JSON lines report only. Every other field is a column;
* numbers are written exactly (``repr``) and read back as numbers, booleans as
  ``true``/``false``, lists and objects as JSON text;
* an empty cell is a field the record does not have (a success has no ``error``, a
  measurement no ``skipped``), so it reads back without it: never ``"error": ""``;
* a column the schema does not know (a report of another version) reads back as text.
"""

from __future__ import annotations

import enum
import json
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, TypeVar

from lipsync_fix.errors import RecordError

SCALAR_TYPES = ("str", "int", "float", "bool")
JSON_TYPES = ("list", "dict", "json")


@dataclass(frozen=True)
class Field:
    """One field of a record: its name, its type (``str``, ``int``, ``float``, ``bool``,
    ``list``, ``dict`` or ``json`` for any JSON value), whether it may be null, and
    whether it is a column of the CSV form."""

    name: str
    type: str
    nullable: bool = False
    in_csv: bool = True

    def __post_init__(self) -> None:
        if self.type not in SCALAR_TYPES + JSON_TYPES:
            raise ValueError(f"unknown field type {self.type!r} of {self.name}")

    def accepts(self, value: object) -> bool:
        """Whether ``value`` (from JSON) has this field's type; an int is a float."""
        if value is None:
            return self.nullable or self.type == "json"
        if self.type == "str":
            return isinstance(value, str)
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.type == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.type == "list":
            return isinstance(value, list)
        if self.type == "dict":
            return isinstance(value, dict)
        return True

    def to_cell(self, value: object) -> str:
        if value is None:
            return "null" if self.type in JSON_TYPES else ""
        if self.type in JSON_TYPES:
            return json.dumps(value)
        if self.type == "bool":
            return "true" if value else "false"
        if self.type == "float":
            return repr(float(value))  # type: ignore[arg-type]
        return str(value)

    def from_cell(self, text: str) -> object:
        """The value a CSV cell holds; ValueError when it is not of this type."""
        if self.type == "str":
            return text
        if self.type == "int":
            return int(text)
        if self.type == "float":
            return float(text)
        if self.type == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError(f"{text!r} is not true or false")
            return text.lower() == "true"
        value = json.loads(text)
        if not self.accepts(value):
            raise ValueError(f"{text[:40]!r} is not a JSON {self.type}")
        return value


INPUT_FIELD = Field("input", "str")
BATCH_FIELDS = (
    Field("skipped", "str"),  # why the input was not processed this time
    Field("error", "str"),  # why it failed (absent on a success)
    Field("kind", "str"),  # the command that wrote the row
    Field("provenance", "dict"),  # what the result depends on (model, options, input)
)
"""Fields a batch adds to every command's rows (after the command's own)."""


@dataclass(frozen=True)
class RecordSchema:
    """The rows one command writes: ``kind``, its fields in column order, and the
    ``signature`` (fields only its measurements have) that recognises rows written by an
    older lipsync-fix, which say no ``kind``."""

    kind: str
    fields: tuple[Field, ...]
    signature: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"the {self.kind} schema names a field twice")
        if names[:1] != ["input"] or not {f.name for f in BATCH_FIELDS} <= set(names):
            raise ValueError("build schemas with record_schema()")
        if not self.signature <= set(names):
            raise ValueError(f"the {self.kind} signature names unknown fields")

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def csv_columns(self) -> list[str]:
        return [f.name for f in self.fields if f.in_csv]

    def check(self, record: Mapping[str, Any], where: str) -> dict:
        """``record`` as a dict, when every field it has is of its type and it names its
        input; :class:`RecordError` naming ``where`` and the field otherwise. Fields the
        schema does not know are kept (a newer version's)."""
        if not isinstance(record, Mapping):
            raise RecordError(f"{where} is not a record")
        if not isinstance(record.get("input"), str):
            raise RecordError(f"{where} names no input")
        for name, value in record.items():
            spec = self.field(name)
            if spec is not None and not spec.accepts(value):
                raise RecordError(f"{where}: {name} should be a {spec.type}, not "
                                  f"{json.dumps(value)[:40]}")
        return dict(record)

    def csv_row(self, record: Mapping[str, Any]) -> dict[str, str]:
        """The CSV cells of ``record`` (its columns only; see the module docstring)."""
        row = {}
        for spec in self.fields:
            if spec.in_csv and spec.name in record:
                row[spec.name] = spec.to_cell(record[spec.name])
        return row

    def from_csv_row(self, row: Mapping[str, str | None], where: str) -> dict:
        """The record a CSV row holds, typed; :class:`RecordError` for a cell that is
        not of its column's type."""
        record: dict[str, Any] = {}
        for name, text in row.items():
            if name is None or text is None or text == "":
                continue  # a short or long row's missing/extra cells; an absent field
            spec = self.field(name)
            if spec is None:
                record[name] = text
                continue
            try:
                record[name] = spec.from_cell(text)
            except ValueError as exc:
                raise RecordError(f"{where}: the {name} column should hold a {spec.type} "
                                  f"({exc})") from None
        return self.check(record, where)

    def recognises(self, record: Mapping[str, Any]) -> bool:
        """Whether a row without ``kind`` (an older lipsync-fix's) is one of this
        command's measurements."""
        return bool(self.signature) and self.signature <= set(record)


def record_schema(kind: str, fields_: Iterable[Field], signature: Iterable[str] = ()
                  ) -> RecordSchema:
    """A schema of ``fields_`` (``input`` first, then these, then :data:`BATCH_FIELDS`)."""
    own = [f for f in fields_ if f.name != "input"
           and f.name not in {b.name for b in BATCH_FIELDS}]
    return RecordSchema(kind, (INPUT_FIELD, *own, *BATCH_FIELDS), frozenset(signature))


def fields_of(cls: type) -> list[Field]:
    """The fields of a result dataclass, typed from its annotations; a list of records
    (``list[dict]``) is JSON lines only."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    return [_field_from_hint(f.name, hints[f.name]) for f in fields(cls)]


def ordered(all_fields: Iterable[Field], first: Iterable[str]) -> list[Field]:
    """``all_fields`` with the ``first`` names at the front, in that order (each must be
    among them: a headline column that is not a field is a mistake, not a gap)."""
    by_name = {f.name: f for f in all_fields}
    first = list(first)
    missing = [name for name in first if name not in by_name]
    if missing:
        raise ValueError(f"no field {', '.join(missing)} to put first")
    return [by_name[n] for n in first] + [f for n, f in by_name.items() if n not in first]


def _field_from_hint(name: str, hint: object) -> Field:
    nullable = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        nullable = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else object
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    if origin in (str, int, float, bool):
        return Field(name, origin.__name__, nullable)
    if origin in (list, tuple):
        records = bool(args) and (typing.get_origin(args[0]) or args[0]) is dict
        return Field(name, "list", nullable, in_csv=not records)
    if origin is dict:
        return Field(name, "dict", nullable)
    return Field(name, "json", True)


def dataclass_from_json(cls: type, record: Mapping[str, Any], where: str = "the record"
                        ) -> Any:
    """An instance of the result dataclass ``cls`` from its JSON ``record``, refusing
    what would otherwise be taken silently: a field of the wrong type (``"40"`` for a
    number) or a missing required field (:class:`RecordError`, naming ``where`` and the
    field). Keys ``cls`` does not have (``output``, ``kind``) are left out."""
    if not isinstance(record, Mapping):
        raise RecordError(f"{where} is not a JSON object")
    known = fields_of(cls)
    required = {f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(record))
    if missing:
        raise RecordError(f"{where} lacks {', '.join(missing)}")
    values = {}
    for spec in known:
        if spec.name in record:
            value = record[spec.name]
            if not spec.accepts(value):
                raise RecordError(f"{where}: {spec.name} should be a {spec.type}, not "
                                  f"{json.dumps(value)[:40]}")
            values[spec.name] = float(value) if spec.type == "float" and value is not None \
                else value
    return cls(**values)


def canonical(value: object) -> object:
    """``value`` as plain JSON data with a fixed key order (tuples as lists, NaN as
    None, an enum as its value), so two equal sets of options compare equal after a round
    trip through JSON. Anything else (a callback) is its type's name: its repr would name
    a memory address and make every row look stale."""
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return f"<{type(value).__qualname__}>"


# --------------------------------------------------------------- typed values

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
          context: str = "", *, optional: bool = False) -> tuple[T, ...]:
    """A JSON list, each element read by ``read(element, context_of_element)``; with
    ``optional``, an absent key is an empty list."""
    if optional and key not in record:
        return ()
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
