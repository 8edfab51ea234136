"""The wire protocol between the add-on and the backend server, and how every JSON that
arrives is read. Standard library only: the Blender add-on imports this module too. The job
itself is backend/job.py.

Every JSON that arrives (job files, stdio lines, HTTP bodies) is read by `loads`: Python's
reader alone accepts NaN / Infinity literals, turns 1e400 into infinity, keeps the last of
duplicate keys, recurses until the interpreter's stack gives out and spends quadratic time
on a 4000-digit number before refusing it with an uncaught ValueError. Here a duplicate
key is refused, nesting and number literals are bounded (JSONLimit, naming the field),
and a non-finite number or text that is not valid Unicode anywhere in a job or a message
is refused naming its dotted field (`first_unusable`; overrides by pipeline.config.resolve).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

class JobError(ValueError):
    """An invalid job; `field` names the key (dotted) at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"duplicate key {key!r}: each key may appear once")
        out[key] = value
    return out


MAX_DEPTH = 32  # nesting levels of any JSON that arrives (a job needs 4)
# Characters of one number literal: a seed has at most 19 digits, and Python's int parser
# gives up (ValueError) beyond 4300 after a quadratic amount of work.
MAX_NUMBER = 64


class JSONLimit(ValueError):
    """JSON over a limit (MAX_DEPTH, MAX_NUMBER): `field` names where (dotted, "" for the
    document itself); `partial` is what was read (a message's id, for its error)."""

    def __init__(self, field: str, reason: str, partial: Any = None) -> None:
        super().__init__(f"{field or 'the document'}: {reason}")
        self.field, self.reason, self.partial = field, reason, partial


class _LongNumber:
    """A number literal over MAX_NUMBER characters, kept unparsed for loads to name."""

    def __init__(self, text: str) -> None:
        self.chars = len(text)


def _number(parse: type) -> Any:
    return lambda text: _LongNumber(text) if len(text) > MAX_NUMBER else parse(text)


def _field(where: str, key: Any) -> str:
    """A dotted field name (`prompt.weights.text`, `files[0]`); long keys shortened."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    key = key if len(key) <= 64 else key[:61] + "..."
    return f"{where}.{key}" if where else key


def _check_limits(value: Any, where: str, depth: int, root: Any) -> None:
    if isinstance(value, _LongNumber):
        raise JSONLimit(where, f"a number of {value.chars} characters; at most {MAX_NUMBER}", root)
    if isinstance(value, (dict, list)):
        if depth > MAX_DEPTH:
            raise JSONLimit(where, f"nested deeper than {MAX_DEPTH} levels", root)
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            _check_limits(item, _field(where, key), depth + 1, root)


# Strings (skipped whole, at the regular expression engine's speed) and brackets.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


def _cut_too_deep(text: str) -> str | None:
    """The document cut where it first nests deeper than MAX_DEPTH, an empty list standing
    in for the rest there and the open brackets closed: json reads it without recursing
    past Python's limit, and _check_limits names the field. None if it never does."""
    stack: list[str] = []
    for m in _STRUCTURE.finditer(text):
        token = m.group()
        if token in ("[", "{"):
            if len(stack) == MAX_DEPTH:
                return text[:m.start()] + "[]" + "".join("]" if b == "[" else "}" for b in reversed(stack))
            stack.append(token)
        elif token in ("]", "}") and stack:
            stack.pop()
    return None


def loads(text: str | bytes) -> Any:
    """JSON -> Python, refusing duplicate keys (DuplicateKey) and, naming the field,
    documents nested deeper than MAX_DEPTH or with a number literal over MAX_NUMBER
    characters (JSONLimit); both are ValueErrors. NaN, Infinity and overflowing numbers
    parse to non-finite floats, for first_unusable to name."""
    read = lambda doc: json.loads(doc, object_pairs_hook=_no_duplicates,  # noqa: E731
                                  parse_int=_number(int), parse_float=_number(float))
    try:
        value = read(text)
    except RecursionError:
        cut = _cut_too_deep(text.decode("utf-8", "surrogatepass") if isinstance(text, bytes) else text)
        if cut is None:
            raise JSONLimit("", f"nested deeper than {MAX_DEPTH} levels") from None
        value = read(cut)
    _check_limits(value, "", 1, value)
    return value


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def first_unusable(value: Any, where: str = "") -> tuple[str, str] | None:
    """(dotted field, what is wrong) of the first value that no job or message may carry,
    else None: a NaN or infinite number, or text that is not valid Unicode (a lone
    surrogate, which JSON's \\ud800 escapes can spell), in keys too."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "value", f"{value!r} is not a finite number"
    if isinstance(value, str) and _SURROGATE.search(value):
        return where or "value", "not valid Unicode text (a lone surrogate such as \\ud800)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        field = _field(where, key)
        if isinstance(key, str) and _SURROGATE.search(key):
            return field, "the key is not valid Unicode text (a lone surrogate such as \\ud800)"
        found = first_unusable(item, field)
        if found:
            return found
    return None


MAX_MANIFEST = 1 << 20  # bytes of a models manifest (a few dozen roles)


def read_manifest(path: str | Path) -> dict[str, str]:
    """A models manifest, JSON {"role": "folder or hub id", ...}; ValueError saying what is
    wrong with it."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_MANIFEST:
            raise ValueError(f"{path.stat().st_size} bytes; a manifest has at most {MAX_MANIFEST}")
        raw = loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:  # not UTF-8, not JSON, a duplicate key, over a limit
        raise ValueError(f"not a JSON manifest ({exc})") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                            for k, v in raw.items()):
        raise ValueError('expected a JSON object {"role": "folder or hub id", ...}')
    bad = first_unusable(raw)
    if bad:
        raise ValueError(f"{bad[0]}: {bad[1]}")
    return raw


# --- Wire protocol (serve --stdio / --http) ------------------------------------------------
# One JSON object per line, UTF-8, each with "v": PROTOCOL_VERSION and a "type".
#   client -> server: submit {id, job, base_dir, out_dir}, cancel {id}, free, ping, shutdown,
#                     models {action: status | download | cancel, roles, job, accept_licences}
#   server -> client: hello {capabilities}, queued {id, position, farm?: {workers, busy,
#                     queued}} (again whenever its place changes on a farm), accepted, progress, log,
#                     result, done, cancelled, error {code, message, hint, traceback}, pong,
#                     freed; job events carry the job's "id". models_status {roles, cache,
#                     free_bytes}, download {progress}, models_done {status}
#                     (server/model_service.py).
PROTOCOL_VERSION = 1
MAX_LINE = 1 << 20  # bytes; a longer line is a protocol error (jobs and events are small)
CLIENT_TYPES = ("submit", "cancel", "free", "ping", "shutdown", "models")
SERVER_TYPES = ("hello", "queued", "accepted", "progress", "log", "result", "done", "cancelled", "error",
                "pong", "freed", "models_status", "download", "models_done")
MODEL_ACTIONS = ("status", "download", "cancel")
PRIORITIES = {"low": -1, "normal": 0, "high": 1}  # a job's priority on a farm (POST /jobs "priority")


class ProtocolError(ValueError):
    """A message that cannot be accepted; the text says what is wrong with it, `job_id` the
    job it was about when that could be read."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


def encode(message: dict) -> str:
    """-> one line (with its newline) carrying the message and the protocol version."""
    return json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":")) + "\n"


def decode(line: str | bytes, expected: tuple[str, ...]) -> dict:
    """Parse one line into a message whose type is in `expected`; ProtocolError otherwise."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line of {len(line)} bytes exceeds the {MAX_LINE}-byte limit")
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"not UTF-8: {exc}") from exc
    try:
        msg = loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON ({exc.msg}): {line[:80]!r}") from exc
    except DuplicateKey as exc:
        raise ProtocolError(str(exc)) from None
    except JSONLimit as exc:
        about = exc.partial.get("id") if isinstance(exc.partial, dict) else None
        raise ProtocolError(str(exc), about if isinstance(about, str) else None) from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"expected a JSON object, got {type(msg).__name__}")
    bad = first_unusable({k: v for k, v in msg.items() if k != "job"})  # a job: parse_job names its field
    if bad:
        raise ProtocolError(f"{bad[0]}: {bad[1]}", msg["id"] if isinstance(msg.get("id"), str) else None)
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {msg.get('v')!r} is not {PROTOCOL_VERSION}: "
                            "the add-on and the backend are from different releases; reinstall the backend")
    if msg.get("type") not in expected:
        raise ProtocolError(f"unknown message type {msg.get('type')!r}; expected one of {', '.join(expected)}")
    if msg["type"] in ("submit", "cancel") and not isinstance(msg.get("id"), str):
        raise ProtocolError(f"{msg['type']} needs a string \"id\"")
    if msg["type"] == "models":
        if msg.get("action") not in MODEL_ACTIONS:
            raise ProtocolError(f"models needs an \"action\": one of {', '.join(MODEL_ACTIONS)}")
        roles = msg.get("roles", [])
        if not (isinstance(roles, list) and all(isinstance(r, str) for r in roles)):
            raise ProtocolError("models' \"roles\" must be a list of role names")
        if not isinstance(msg.get("job", {}), (dict, type(None))):
            raise ProtocolError("models' \"job\" must be a job object")
    if msg["type"] == "submit":
        if not (isinstance(msg.get("job"), dict) and isinstance(msg.get("out_dir"), str) and msg["out_dir"].strip()):
            raise ProtocolError("submit needs \"job\" (an object) and \"out_dir\" (a non-empty path)")
        if not isinstance(msg.get("base_dir", ""), (str, type(None))):
            raise ProtocolError("submit's \"base_dir\" must be a path (a string)")
        if not Path(msg["out_dir"]).is_absolute() or not Path(msg.get("base_dir") or msg["out_dir"]).is_absolute():
            raise ProtocolError("submit's out_dir and base_dir must be absolute paths")
    return msg
