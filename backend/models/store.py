"""The model store: model roles -> where their weights are -> loaded objects, cached,
placed on the device and parked off it between phases.

A job's `models` field picks the source: "default" (public hub ids, read from the local
Hugging Face cache; a download only when the job allows it), "tiny" (random miniature
models built on first use into a cache folder), a folder written by
`python -m backend models build-tiny`, or a JSON manifest mapping roles to folders or ids.
Models load lazily, once (each with the loader its role's record names: models/roles/), in
fp16 on CUDA (fp32 on CPU), from a repository's fp16 weight variant where one is on disk
(half the bytes; models/variants.py); park() moves them off the GPU between phases, and
what only conditions leaves it once a phase's guidance is built. models/encoders.py turns
them into functions of images.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import ModelNotAvailable
from ..protocol import read_manifest
from . import graphs
from .catalog import URLFile
from .roles import cache_folder, conjure_cache, find, network, networks, point_elsewhere, registered

def tiny_cache_dir() -> Path:
    from .tiny import TINY_VERSION

    return conjure_cache() / f"tiny-v{TINY_VERSION}"


class StoreKey(NamedTuple):
    """What makes two jobs' stores the same one (a server keeps one store per key)."""

    models: str  # the job's `models`: default, tiny, a folder or a manifest
    device: str
    downloads: bool
    compiled: bool
    graphed: bool


class ModelStore:
    @classmethod
    def shared(cls, stores: dict[StoreKey, "ModelStore"], key: StoreKey) -> "ModelStore":
        """The store of `key` in a server's `stores`, made on first use."""
        if key not in stores:
            stores[key] = cls(key.models, allow_download=key.downloads, device=key.device, compile_networks=key.compiled,
                              graph_networks=key.graphed)
        return stores[key]

    def __init__(self, source: str = "default", allow_download: bool = False,
                 device: torch.device | str = "cpu", compile_networks: bool = False, graph_networks: bool = False) -> None:
        """compile_networks: the UNets and decoders run through torch.compile when called
        without gradient (models/compiled.py); graph_networks: the networks a step calls replay
        CUDA graphs (models/graphs.py)."""
        self.source, self.allow_download, self.compile_networks = source, allow_download, compile_networks
        self.graph_networks = graph_networks
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self._loaded: dict[str, Any] = {}
        self._away: set[int] = set()  # ids of loaded modules moved off the device
        self.offload = self.device.type != "cpu"  # whether parking moves anything
        self._manifest: dict[str, str] = {}
        if source == "tiny":
            self._tiny_root = tiny_cache_dir()
        elif source not in ("default",):
            path = Path(source)
            if path.is_file():
                try:
                    self._manifest = read_manifest(path)
                except ValueError as exc:
                    raise ModelNotAvailable("*", source, f"the models manifest cannot be used: {exc}") from None
                self._tiny_root = None
            elif path.is_dir():
                self._tiny_root = path
            else:
                raise ModelNotAvailable("*", source, "models must be default, tiny, a folder or a manifest file")
        else:
            self._tiny_root = None

    @property
    def tiny(self) -> bool:
        """The test models (models/tiny.py, megabytes): the presets' memory estimates, made
        for the papers' networks, do not apply to them."""
        return self._tiny_root is not None and (self.source == "tiny" or (self._tiny_root / "tiny.json").is_file())

    def available(self, role: str) -> bool:
        """Whether a role's weights are on this machine (no download, nothing loaded)."""
        where = self.location(role)
        record = find(role)
        if record is not None and isinstance(record.files, URLFile):  # one file, in a folder of the Conjure cache
            return (cache_folder(where) / record.files.filename).exists()
        if Path(where).exists():
            return True
        if Path(where).is_absolute() or where.count("/") != 1:  # a folder that is not there, not a hub id
            return False
        from .cached import complete  # a hub copy: every file group its loader reads is cached

        return complete(role)

    def check_available(self, roles: set[str]) -> None:
        """Before any work: every role a job needs is on this machine, or one error names
        all that are missing (tiny models are built on demand; downloads fetch the rest)."""
        if self.source == "tiny" or self.allow_download:
            return
        if self.source == "default":
            from .roles import with_companions  # the tokenizers shipped apart from their models

            roles = set(with_companions(roles))
        missing = sorted(r for r in roles if not self.available(r))
        if missing:
            raise ModelNotAvailable(", ".join(missing), "; ".join(f"{r}: {self.location(r)}" for r in missing),
                                    "download them once: `python -m backend models download --for-job JOB.json` "
                                    "(or the roles by name), or the add-on's Models box (Download what this job "
                                    "needs); or allow downloads in the job / preferences, or point a models "
                                    "manifest at local folders")

    def location(self, role: str) -> str:
        """Local folder or hub id for a role."""
        if role in self._manifest:
            return self._manifest[role]
        if self._tiny_root is not None:
            folder = self._tiny_root / role
            if not folder.exists() and self.source == "tiny":
                from .tiny import build_tiny_role

                build_tiny_role(self._tiny_root, role)
            return str(folder)
        record = find(role)
        if record is None:
            raise ModelNotAvailable(role, "the store",
                                    f"unknown role; known roles: {', '.join(r.name for r in registered())}")
        if len(record.sources) == 1:
            return record.default
        from .cached import answering_source  # the first source whose copy is cached, else the first

        return answering_source(role)

    def get(self, role: str) -> Any:
        """A role's loaded object (its record's loader; role: a role or "<role>/<part>"),
        loaded on first use, on the device (moved back if park() had moved it off)."""
        if role not in self._loaded:
            net = network(role)
            if net is None:
                raise ModelNotAvailable(role, "the store", f"no loader; roles: {', '.join(k for k, _ in networks())}")
            self._loaded[role] = net.loader(self, role)
        return self._ready(role)

    def _kwargs(self, where: str, sub: str = "") -> dict:
        from .variants import weights_variant

        return {"local_files_only": not self.allow_download and not Path(where).exists(), "torch_dtype": self.dtype,
                "variant": weights_variant(where, sub, half=self.dtype == torch.float16)}

    def subfolder(self, role: str, where: str) -> str:
        """The role's subfolder in its repository, unless a local folder holds it at the root."""
        record = find(role)
        sub = record.subfolder if record else ""
        return "" if sub and Path(where).is_dir() and not (Path(where) / sub).is_dir() else sub

    def missing(self, role: str, where: str, exc: Exception) -> ModelNotAvailable:
        """The error for a role whose files could not be read at `where`."""
        if Path(where).exists():
            return ModelNotAvailable(role, where, f"the folder exists but could not be read ({exc})")
        base = role.split("/")[0]  # "zero123/image_encoder" -> zero123
        tried = _sources(base) if where in _sources(base) else (where,)
        return ModelNotAvailable(role, where, f"tried {', '.join(tried)}: not in this machine's cache; download it "
                                 f"once (`python -m backend models download {base}`) or allow downloads in the job/"
                                 f"preferences; {point_elsewhere(base)}")

    def read_parts(self, role: str, where: str, parts: dict[str, tuple[Any, str, bool]]) -> dict[str, Any]:
        """from_pretrained of each (class, subfolder, has_weights) part; weights in the store's
        dtype. Any unreadable part -> ModelNotAvailable naming the role."""
        local = {"local_files_only": not self.allow_download and not Path(where).exists()}
        try:
            return {name: cls.from_pretrained(where, subfolder=sub, **(self._kwargs(where, sub) if weights else local))
                    for name, (cls, sub, weights) in parts.items()}
        except (OSError, ValueError) as exc:
            raise self.missing(role, where, exc) from exc

    def read_model(self, role: str, cls: Any, where: str | None = None, sub: str | None = None, **kw: Any) -> Any:
        """One frozen transformers / diffusers model of a role on the device. `where`/`sub`
        default to the role's location and its subfolder."""
        if where is None:
            where = self.location(role)
            sub = self.subfolder(role, where)
        try:
            model = cls.from_pretrained(where, subfolder=sub or "", **self._kwargs(where, sub or ""), **kw)
        except (OSError, ValueError) as exc:
            raise self.missing(role, where, exc) from exc
        return model.requires_grad_(False).eval().to(self.device)

    def read_config(self, role: str, path: str) -> dict[str, Any]:
        """A JSON file of a role's repository (e.g. feature_extractor/preprocessor_config.json);
        a local folder holding the role at its root may hold it there by its name."""
        where = self.location(role)
        try:
            if Path(where).is_dir():
                found = next((f for f in (Path(where) / path, Path(where) / Path(path).name) if f.is_file()), None)
                if found is None:
                    raise FileNotFoundError(f"no {path} in {where}")
            else:
                from huggingface_hub import hf_hub_download

                found = Path(hf_hub_download(where, path, local_files_only=not self.allow_download))
            return json.loads(found.read_text())
        except (OSError, ValueError) as exc:
            raise self.missing(role, where, exc) from exc

    def image_processing(self, role: str) -> Any:
        """How the images of an image network are prepared (models/processing.ImageProcessing),
        from the image processor configuration its repository publishes (its record's
        Processor), read once."""
        key = f"{role}/processing"
        if key not in self._loaded:
            from .processing import ImageProcessing

            net = network(role)
            if net is None or net.processor is None:
                raise ModelNotAvailable(role, "the store", "not an image network: it has no image processor")
            path = net.processor.path
            if path is None:  # the processor's defaults at the tower's size
                side = int(self.get(role).config.image_size)
                config = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": side},
                          "crop_size": {"height": side, "width": side}}
            else:
                config = self.processor_config(role)
            try:
                self._loaded[key] = ImageProcessing(config)
            except (ValueError, TypeError) as exc:
                base = role.split("/")[0]
                raise ModelNotAvailable(role, f"{self.location(base)}: {path}", f"unusable image processor ({exc})") from exc
        return self._loaded[key]

    def processor_config(self, role: str) -> dict[str, Any]:
        """An image network's processor configuration as its role's repository publishes it
        (a network "<role>/<part>" reads it from its role's)."""
        return self.read_config(role.split("/")[0], network(role).processor.path)

    def read_tokenizer(self, role: str, fallback: str) -> Any:
        """The CLIP tokenizer in a role's folder (root or tokenizer/), else `fallback`; for
        the role's hub repository, `fallback` too: the catalog fetches a role's tokenizer
        from there (PickScore's ships apart from its weights, in LAION's CLIP-H repository)."""
        from transformers import CLIPTokenizer

        key = f"{role}/tokenizer"
        if key not in self._loaded:
            where = self.location(role)
            sub = "tokenizer" if (Path(where) / "tokenizer").is_dir() else ""
            folder = Path(where).is_dir()
            has_files = any((Path(where) / sub / f).is_file() for f in ("vocab.json", "tokenizer.json"))
            if folder and not has_files or not folder and where in _sources(role):
                where, sub = fallback, ""
            try:
                tok = CLIPTokenizer.from_pretrained(where, subfolder=sub, local_files_only=not self.allow_download
                                                    and not Path(where).exists())
            except OSError as exc:
                raise self.missing(key, where, exc) from exc
            if len(tok) < 100:  # transformers builds a near-empty vocabulary where files are missing
                raise ModelNotAvailable(key, where, f"tokenizer has only {len(tok)} tokens: missing or broken "
                                        "tokenizer files")
            self._loaded[key] = tok
        return self._loaded[key]

    def compile(self, modules: dict[str, torch.nn.Module]) -> None:
        """With compile_networks: the modules' gradient-free calls through torch.compile."""
        if self.compile_networks:
            from .compiled import compile_for_inference

            for name, module in modules.items():
                compile_for_inference(module, name)

    def graph(self, modules: dict[str, torch.nn.Module]) -> None:
        """With graph_networks: the modules' calls at the step's call sites replay CUDA graphs
        (named here for the estimator's accounting)."""
        if self.graph_networks:
            for name, module in modules.items():
                graphs.mark(module, name)

    def _ready(self, role: str) -> Any:
        """A loaded role, its modules moved back onto the device if they had been moved off."""
        for m in _modules(self._loaded[role]):
            if id(m) in self._away:
                self._place(m, True)
        return self._loaded[role]

    def _place(self, module: torch.nn.Module, on_device: bool) -> None:
        """Move a loaded module onto or off the device (the estimator only keeps the books)."""
        module.to(self.device if on_device else "cpu")
        graphs.forget(module)  # its graphs read the weights where they were
        (self._away.discard if on_device else self._away.add)(id(module))

    def park(self) -> None:
        """Between phases on CUDA: move every loaded model to the CPU and free the cache, so
        a phase holds only the models it uses (each returns to the GPU when next asked for)."""
        if not self.offload:
            return
        for obj in self._loaded.values():
            for m in _modules(obj):
                self._place(m, False)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def release_conditioning(self) -> None:
        """Once a phase's guidance is built: text / image encoders used only to condition it
        (run once when a phase's guidance is built, never per step: each record's
        `conditioning`) leave the GPU (they come back if asked for again, e.g. by the next
        phase)."""
        if not self.offload:
            return
        for key, net in networks():
            obj = self._loaded.get(key)
            if obj is None or not net.conditioning:
                continue
            for m in _modules(obj) if net.conditioning == "all" else [getattr(obj, a) for a in net.conditioning]:
                self._place(m, False)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def loaded_on_device(self) -> list[str]:
        return sorted(r for r, obj in self._loaded.items() if any(id(m) not in self._away for m in _modules(obj)))

    def resident_bytes(self) -> int:
        """Bytes of parameters and buffers of the loaded models now on the device."""
        seen: dict[int, torch.nn.Module] = {}
        for obj in self._loaded.values():
            for m in _modules(obj):
                if id(m) not in self._away:
                    seen[id(m)] = m
        return sum(t.nbytes for m in seen.values() for t in [*m.parameters(), *m.buffers()])


def _sources(role: str) -> tuple[str, ...]:
    """A role's hub sources; none for a name that is not a role."""
    record = find(role)
    return record.sources if record else ()


def _modules(obj: Any) -> list[torch.nn.Module]:
    """The torch modules inside a loaded role (a module, a tuple, or a components dataclass)."""
    if isinstance(obj, torch.nn.Module):
        return [obj]
    items = obj if isinstance(obj, tuple) else vars(obj).values() if hasattr(obj, "__dict__") else ()
    return [x for x in items if isinstance(x, torch.nn.Module)]
