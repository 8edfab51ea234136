"""A model hub on 127.0.0.1 for download tests: the endpoints huggingface_hub uses
(`/api/models/<repo>` listing with sizes, `/<repo>/resolve/<rev>/<path>` with HEAD
metadata and Range requests) over files held in memory, and plain files at other paths
(the ImageBind stand-in). Every request is logged with its Range header. tiny_mirror()
serves the tiny models under their real hub ids, in each repository's published layout;
download_env() points a process at it."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".pth")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag(path: str, data: bytes) -> str:
    """The hub's: the SHA-256 for LFS files, else the git blob id."""
    return hashlib.sha256(data).hexdigest() if path.endswith(LFS_SUFFIXES) else git_blob_id(data)


def folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class HubMirror:
    def __init__(self, repos: dict[str, dict[str, bytes]], files: dict[str, bytes] | None = None,
                 hold_at: int | None = None) -> None:
        """hold_at: the first GET of a file larger than that stops after sending hold_at
        bytes (`held` is set) until release(): a download is then mid-file for certain,
        whatever the machine's speed."""
        self.repos, self.files, self.hold_at = repos, files or {}, hold_at
        self.held, self._released = threading.Event(), threading.Event()
        self.log: list[tuple[str, str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "HubMirror":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self._released.set()

    def _hold(self, sent: int, size: int) -> None:
        if self.hold_at is not None and sent == self.hold_at < size and not self.held.is_set():
            self.held.set()
            self._released.wait(60)

    def _lookup(self, path: str) -> tuple[str, bytes] | None:
        if path in self.files:
            return path, self.files[path]
        for repo, content in self.repos.items():
            head = f"/{repo}/resolve/"
            if path.startswith(head):
                name = path[len(head):].split("/", 1)[1]
                if name in content:
                    return name, content[name]
        return None

    def _listing(self, path: str) -> dict | None:
        for repo, content in self.repos.items():
            if path == f"/api/models/{repo}" or path.startswith(f"/api/models/{repo}/revision/"):
                siblings = []
                for name, data in sorted(content.items()):
                    entry = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
                    if name.endswith(LFS_SUFFIXES):
                        entry["lfs"] = {"sha256": etag(name, data), "size": len(data), "pointerSize": 134}
                    siblings.append(entry)
                return {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings, "private": False}
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, head_only: bool) -> None:
                path = self.path.split("?", 1)[0]
                mirror.log.append((self.command, path, self.headers.get("Range")))
                listing = mirror._listing(path)
                if listing is not None:
                    body = json.dumps(listing).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                found = mirror._lookup(path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                name, data = found
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-", 1)[0] or 0)
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{etag(name, data)}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                if not head_only:
                    for at in range(start, len(data), 1 << 16):
                        mirror._hold(at, len(data))
                        self.wfile.write(data[at:at + (1 << 16)])

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's names)
                self._send(True)

            def do_GET(self) -> None:  # noqa: N802
                self._send(False)

        return Handler


STANDIN = "/fbaipublicfiles/imagebind/imagebind_huge.pth"


def tiny_folder(tiny: Path, role: str) -> Path:
    """Where a build_tiny folder holds a role's files: its own folder, or for a role with no
    tiny build of its own (a tokenizer shipped apart) the folder of the role that reads it,
    its tokenizer/ where it has one (where the loaders look)."""
    from backend.models.roles import registered

    reader = next((r.name for r in registered() if role in r.companions), None)
    if reader is None:
        return tiny / role
    folder = tiny / reader
    return folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder


def _half(data: bytes) -> bytes:
    """A safetensors file's floating tensors in fp16: the `.fp16.` variant of a weights file."""
    from safetensors.torch import load, save

    return save({k: v.half() if v.is_floating_point() else v for k, v in load(data).items()})


def published(role: str, tiny: Path) -> dict[str, bytes]:
    """A role's repository as the hub publishes it (its record's layout): exactly the
    layout's files; those the tiny folder has are its own, fp16 variants are converted from
    the tiny safetensors beside them, and the rest (originals, cards, pickles beside
    safetensors: files no loader reads) are placeholder bytes that cannot load."""
    from backend.models.roles import role as find_role

    own = folder_files(tiny_folder(tiny, role))
    out = {}
    for name in find_role(role).layout.files:
        full = name.replace(".fp16.safetensors", ".safetensors")
        if name in own:
            out[name] = own[name]
        elif full != name and full in own:
            out[name] = _half(own[full])
        else:
            out[name] = b"published, not read by the loaders: " + name.encode()
    return out


def tiny_repos(tiny: Path) -> dict[str, dict[str, bytes]]:
    """Every role that tiny has a folder for, under its hub id, in its published layout (a
    repository two roles share, unCLIP's, from the first: the whole pipeline's folder)."""
    from backend.models.roles import registered

    repos: dict[str, dict[str, bytes]] = {}
    for r in registered():
        if r.layout and tiny_folder(tiny, r.name).is_dir():
            repos.setdefault(r.layout.repo, published(r.name, tiny))
    return repos


def tiny_mirror(tiny: Path, hold_at: int | None = None) -> HubMirror:
    return HubMirror(tiny_repos(tiny), {STANDIN: (tiny / "imagebind" / "imagebind_huge.pth").read_bytes()},
                     hold_at)


def download_env(tmp_path: Path, mirror: HubMirror, tiny: Path, offline: bool) -> dict[str, str]:
    """A process's environment: the mirror as the hub, the caches in tmp_path, the stand-in
    ImageBind's address and checksum; HF_HUB_OFFLINE as asked."""
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1" if offline else "0", "HF_ENDPOINT": mirror.url,
            "HF_HUB_CACHE": str(tmp_path / "hub"), "CONJURE_CACHE": str(tmp_path / "conjure"),
            "CONJURE_IMAGEBIND_URL": mirror.url + STANDIN,
            "CONJURE_IMAGEBIND_SHA256": hashlib.sha256((tiny / "imagebind" / "imagebind_huge.pth").read_bytes())
            .hexdigest()}
