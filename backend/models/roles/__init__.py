"""Model roles: each module of this package registers one role, a typed record of everything
about it (register(ModelRole(...))): the hub ids it is read from in order, the files its
loaders read and their licence, its repository's layout as published, its loader, its tiny
builder, its networks at full size with random weights (bench and the estimator), the
companions it also reads and what of it only conditions. The store, the catalog, the
download, the tiny builds and the estimator read this registry; adding a role is adding
one module here. Also where the Conjure cache is.

The role modules are imported on the first question to the registry (not when this
package is), so that they may build on the loaders and the tiny builders, which read the
registry themselves.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

if TYPE_CHECKING:
    from ..catalog import HubFiles, Licence, URLFile
    from ..layouts import Layout

# (store: loaders.ModelStore, key) -> the loaded object: a module, a tuple or a components
# dataclass. Typed loosely here: the loaders build on this registry.
Loader = Callable[[Any, str], Any]
# The name read_model's one model goes by in a full-size builder (the others: read_parts' names).
MODEL = "model"


@dataclass(frozen=True)
class Processor:
    """A network's image processor configuration: `path` in its role's repository (a local
    folder holding the role at its root holds the file there by its name), or None where the
    repository publishes none and every pipeline builds the processor's defaults at the
    tower's image_size (diffusers loaders/ip_adapter.py load_ip_adapter:
    CLIPImageProcessor(size=clip_image_size, crop_size=clip_image_size)). `vendored`: the
    published file that stands in for it in the tiny builds and the estimator, (repo, path)
    under models/published/ (published/SOURCES.md: where each was read), or the processor
    class's defaults as a dict where no file was readable."""

    path: str | None
    vendored: tuple[str, str] | Mapping[str, Any] | None

    def published_config(self) -> dict[str, Any]:
        """The configuration at its published size, as vendored."""
        from ..layouts import published

        if self.vendored is None:
            raise ValueError("this processor has no vendored configuration: its defaults at the tower's size")
        return dict(self.vendored) if isinstance(self.vendored, Mapping) else published(*self.vendored)


@dataclass(frozen=True)
class Network:
    """An object the store loads, caches and places on the device: a role's own (key: the
    role), or a network inside its repository loaded apart (key "<role>/<part>").

    full_size: for bench and the estimator, the network at its published size with random
    weights, as zero-argument builders by the names the loader reads them under (read_parts'
    names, or MODEL for read_model's one model); "tiny": the tiny build stands in (what
    crosses its boundary has the published size); None: they build none.
    conditioning: what leaves the GPU once a phase's guidance is built because only the
    conditioning reads it ("all", the loaded object's attributes by name, or () for a
    network a step calls)."""

    loader: Loader
    full_size: Mapping[str, Callable[[], Any]] | Literal["tiny"] | None
    conditioning: Literal["all"] | tuple[str, ...]
    processor: Processor | None


@dataclass(frozen=True)
class ModelRole:
    """One model role.

    order: where it comes in listings (models status, a download's plan) and in a full tiny
    build, which seeds torch once and builds the roles in this order, so every tiny model's
    bytes depend on it: a new role takes a number after every other.
    sources: the hub ids to try, in order (the first is the default); a role read from an
    address (files: URLFile) names the folder under the Conjure cache it is downloaded to.
    files: the file groups its loaders read (catalog.HubFiles) or the one file at an address.
    layout: its repository as published (None for a role read from an address).
    subfolder: where its weights sit in its repository (a local folder without that
    subfolder holds them at its root).
    tiny: writes its tiny model into a folder, in the published layout (None: another role's
    tiny build holds its files: a tokenizer shipped apart).
    network: what the store loads under its name (None: read by other code, or a companion);
    parts: the networks inside its repository loaded apart, by part name.
    companions: the roles whose files it also reads (tokenizers shipped apart)."""

    name: str
    order: int
    sources: tuple[str, ...]
    files: HubFiles | URLFile
    licence: Licence
    layout: Layout | None
    tiny: Callable[[Path], None] | None
    network: Network | None
    parts: Mapping[str, Network] = field(default_factory=dict)
    subfolder: str = ""
    companions: tuple[str, ...] = ()

    @property
    def default(self) -> str:
        return self.sources[0]


_ROLES: dict[str, ModelRole] = {}
_discovered = False


def register(role: ModelRole) -> ModelRole:
    """Add a role to the registry (a role module calls this once, when imported)."""
    known = _ROLES.get(role.name)
    if known is not None and known is not role:
        raise ValueError(f"model role {role.name!r} is already registered")
    clash = next((r.name for r in _ROLES.values() if r.order == role.order and r is not role), None)
    if clash:
        raise ValueError(f"model role {role.name!r}: order {role.order} is {clash!r}'s")
    _ROLES[role.name] = role
    return role


def _discover() -> None:
    """Import every module of this package once: each registers its role."""
    global _discovered
    if not _discovered:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            importlib.import_module(f"{__name__}.{info.name}")
        _discovered = True


def registered() -> list[ModelRole]:
    """Every role, in order."""
    _discover()
    return sorted(_ROLES.values(), key=lambda r: r.order)


def find(name: str) -> ModelRole | None:
    _discover()
    return _ROLES.get(name)


def role(name: str) -> ModelRole:
    """A role's record; KeyError naming the known roles."""
    found = find(name)
    if found is None:
        raise KeyError(f"unknown model role {name!r}; known: {', '.join(r.name for r in registered())}")
    return found


def default_id(name: str) -> str:
    """A role's default hub id (or, for a role read from an address, its folder's name)."""
    return role(name).default


def networks() -> list[tuple[str, Network]]:
    """Every network the store loads, by key ("<role>" or "<role>/<part>"), in role order."""
    out = []
    for r in registered():
        if r.network is not None:
            out.append((r.name, r.network))
        out.extend((f"{r.name}/{part}", net) for part, net in r.parts.items())
    return out


def network(key: str) -> Network | None:
    """The network loaded under a key ("clip", "zero123/image_encoder"), None if none is."""
    base, _, part = key.partition("/")
    r = find(base)
    if r is None:
        return None
    return r.parts.get(part) if part else r.network


def with_companions(roles: set[str] | list[str]) -> list[str]:
    """The roles and the roles whose files they also read, in order."""
    known = {r.name: r for r in registered()}
    unknown = sorted(set(roles) - set(known))
    if unknown:
        raise KeyError(f"unknown model role {unknown[0]!r}; known: {', '.join(known)}")
    wanted = set(roles) | {c for r in roles for c in known[r].companions}
    return [name for name in known if name in wanted]


def point_elsewhere(role: str) -> str:
    """How a user points a role at another repository or a folder."""
    return (f"or point {role!r} elsewhere with a models manifest (the job's \"models\": a JSON file "
            f"{{\"{role}\": \"owner/name or /a/folder\"}}; the add-on preferences' Models field takes the same file)")


def conjure_cache() -> Path:
    """$CONJURE_CACHE (~/.cache/conjure): tiny models, ImageBind's folder, accepted licences."""
    return Path(os.environ.get("CONJURE_CACHE", Path.home() / ".cache" / "conjure"))


def cache_folder(where: str) -> Path:
    """A location of a role read from an address (ImageBind's) as a folder: a path as given,
    else a name under the Conjure cache (the default, "imagebind": $CONJURE_CACHE/imagebind)."""
    return Path(where) if Path(where).is_absolute() or Path(where).exists() else conjure_cache() / where
