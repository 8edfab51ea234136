"""What a mesh file may refer to and how big it may be, checked before trimesh reads it.

A job reads only its own files, local or remote (docs/security.md). Mesh formats can name
other files: glTF's `buffers[].uri` and `images[].uri`, OBJ's `mtllib` and the texture
maps inside the MTL, PLY's `comment TextureFile`. trimesh's default resolver opens any
such name, absolute or `../`, as given (and `/dev/zero` until memory runs out). Here:

- glTF (.gltf, .glb): only data inside the file is read (the GLB's binary chunk, `data:`
  URIs); any other URI is refused, naming it, before anything is parsed.
- OBJ, PLY: a referenced file is read only from the mesh's own folder, named without an
  absolute path or `..`, not through a link leading out of the folder; anything else is
  refused, naming it (trimesh would only drop a material it could not load, so the
  resolver keeps the refusal and load_mesh raises it).
- Sizes are bounded before reading: the file's bytes (MAX_MESH_BYTES), its triangles as
  its header or accessors declare them (MAX_MESH_FACES), and each texture's pixels as its
  image header declares them (MAX_TEXTURE_PIXELS).
"""
from __future__ import annotations

import base64
import io
import json
import re
import struct
from pathlib import Path, PurePosixPath

from ..errors import MeshError

MAX_MESH_BYTES = 256 << 20  # a mesh file (the HTTP server's upload limit)
# Triangles of a mesh file. Decimating this many to a job's face budget (staged,
# source_mesh.py) takes under a minute on 2 CPU cores (measured 2026-12-06 with VTK's
# vtkQuadricDecimation: 2.9 M -> 200 k faces in 50 s, 1.3 M -> 200 k in 18 s).
MAX_MESH_FACES = 3_000_000
MAX_TEXTURE_PIXELS = 8192 * 8192  # a mesh's texture (export.texture_size's largest side, squared)
MAX_NODES = 100_000  # glTF node instances visited while counting triangles (a graph can nest them)
EMBED_HINT = "embed everything in one file: export the mesh as GLB (Blender: File > Export > glTF 2.0, Format GLB)"
SIZE_HINT = "decimate the mesh (Blender: Decimate modifier) or give a smaller texture, then try again"


class Refusal(MeshError):
    """A mesh file refused before it is read; the hint says how to make one that is not."""


def check_mesh_file(path: Path, data: bytes) -> None:
    """Refusal (a MeshError naming the reason) for a file that refers outside itself (glTF)
    or declares more than MAX_MESH_FACES triangles or a texture over MAX_TEXTURE_PIXELS."""
    kind = path.suffix.lower()
    if kind in (".glb", ".gltf"):
        tree, binary = _gltf_parts(path.name, data, kind == ".glb")
        _check_gltf(path.name, tree, binary)
        return
    faces = {".obj": _obj_faces, ".ply": _ply_faces, ".stl": _stl_faces}.get(kind, lambda d: 0)(data)
    too_many(path.name, faces, "declares")


def too_many(name: str, faces: int, how: str) -> None:
    if faces > MAX_MESH_FACES:
        raise Refusal(f"{name} {how} {faces:,} triangles; a mesh may have at most {MAX_MESH_FACES:,}", SIZE_HINT)


def _obj_faces(data: bytes) -> int:
    """Face lines (a polygon counts once here; load_mesh checks the triangles again)."""
    return sum(data.count(b"\n" + tag) + data.startswith(tag) for tag in (b"f ", b"f\t"))


def _ply_faces(data: bytes) -> int:
    end = data.find(b"end_header", 0, 1 << 16)
    header = data[:max(end, 0)].decode("ascii", "replace")
    found = re.search(r"^element\s+face\s+(\d{1,12})\s*$", header, re.M)
    return int(found.group(1)) if found else 0


def _stl_faces(data: bytes) -> int:
    if len(data) >= 84 and 84 + 50 * struct.unpack_from("<I", data, 80)[0] == len(data):
        return struct.unpack_from("<I", data, 80)[0]  # binary: the count its header declares
    return data.count(b"endfacet")  # ASCII


def _gltf_parts(name: str, data: bytes, glb: bool) -> tuple[dict, bytes | None]:
    """(JSON tree, the GLB's binary chunk or None)."""
    binary = None
    try:
        if glb:
            magic, _, _ = struct.unpack_from("<4sII", data, 0)
            if magic != b"glTF":
                raise ValueError("no glTF magic")
            length, chunk = struct.unpack_from("<II", data, 12)
            if chunk != 0x4E4F534A:  # "JSON"
                raise ValueError("the first chunk is not JSON")
            text = data[20:20 + length]
            rest = 20 + length
            if len(data) >= rest + 8 and struct.unpack_from("<I", data, rest + 4)[0] == 0x004E4942:  # "BIN"
                binary = data[rest + 8:rest + 8 + struct.unpack_from("<I", data, rest)[0]]
        else:
            text = data
        tree = json.loads(text)
    except (ValueError, struct.error, RecursionError, UnicodeDecodeError) as exc:
        raise Refusal(f"could not read {name} as glTF ({type(exc).__name__}: {exc}); export it as GLB") from None
    if not isinstance(tree, dict):
        raise Refusal(f"could not read {name} as glTF (its JSON is not an object); export it as GLB")
    return tree, binary


def _entries(tree: dict, key: str) -> list[dict]:
    items = tree.get(key, [])
    return [x if isinstance(x, dict) else {} for x in items] if isinstance(items, list) else []


def _check_gltf(name: str, tree: dict, binary: bytes | None) -> None:
    for key in ("buffers", "images"):
        for i, entry in enumerate(_entries(tree, key)):
            uri = entry.get("uri")
            if uri is not None and not (isinstance(uri, str) and uri.startswith("data:")):
                raise Refusal(f"{name}: {key}[{i}].uri {str(uri)[:200]!r} points outside the file; a glTF is read "
                              "only with its data inside it (the GLB's binary chunk or data: URIs)", EMBED_HINT)
    too_many(name, _gltf_faces(tree), "holds")
    buffers: dict[int, bytes | None] = {}

    def buffer(i: int) -> bytes | None:
        if i not in buffers:
            entries = _entries(tree, "buffers")
            uri = entries[i].get("uri") if 0 <= i < len(entries) else None
            buffers[i] = (binary if uri is None and i == 0 else
                          _data_uri(uri) if isinstance(uri, str) else None)
        return buffers[i]

    views = _entries(tree, "bufferViews")
    for i, image in enumerate(_entries(tree, "images")):
        if isinstance(image.get("uri"), str):
            blob = _data_uri(image["uri"])
        elif isinstance(image.get("bufferView"), int) and 0 <= image["bufferView"] < len(views):
            view = views[image["bufferView"]]
            whole = buffer(view.get("buffer", 0)) if isinstance(view.get("buffer", 0), int) else None
            start, length = (v if isinstance(v, int) else 0 for v in (view.get("byteOffset", 0), view.get("byteLength", 0)))
            blob = None if whole is None else whole[start:start + length]
        else:
            blob = None
        if blob:
            check_image(f"{name}: images[{i}]", blob)


def _data_uri(uri: str) -> bytes | None:
    """A data: URI's bytes (base64 as glTF writes it), None for anything else."""
    head, _, body = uri.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(body)
    except ValueError:
        return None


def _gltf_faces(tree: dict) -> int:
    """Triangles of every mesh instance the scene graph places (a node's mesh, under every
    parent that reaches it), as the accessors declare them."""
    accessors, meshes, nodes = _entries(tree, "accessors"), _entries(tree, "meshes"), _entries(tree, "nodes")

    def count(i: object) -> int:
        if not isinstance(i, int) or not 0 <= i < len(accessors):
            return 0
        n = accessors[i].get("count", 0)
        return n if isinstance(n, int) and n > 0 else 0

    def mesh_faces(m: object) -> int:
        if not isinstance(m, int) or not 0 <= m < len(meshes):
            return 0
        total = 0
        for prim in meshes[m].get("primitives", []) if isinstance(meshes[m].get("primitives"), list) else []:
            if not isinstance(prim, dict) or prim.get("mode", 4) not in (4, 5, 6):
                continue
            attributes = prim.get("attributes") if isinstance(prim.get("attributes"), dict) else {}
            n = count(prim["indices"]) if "indices" in prim else count(attributes.get("POSITION"))
            total += n // 3 if prim.get("mode", 4) == 4 else max(n - 2, 0)
        return total

    scenes = _entries(tree, "scenes")
    roots = [n for s in scenes for n in (s.get("nodes") if isinstance(s.get("nodes"), list) else [])]
    if not scenes:
        roots = list(range(len(nodes)))
    total, visits, stack = 0, 0, [(r, 0) for r in roots]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, int) or not 0 <= node < len(nodes) or depth > 64:
            continue
        visits += 1
        if visits > MAX_NODES:
            raise Refusal(f"its scene places more than {MAX_NODES:,} node instances", SIZE_HINT)
        total += mesh_faces(nodes[node].get("mesh"))
        if total > MAX_MESH_FACES:
            return total
        children = nodes[node].get("children")
        stack.extend((c, depth + 1) for c in (children if isinstance(children, list) else []))
    return total


def check_image(what: str, data: bytes) -> None:
    """Refusal for an image whose header declares more than MAX_TEXTURE_PIXELS (read
    without decoding it); anything that is not an image is left to its reader."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError:
        raise Refusal(f"{what} is an image of over {2 * Image.MAX_IMAGE_PIXELS:,} pixels; a texture may have at "
                      f"most {MAX_TEXTURE_PIXELS:,}", SIZE_HINT) from None
    except Exception:  # noqa: BLE001 (not an image, or a broken one: its reader says so)
        return
    if width * height > MAX_TEXTURE_PIXELS:
        raise Refusal(f"{what} is a {width}x{height} image; a texture may have at most {MAX_TEXTURE_PIXELS:,} "
                      "pixels", SIZE_HINT)


def confined_resolver(path: Path):  # noqa: ANN201 (a trimesh Resolver; trimesh is imported lazily)
    """The resolver trimesh reads a mesh's companion files through (see the module's notes)."""
    import trimesh

    class Confined(trimesh.resolvers.Resolver):
        def __init__(self) -> None:
            self.folder = path.parent.resolve()
            self.file_name, self.parent = path.name, str(self.folder)
            self.gltf = path.suffix.lower() in (".glb", ".gltf")
            self.refused: list[Refusal] = []

        def _refuse(self, message: str, hint: str) -> None:
            self.refused.append(Refusal(f"{path.name}: {message}", hint))
            raise self.refused[-1]

        def get(self, name: str) -> bytes:
            if self.gltf:
                self._refuse(f"refers to {name[:200]!r}, outside the file; a glTF is read only with its data "
                             "inside it", EMBED_HINT)
            clean = name.strip().replace("\\", "/")
            rel = PurePosixPath(clean)
            if rel.is_absolute() or re.match(r"[A-Za-z]:", clean) or ".." in rel.parts:
                self._refuse(f"refers to {name[:200]!r}: only files in its own folder are read (no absolute "
                             "path, no '..')", EMBED_HINT)
            target = (self.folder / rel).resolve()
            if not target.is_relative_to(self.folder):
                self._refuse(f"refers to {name[:200]!r}, a link out of its folder; only files in its own folder "
                             "are read", EMBED_HINT)
            if not target.is_file():
                raise FileNotFoundError(name)  # trimesh goes on without that material, as it would anyway
            if target.stat().st_size > MAX_MESH_BYTES:
                self._refuse(f"refers to {name[:200]!r} of {target.stat().st_size:,} bytes; at most "
                             f"{MAX_MESH_BYTES:,}", SIZE_HINT)
            data = target.read_bytes()
            try:
                check_image(f"{path.name}: {name[:200]!r}", data)
            except Refusal as exc:
                self.refused.append(exc)
                raise
            return data

        def write(self, name: str, data: bytes) -> None:
            raise PermissionError("a mesh is only read")

        def namespaced(self, namespace: str) -> "Confined":
            raise PermissionError("a mesh's companion files are read from its own folder only")

        def keys(self) -> list[str]:
            return []

    return Confined()
