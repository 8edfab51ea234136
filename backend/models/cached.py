"""What model weights this machine has: the hub cache's snapshots of each role's sources,
which source answers (the first whose copy is complete), each role's status, and whether
this machine computes in half precision (which weight files count)."""
from __future__ import annotations

from pathlib import Path

from .catalog import HubFiles, URLFile, missing_groups, select_files
from .roles import cache_folder, role as find_role


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE)


def url_folder(role: str) -> Path:
    """Where a role read from an address (ImageBind) is downloaded to and read from by
    default: its folder under the Conjure cache."""
    return cache_folder(find_role(role).default)


def repo_root(cache: Path, repo: str) -> Path:
    return cache / f"models--{repo.replace('/', '--')}"


def computes_in_half() -> bool:
    """Whether the store on this machine computes in fp16 (a CUDA device), so a download
    takes a repository's fp16 weight variants where it has them."""
    import torch

    return torch.cuda.is_available()


def snapshot(repo: str, cache_dir: Path) -> Path | None:
    """The cached snapshot folder of a repository's main revision, if any."""
    root = repo_root(cache_dir, repo)
    ref = root / "refs" / "main"
    if not ref.is_file():
        return None
    snap = root / "snapshots" / ref.read_text().strip()
    return snap if snap.is_dir() else None


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def cached(source: HubFiles, repo: str, cache: Path) -> tuple[Path | None, list[str]]:
    """A repository's cached snapshot (or None) and the file groups it still lacks."""
    snap = snapshot(repo, cache)
    return snap, missing_groups(source, files(snap) if snap else [])


def answering_source(role: str, cache_dir: str | Path | None = None) -> str:
    """The first of a role's hub sources whose cached copy is complete, else the first."""
    cache = hub_cache(cache_dir)
    record = find_role(role)
    return next((r for r in record.sources if not cached(record.files, r, cache)[1]), record.default)


def role_status(role: str, cache_dir: str | Path | None = None) -> dict:
    """One role: present (complete), where it is (or would be), size on disk, the source
    that answered (the first whose copy is complete; else the first), every source, licence."""
    record = find_role(role)
    source = record.files
    entry = {"role": role, "licence": record.licence.name, "licence_url": record.licence.url}
    if isinstance(source, URLFile):
        path = url_folder(role) / source.filename
        return {**entry, "present": path.is_file(), "where": str(path), "source": source.url,
                "sources": [source.url], "size_bytes": path.stat().st_size if path.is_file() else 0,
                "missing": [] if path.is_file() else [source.filename]}
    cache = hub_cache(cache_dir)
    repo = answering_source(role, cache)
    snap, missing = cached(source, repo, cache)
    size = sum((snap / f).stat().st_size for f in select_files(source, files(snap), computes_in_half())) if snap else 0
    return {**entry, "present": not missing, "where": str(snap or repo_root(cache, repo)),
            "source": repo, "sources": list(record.sources), "size_bytes": size, "missing": missing}


def complete(role: str, cache_dir: str | Path | None = None) -> bool:
    return bool(role_status(role, cache_dir)["present"])
