"""Typed, frozen configs read strictly from JSON data (presets, a job's overrides, a
losses table), as threestudio's typed configs: one parser for all of them.

A config is a frozen dataclass; `parse(cls, data, path)` builds it from a JSON object. An
unknown key, a missing required one, a value of the wrong kind, a number that is not finite
or lies outside the range its field declares, or a choice not offered is a ConfigError
naming the dotted key. Each default is written once, on its field (`setting`).

Field kinds: bool; int; float (a whole number stands for a float); str; Literal[...] (the
choices); a nested config; `X | None` (absent or null: None); tuple[T, ...] (a JSON list);
tuple[T, T] (exactly two); Span / IntSpan (a [lo, hi] range, lo <= hi, where a single
number v stands for [v, v]); Ramp (a value going linearly from `start` at a phase's first step
to `end` at its last, written [start, end]; a single number v is the constant [v, v]);
dict[str, T] (values of kind T, any keys). A field may carry
its own parser (`setting(parse=...)`), e.g. a losses table. After building, a config's
`check(path)` method, when it has one, tests what spans fields (t_min < t_max).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Annotated, Any, Callable, Literal, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")
_SPAN, _RAMP = "span", "ramp"
Span = Annotated[tuple[float, float], _SPAN]  # [lo, hi]; a number v is [v, v]
IntSpan = Annotated[tuple[int, int], _SPAN]
Ramp = Annotated[tuple[float, float], _RAMP]  # [start, end] over a phase; a number v is [v, v]


def ramp_at(ramp: tuple[float, float], step: int, total: int) -> float:
    """A Ramp's value at step (0-based) of a phase of `total` steps: linear from start at
    step 0 towards end at step `total`, as threestudio's C(value, step) interpolates a
    [start_step, start_value, end_value, end_step] schedule with end_step = the run's steps."""
    start, end = ramp
    return start + (end - start) * min(step / max(total, 1), 1.0)


def setting(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
            parse: Callable[[Any, str], Any] | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A config field: its default (none: required; factory: made anew for each record, for
    a value that cannot be shared), its inclusive range (for a number, a list's items, a
    Span's ends), or its own parser (data, dotted path) -> value."""
    meta = {k: v for k, v in (("lo", lo), ("hi", hi), ("parse", parse)) if v is not None}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def parse(cls: type[T], data: Any, path: str) -> T:
    """data (a JSON object) at dotted path -> cls, checked as the module says."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object, got {data!r:.80}", path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{_join(path, key)}: unknown key; {path or 'a config'} has "
                              f"{', '.join(fields)}", _join(path, key))
    hints, values = _hints(cls), {}
    for name, f in fields.items():
        key = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing", key)
            continue
        reader = f.metadata.get("parse")
        values[name] = reader(data[name], key) if reader else _value(hints[name], data[name], key, f.metadata)
    try:
        out = cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}", path) from exc
    check = getattr(out, "check", None)
    if check is not None:
        check(path)
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def _value(hint: Any, value: Any, key: str, meta: dict) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated and args[1:] in ((_SPAN,), (_RAMP,)):
        kind = typing.get_args(args[0])[0]
        what = "a range [lo, hi]" if args[1] == _SPAN else "a ramp [start, end]"
        if _is_number(value):
            return (_number(kind, value, key, meta),) * 2
        if not isinstance(value, list) or len(value) != 2:
            raise ConfigError(f"{key}: expected a number or {what}, got {value!r:.80}", key)
        lo, hi = (_number(kind, v, f"{key}[{i}]", meta) for i, v in enumerate(value))
        if args[1] == _SPAN and lo > hi:
            raise ConfigError(f"{key}: a range [lo, hi] needs lo <= hi, got {value}", key)
        return (lo, hi)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        if len(inner) == 1:
            return _value(inner[0], value, key, meta)
        raise TypeError(f"{key}: a union of {args} is not a config kind")  # a programming error
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r:.80} is not one of {', '.join(map(str, args))}", key)
        return value
    if origin is tuple:
        if not isinstance(value, list) or (args[-1] is not Ellipsis and len(value) != len(args)):
            size = "a list" if args[-1] is Ellipsis else f"a list of {len(args)}"
            raise ConfigError(f"{key}: expected {size} of {_kind(args[0])}, got {value!r:.80}", key)
        return tuple(_value(args[0], v, f"{key}[{i}]", meta) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected an object, got {value!r:.80}", key)
        return {k: _value(args[1], v, _join(key, k), meta) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    if hint in (int, float):
        return _number(hint, value, key, meta)
    if hint in (bool, str) and type(value) is hint:
        return value
    raise ConfigError(f"{key}: expected {_kind(hint)}, got {_got(value)}", key)


def _got(value: Any) -> str:
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(kind: type, value: Any, key: str, meta: dict) -> float:
    if not _is_number(value) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {_got(value)}", key)
    try:
        out = kind(value)
        finite = math.isfinite(out)
    except OverflowError:  # an int beyond a float's range
        out, finite = value, kind is int
    if not finite:
        raise ConfigError(f"{key}: {_short(value)} is not a finite number", key)
    lo, hi = meta.get("lo", -math.inf), meta.get("hi", math.inf)
    if not lo <= out <= hi:
        bounds = (f"is outside [{lo:g}, {hi:g}]" if math.isfinite(lo) and math.isfinite(hi) else
                  f"must be >= {lo:g}" if math.isfinite(lo) else f"must be <= {hi:g}")
        raise ConfigError(f"{key}: {_short(value)} {bounds}", key)
    return out
