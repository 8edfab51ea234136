"""The job (SPEC Sec. 11): one typed, frozen record, its defaults defined here once.

`parse_job(raw)` reads a job's JSON with schema.parse (an unknown key, a value of the wrong
kind or out of its range, a choice not offered is a JobError naming the dotted field) and
checks what spans fields; `read_job(raw, base_dir, confined)` also resolves its files
against the folder it came from (each must exist with a supported type; a job from the
network may only name files inside base_dir), so a job that passes can start. Every later
stage receives the Job; `to_json()` is what is written to a job folder or sent to a server.
Standard library only: the Blender add-on builds and reads the same record.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

from .errors import ConfigError
from .protocol import JobError, first_unusable, read_manifest
from .schema import parse, setting

VERSION = 1
Mode = Literal["generate", "stylize", "edit"]
MODES: tuple[str, ...] = typing.get_args(Mode)
MODE_HELP = {"generate": "A new object from the prompt",
             "stylize": "Restyle the selected mesh from a style image (and text)",
             "edit": "Change the selected mesh as the prompt says"}
MESH_MODES = ("stylize", "edit")  # the modes that start from a mesh (the job's "mesh")
GuidanceMode = Literal["paper", "oracle"]
GUIDANCE_MODES: tuple[str, ...] = typing.get_args(GuidanceMode)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tga", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")
MAX_TEXT = 4000  # characters of a text prompt (the encoders read 77 tokens of it)
MAX_PATH = 4096  # characters of a path (PATH_MAX on Linux)
DEFAULT_WEIGHT = 1.0  # a given modality's weight when the job names none
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,2})?")


@dataclass(frozen=True)
class Weights:
    """Each modality's relative weight in C_m (conditioning/embedding.py), 0 to 100."""

    text: float = setting(DEFAULT_WEIGHT, lo=0.0, hi=100.0)
    images: float = setting(DEFAULT_WEIGHT, lo=0.0, hi=100.0)
    audio: float = setting(DEFAULT_WEIGHT, lo=0.0, hi=100.0)


MODALITIES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Weights))


@dataclass(frozen=True)
class Prompt:
    """What the job is about: text, reference images, an audio clip, and their weights."""

    text: str | None = None
    images: tuple[str, ...] = ()
    audio: str | None = None
    weights: Weights = Weights()

    def check(self, path: str) -> None:
        if self.text is not None and len(self.text) > MAX_TEXT:
            raise ConfigError(f"{path}.text: {len(self.text)} characters; a prompt has at most {MAX_TEXT}",
                              f"{path}.text")

    def given(self) -> list[str]:
        """The modalities the prompt has (text, images, audio), in that order."""
        return [m for m in MODALITIES if getattr(self, m)]

    @property
    def words(self) -> str:
        """The text, "" without one."""
        return self.text or ""


@dataclass(frozen=True)
class Oracle:
    target_mesh: str


def _overrides(value: Any, path: str) -> Mapping[str, Any]:
    """Dotted preset keys -> values, checked key by key against the typed presets later
    (pipeline.config.resolve); here: an object with string keys, kept read-only."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected an object of dotted preset keys, got {type(value).__name__}", path)
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class Job:
    version: int = VERSION
    mode: Mode = "generate"
    prompt: Prompt = Prompt()
    style_image: str | None = None
    mesh: str | None = None  # stylize and edit: the mesh to work on
    preset: str = "draft"
    models: str = "default"  # default, tiny, a models folder or a manifest file
    guidance: GuidanceMode = "paper"
    oracle: Oracle | None = None  # guidance "oracle": the target it reconstructs
    seed: int = setting(0, lo=0, hi=2 ** 63 - 1)
    device: str = "auto"
    overrides: Mapping[str, Any] = setting(factory=lambda: MappingProxyType({}), parse=_overrides)
    allow_downloads: bool = False

    def check(self, path: str) -> None:
        """What spans fields; `path` is "" (the document)."""
        if self.version != VERSION:
            raise ConfigError(f"version: unsupported job version {self.version!r}; this backend reads {VERSION}",
                              "version")
        if not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"device: {self.device!r}: use auto, cpu, cuda or cuda:N", "device")
        if not _NAME.fullmatch(self.preset):
            raise ConfigError(f"preset: {self.preset!r}: a preset is a name (letters, digits, _ and -)", "preset")
        if self.mesh is None and self.mode in MESH_MODES:
            raise ConfigError(f"mesh: mode {self.mode!r} needs the mesh to work on", "mesh")
        if self.guidance == "oracle":
            if self.oracle is None:
                raise ConfigError("oracle.target_mesh: oracle guidance needs a target mesh", "oracle.target_mesh")
            return
        if self.oracle is not None:
            raise ConfigError('oracle: only used with "guidance": "oracle"', "oracle")
        given = self.prompt.given()
        if self.mode != "stylize" and not given:
            raise ConfigError("prompt: empty prompt: give text, reference images or an audio clip", "prompt")
        if self.mode == "stylize" and not (self.style_image or given):
            raise ConfigError("style_image: stylize needs a style image or a prompt", "style_image")
        if given and not any(getattr(self.prompt.weights, m) > 0 for m in given):
            raise ConfigError(f"prompt.weights: every part of the prompt given ({', '.join(given)}) has weight 0: "
                              "nothing is left to guide the job; give one a weight above 0", "prompt.weights")

    @property
    def has_reference_image(self) -> bool:
        """A reference or style image is given (else a reference view is synthesised)."""
        return bool(self.prompt.images or self.style_image)

    def inputs(self) -> list[tuple[str, str]]:
        """(field, path) of every input file the job names."""
        found = [(f"prompt.images[{i}]", p) for i, p in enumerate(self.prompt.images)]
        for name, value in (("prompt.audio", self.prompt.audio), ("style_image", self.style_image),
                            ("mesh", self.mesh), ("oracle.target_mesh", self.oracle and self.oracle.target_mesh)):
            if value:
                found.append((name, value))
        return found

    def with_inputs(self, paths: Mapping[str, str]) -> "Job":
        """The job with input files replaced, by the fields inputs() names."""
        images = tuple(paths.get(f"prompt.images[{i}]", p) for i, p in enumerate(self.prompt.images))
        prompt = dataclasses.replace(self.prompt, images=images, audio=paths.get("prompt.audio", self.prompt.audio))
        oracle = self.oracle and Oracle(paths.get("oracle.target_mesh", self.oracle.target_mesh))
        return dataclasses.replace(self, prompt=prompt, oracle=oracle,
                                   style_image=paths.get("style_image", self.style_image),
                                   mesh=paths.get("mesh", self.mesh))

    def to_json(self) -> dict[str, Any]:
        """The job as JSON data (parse_job reads it back to the same Job)."""
        return _json(self)


# The add-on's output settings as preset overrides (tests/test_job.py resolves each key
# against every preset). PBR: the share of phase III's views lit (roughness and metallic
# only show under light; the other views stay unlit, where the base colour is seen as it is).
PBR_LIT_SHARE = 0.5


def output_overrides(max_faces: int = 0, texture_size: int = 0, pbr: bool = False) -> dict[str, Any]:
    """Face budget and texture size (0: the preset's) and learned PBR maps, as overrides."""
    out: dict[str, Any] = {}
    if max_faces > 0:
        out["export.max_faces"] = max_faces
    if texture_size > 0:
        out["export.texture_size"] = texture_size
    if pbr:
        out.update({"phase3.material": "pbr", "phase3.shading.lambertian": PBR_LIT_SHARE})
    return out


def _json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


def parse_job(raw: Any) -> Job:
    """A job's JSON data -> Job (paths as written). JobError naming the field at fault."""
    if not isinstance(raw, dict):
        raise JobError("job", f"expected a JSON object, got {type(raw).__name__}")
    # overrides are checked key by key against the typed presets (pipeline.config.resolve)
    bad = first_unusable({k: v for k, v in raw.items() if k != "overrides"})
    if bad:
        raise JobError(*bad)
    text = (raw.get("prompt") or {}).get("text") if isinstance(raw.get("prompt"), dict) else None
    if isinstance(text, str):  # surrounding space is not a prompt
        raw = {**raw, "prompt": {**raw["prompt"], "text": text.strip() or None}}
    try:
        return parse(Job, raw, "")
    except ConfigError as exc:
        field_name = exc.field or "job"
        raise JobError(field_name, str(exc).removeprefix(f"{field_name}: ")) from None


def read_job(raw: Any, base_dir: str | Path, confined: bool = False) -> Job:
    """A job's JSON data -> Job with every file resolved against base_dir (resolve_job)."""
    return resolve_job(parse_job(raw), base_dir, confined)


def resolve_job(job: Job, base_dir: str | Path, confined: bool = False) -> Job:
    """The job with every file resolved (absolute) against base_dir, the folder it came
    from. confined: a job from the network; every file it names must lie inside base_dir
    (its upload folder) and it uses the server's own models."""
    base = Path(base_dir)
    suffixes = {"prompt.audio": AUDIO_SUFFIXES, "mesh": MESH_SUFFIXES, "oracle.target_mesh": MESH_SUFFIXES}
    paths = {name: _file(name, value, base, suffixes.get(name, IMAGE_SUFFIXES), confined)
             for name, value in job.inputs()}
    return dataclasses.replace(job.with_inputs(paths), models=_models(job.models, base, confined))


def _path(name: str, value: str) -> Path:
    if not value or "\x00" in value or len(value) > MAX_PATH:
        raise JobError(name, "not a usable path (empty, a NUL byte, or over 4096 characters)")
    return Path(value)


def _is(check: str, path: Path) -> bool:
    """path.is_file() / .exists(), False where the OS cannot look the name up (a component
    over NAME_MAX raises instead of answering)."""
    try:
        return getattr(path, check)()
    except OSError:
        return False


def _file(name: str, value: str, base: Path, suffixes: tuple[str, ...], confined: bool) -> str:
    path = _path(name, value)
    if confined and (path.is_absolute() or ".." in path.parts or
                     not (base / path).resolve().is_relative_to(base.resolve())):
        raise JobError(name, f"{value!r}: a remote job may only name files uploaded with it")
    path = path if path.is_absolute() else (base / path)
    if not _is("is_file", path):
        raise JobError(name, f"file not found: {path}")
    if path.suffix.lower() not in suffixes:
        raise JobError(name, f"{path.name}: unsupported file type; use one of {', '.join(suffixes)}")
    return str(path.resolve())


def _models(models: str, base: Path, confined: bool) -> str:
    """default, tiny, or a models folder or manifest file resolved against base."""
    if models in ("default", "tiny"):
        return models
    if confined:
        raise JobError("models", "a remote job uses the server's models: default or tiny")
    path = _path("models", models)
    path = path if path.is_absolute() else base / path
    if not _is("exists", path):
        raise JobError("models", f"not found: {path}; use default, tiny, a models folder or a manifest file")
    if _is("is_file", path):
        try:
            read_manifest(path)
        except ValueError as exc:
            raise JobError("models", f"{path.name}: {exc}") from None
    return str(path.resolve())

