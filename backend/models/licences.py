"""The licences a user has accepted on this machine ($CONJURE_CACHE/licences.json), once per
role, before its first download."""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_path
from .roles import conjure_cache, role as find_role


def _licence_file() -> Path:
    return conjure_cache() / "licences.json"


def accepted_licences() -> set[str]:
    f = _licence_file()
    return set(json.loads(f.read_text())) if f.is_file() else set()


def unaccepted(roles: list[str]) -> list[str]:
    """The roles whose licence has not been accepted on this machine yet."""
    done = accepted_licences()
    return [r for r in roles if r not in done]


def accept_licences(roles: list[str]) -> None:
    f = _licence_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(f) as tmp:
        Path(tmp).write_text(json.dumps(sorted(accepted_licences() | set(roles)), indent=1))


def licence_lines(roles: list[str]) -> list[str]:
    return [f"{r}: {find_role(r).licence.name} ({find_role(r).licence.url})" for r in roles]
