"""JSON encoding of the store's records, for change-log payloads.

The Backup Service decodes on the paired pool what the store encoded here, so the
round trip is exact: ``decode(type(r), encode(r)) == r`` for every record `r` of
`trimaran.store.model`. The encoding is driven by the dataclass field types:

* ``str``, ``int``, ``bool`` as themselves; ``float`` as a JSON number (an ``int``
  given for a float field is encoded as a float); non-finite floats are refused
  (strict JSON, which PostgreSQL's ``jsonb`` also requires);
* ``bytes`` as standard base64 (with padding);
* ``X | None`` as the value or ``null``; ``tuple[X, ...]`` as an array;
  ``dict[str, str]`` as an object; a nested record as an object.

Objects have their keys sorted and no whitespace, so equal records encode to equal
text. Decoding is strict: unknown keys and values of the wrong type raise
`CodecError`; a missing key takes the field's default (so a payload written before
a field was added still decodes) and is an error when the field has none.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import TypeVar

from trimaran.store.base import StoreError
from trimaran.store.model import (
    Binding,
    Change,
    CmsDocument,
    ContactEntry,
    ContactGroup,
    ContactList,
    Credentials,
    Heartbeat,
    Meeting,
    MeetingContent,
    PresenceRule,
    Publication,
    Subscription,
    User,
)

T = TypeVar("T")

#: Every record type the codec knows.
RECORD_TYPES: tuple[type, ...] = (
    User, Credentials, Binding, ContactGroup, ContactEntry, ContactList, PresenceRule,
    Publication, Subscription, Meeting, Heartbeat, Change, MeetingContent, CmsDocument,
)

#: The record type carried by the payload of each change-log category.
CATEGORY_TYPES: Mapping[str, type] = types.MappingProxyType({
    "user": User,
    "credentials": Credentials,
    "contacts": ContactList,
    "presence-rules": PresenceRule,
    "presence": Publication,
    "meeting": Meeting,
    "meeting-content": MeetingContent,
    "cms": CmsDocument,
})


_UNIONS = (types.UnionType, typing.Union)


class CodecError(StoreError):
    """A record cannot be encoded, or a payload is not the encoding of a record."""


def encode(record: object) -> str:
    """The JSON text of a model record; `CodecError` for anything else or bad field values."""
    if type(record) not in RECORD_TYPES:
        raise CodecError(f"not a store record: {type(record).__name__}")
    value = _encode_value(type(record), record, type(record).__name__)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def decode(cls: type[T], text: str | bytes) -> T:
    """The record of type `cls` encoded in `text`; `CodecError` when it is not one."""
    if cls not in RECORD_TYPES:
        raise CodecError(f"not a store record type: {cls.__name__}")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"{cls.__name__}: payload is not JSON: {exc}") from exc
    result = _decode_value(cls, value, cls.__name__)
    if not isinstance(result, cls):  # pragma: no cover - _decode_record builds a cls
        raise CodecError(f"{cls.__name__}: decoded to {type(result).__name__}")
    return result


def decode_change(change: Change) -> object | None:
    """The new value carried by a change (None for a delete); `CodecError` if malformed."""
    cls = CATEGORY_TYPES.get(change.category)
    if cls is None:
        raise CodecError(f"change {change.seq}: unknown category {change.category!r}")
    if change.op == "delete":
        if change.payload:
            raise CodecError(f"change {change.seq}: a delete carries no payload")
        return None
    if change.op != "put":
        raise CodecError(f"change {change.seq}: unknown op {change.op!r}")
    return decode(cls, change.payload)


def _refuse_constant(name: str) -> object:
    raise CodecError(f"non-finite number {name} in payload")


@functools.cache
def _field_types(cls: type) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _encode_value(tp: object, value: object, path: str) -> object:
    """The JSON-ready form of `value`, checked against the declared type `tp`."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if type(value) is not tp:
            raise CodecError(f"{path}: expected {tp.__name__}, got {type(value).__name__}")
        return {name: _encode_value(ftp, getattr(value, name), f"{path}.{name}")
                for name, ftp in _field_types(tp).items()}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _encode_value(inner, value, path)
    if origin is tuple:
        if not isinstance(value, tuple):
            raise CodecError(f"{path}: expected a tuple, got {type(value).__name__}")
        return [_encode_value(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise CodecError(f"{path}: expected a dict of str to str")
        return dict(value)
    return _encode_scalar(tp, value, path)


def _encode_scalar(tp: object, value: object, path: str) -> object:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise CodecError(f"{path}: non-finite number {value!r} cannot be encoded")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is bytes:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
    else:
        raise CodecError(f"{path}: unsupported field type {tp!r}")
    raise CodecError(f"{path}: expected {getattr(tp, '__name__', tp)}, "
                     f"got {type(value).__name__}")


def _decode_value(tp: object, value: object, path: str) -> object:
    """The Python value of declared type `tp` for the JSON value `value`."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_record(tp, value, path)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _decode_value(inner, value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise CodecError(f"{path}: expected an array")
        return tuple(_decode_value(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise CodecError(f"{path}: expected an object of strings")
        return dict(value)
    return _decode_scalar(tp, value, path)


def _decode_record(cls: type, value: object, path: str) -> object:
    if not isinstance(value, dict):
        raise CodecError(f"{path}: expected an object")
    fields = _field_types(cls)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise CodecError(f"{path}: unknown keys {', '.join(unknown)}")
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _decode_value(fields[f.name], value[f.name], f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise CodecError(f"{path}: missing key {f.name}")
    factory: Callable[..., object] = cls
    return factory(**kwargs)


def _decode_scalar(tp: object, value: object, path: str) -> object:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is bytes:
        if isinstance(value, str):
            try:
                return base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError) as exc:
                raise CodecError(f"{path}: invalid base64: {exc}") from exc
    else:
        raise CodecError(f"{path}: unsupported field type {tp!r}")
    raise CodecError(f"{path}: expected {getattr(tp, '__name__', tp)}, "
                     f"got {type(value).__name__}")
