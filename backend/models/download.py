"""Model weights onto this machine: what a set of roles still needs (plan), whether it fits
(free space), and the download itself with progress, cancellation and resumption (what is
already here: cached.py; licences: licences.py).

Hub files land in huggingface_hub's cache layout (blobs/<etag>, snapshots/<commit>/<path>
linking to them, refs/main), where the loaders read them offline afterwards; the hub's
metadata (commit, etag, size, redirect) comes from huggingface_hub. Every file arrives in
a `<name>.part` beside its destination, hashed as it arrives, resumed with a Range
request after a cancel or a lost connection (huggingface_hub 2.x discards partial files),
checked (size; SHA-256 for LFS files, whose etag it is, and for ImageBind) and renamed
into place only then. A role read from an address (ImageBind's checkpoint, from its
official one) lands in its folder under the Conjure cache ($CONJURE_CACHE/imagebind).
Progress events (dicts, `type: "download"`): role, file, bytes_done / bytes_total over the
whole plan, rate_bps, eta_s.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cached import computes_in_half, hub_cache, repo_root, role_status, url_folder
from .catalog import HubFiles, URLFile, missing_groups, select_files
from .roles import point_elsewhere, role as find_role, with_companions

Progress = Callable[[dict], None]
SPACE_MARGIN = 1.05  # free space wanted beyond the bytes still to fetch (file system slack)


class DownloadError(RuntimeError):
    """A download that cannot start or go on; `hint` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class DownloadCancelled(DownloadError):
    pass


# ---- what is still needed ------------------------------------------------------------------

@dataclass
class FileTask:
    role: str
    name: str  # path in the repository, or the URL's file name
    size: int  # bytes; 0 when the server does not say
    done: int = 0  # bytes already there from an interrupted download
    repo: str = ""  # the hub repository that answered (empty for a URL)


@dataclass
class Plan:
    roles: list[str]
    tasks: list[FileTask] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(t.size for t in self.tasks)

    @property
    def remaining(self) -> int:
        return sum(max(t.size - t.done, 0) for t in self.tasks)


def _part_bytes(cache: Path, repo: str, etag: str | None) -> int:
    """Bytes an interrupted download of the blob left (the etag is the LFS SHA-256, else
    the git blob id, as the hub's listing gives them)."""
    part = repo_root(cache, repo) / "blobs" / f"{etag}.part"
    return part.stat().st_size if etag and part.is_file() else 0


def plan(roles: list[str] | set[str], endpoint: str | None = None, cache_dir: str | Path | None = None,
         half: bool | None = None) -> Plan:
    """The files still to fetch for these roles (and their companions), with sizes from the
    hub's listing (or the server's Content-Length for ImageBind). half: fetch fp16 weight
    variants (default: computes_in_half())."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        raise DownloadError("downloads are switched off on this machine (HF_HUB_OFFLINE=1)",
                            "unset HF_HUB_OFFLINE to download, or copy the model folders here and point a "
                            "models manifest at them")
    cache = hub_cache(cache_dir)
    half = computes_in_half() if half is None else half
    out = Plan(with_companions(roles))
    api = HfApi(endpoint=endpoint or constants.ENDPOINT)
    for role in out.roles:
        source = find_role(role).files
        if isinstance(source, URLFile):
            part = url_folder(role) / f"{source.filename}.part"
            if not (url_folder(role) / source.filename).is_file():
                size = _remote_size(source.address())
                out.tasks.append(FileTask(role, source.filename, size, part.stat().st_size if part.is_file() else 0))
            continue
        if not role_status(role, cache)["missing"]:
            continue
        repo, siblings = _answering_listing(role, source, api)
        for name in select_files(source, list(siblings), half):
            if isinstance(try_to_load_from_cache(repo, name, cache_dir=cache), str):
                continue
            s = siblings[name]
            etag = s.lfs.sha256 if s.lfs else s.blob_id
            out.tasks.append(FileTask(role, name, int(s.size or 0), _part_bytes(cache, repo, etag), repo))
    return out


def _answering_listing(role: str, source: HubFiles, api) -> tuple[str, dict]:  # noqa: ANN001 (HfApi)
    """The first of the role's sources whose listing has every file group the loaders
    read -> (repository, {path: sibling}); DownloadError naming each source tried."""
    tried = []
    for repo in find_role(role).sources:
        try:
            listing = api.model_info(repo, files_metadata=True).siblings or []
        except Exception as exc:  # noqa: BLE001 (hub errors come in many types)
            tried.append(f"{repo} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'})")
            continue
        siblings = {s.rfilename: s for s in listing}
        missing = missing_groups(source, list(siblings))
        if not missing:
            return repo, siblings
        tried.append(f"{repo} (no file for {', '.join(missing)}: the repository changed layout)")
    raise DownloadError(f"{role}: no source answered; tried {'; '.join(tried)}",
                        f"check the connection (and HF_ENDPOINT, or a token for gated models), {point_elsewhere(role)}")


def _remote_size(url: str) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as r:
        return int(r.headers.get("Content-Length") or 0)


def check_space(p: Plan, cache_dir: str | Path | None = None) -> None:
    """Refuse before fetching anything when a destination's file system has too little room."""
    need: dict[Path, int] = {}
    for t in p.tasks:
        dest = url_folder(t.role) if isinstance(find_role(t.role).files, URLFile) else hub_cache(cache_dir)
        need[dest] = need.get(dest, 0) + max(t.size - t.done, 0)
    for dest, remaining in need.items():
        free = free_bytes(dest)
        if remaining * SPACE_MARGIN > free:
            raise DownloadError(f"not enough free space in {dest}: {remaining / 1e9:.2f} GB to download, "
                                f"{free / 1e9:.2f} GB free", "free some space or choose another model folder")


def free_bytes(folder: Path) -> int:
    """Free bytes on the file system that holds folder (or its nearest existing parent)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


# ---- fetching ------------------------------------------------------------------------------

class _Meter:
    """Bytes over the whole plan -> throttled progress events; the cancel check runs on
    every chunk, so a cancel stops a file within one chunk."""

    def __init__(self, p: Plan, progress: Progress, cancelled: Callable[[], bool], every_s: float = 0.25) -> None:
        self.total, self.done = p.total, sum(t.done for t in p.tasks)
        self.progress, self.cancelled, self.every_s = progress, cancelled, every_s
        self.start, self.start_done, self.last = time.monotonic(), self.done, 0.0
        self.role = self.file = ""

    def add(self, n: int) -> None:
        if self.cancelled():
            raise DownloadCancelled(f"download cancelled during {self.file}",
                                    "run the download again to resume where it stopped")
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            self.emit()

    def emit(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        self.progress({"type": "download", "role": self.role, "file": self.file, "bytes_done": self.done,
                       "bytes_total": self.total, "rate_bps": rate, "eta_s": eta})



def download(p: Plan, progress: Progress, cancelled: Callable[[], bool] = lambda: False,
             endpoint: str | None = None, cache_dir: str | Path | None = None) -> None:
    """Fetch the plan's files; on cancel or error what arrived stays for the next run."""
    meter = _Meter(p, progress, cancelled)
    meter.emit()
    for t in p.tasks:
        meter.role, meter.file = t.role, t.name
        source = find_role(t.role).files
        if isinstance(source, URLFile):
            dest = url_folder(t.role) / source.filename
            digest = _stream(source.address(), dest, meter, {}, t.size)
            _verify(dest, digest, source.checksum(), t.size)
            dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")
        else:
            _fetch_hub_file(t.repo, t.name, hub_cache(cache_dir), meter, endpoint)
    meter.emit()


def _fetch_hub_file(repo: str, name: str, cache: Path, meter: _Meter, endpoint: str | None) -> None:
    from huggingface_hub import constants, get_hf_file_metadata
    from huggingface_hub.utils import build_hf_headers

    endpoint = endpoint or constants.ENDPOINT  # read now: tests and servers may point it elsewhere
    url = f"{endpoint.rstrip('/')}/{repo}/resolve/main/{urllib.parse.quote(name)}"
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    except Exception as exc:  # noqa: BLE001 (hub errors come in many types)
        raise DownloadError(f"{repo}/{name}: no metadata from the hub ({exc})",
                            "check the connection (and HF_ENDPOINT, or a token for gated models)") from exc
    root = repo_root(cache, repo)
    blob = root / "blobs" / meta.etag
    if not blob.is_file():
        # a redirect to another host (the CDN) gets no hub credentials
        location = meta.location or url
        same_host = urllib.parse.urlsplit(location).netloc == urllib.parse.urlsplit(url).netloc
        digest = _stream(location, blob, meter, build_hf_headers() if same_host else {}, meta.size or 0)
        lfs = len(meta.etag) == 64  # an LFS file's etag is its SHA-256
        _verify(blob, digest, meta.etag if lfs else None, meta.size)
    link = root / "snapshots" / meta.commit_hash / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks (Windows without developer mode): a copy, as huggingface_hub does
            shutil.copyfile(blob, link)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(meta.commit_hash)


def _stream(url: str, dest: Path, meter: _Meter, headers: dict[str, str], size: int, chunk: int = 1 << 20) -> str:
    """url -> dest.part, resumed with a Range request when a part is there (none when it
    already holds `size` bytes); -> the SHA-256 of the whole part. Cancels and network
    errors leave the part for the next run."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    have = part.stat().st_size if part.is_file() else 0
    if have:
        with part.open("rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                digest.update(block)
    if size and have >= size:
        return digest.hexdigest()
    request = urllib.request.Request(url, headers={**headers, **({"Range": f"bytes={have}-"} if have else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as r, part.open("ab") as f:
            if have and r.status != 206:  # the server ignored the range: start over
                f.truncate(0)
                digest = hashlib.sha256()
            for block in iter(lambda: r.read(chunk), b""):
                meter.add(len(block))
                digest.update(block)
                f.write(block)
    except DownloadError:
        raise
    except OSError as exc:
        raise DownloadError(f"{meter.role}: {url} could not be downloaded ({exc})",
                            "check the connection, then run the download again: it resumes") from exc
    return digest.hexdigest()


def _verify(dest: Path, digest: str, sha256: str | None, size: int) -> None:
    """The finished part against its expected SHA-256 and size, then renamed into place; a
    mismatch removes the part: nothing half-written stays."""
    part = dest.with_name(dest.name + ".part")
    got = part.stat().st_size
    problem = None
    if sha256 is not None and digest != sha256.lower():
        problem = f"SHA-256 {digest} does not match the expected {sha256}"
    elif size and got != size:
        problem = f"{got} bytes arrived, {size} expected"
    if problem:
        part.unlink()
        raise DownloadError(f"{dest.name}: {problem}",
                            "the file was corrupted or replaced on the way; the partial download was removed, "
                            "run the download again")
    os.replace(part, dest)
