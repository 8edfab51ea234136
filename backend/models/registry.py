"""Model roles -> where their weights are -> loaded objects.

A job's `models` field picks the source: "default" (public hub ids, read from the local
Hugging Face cache; a download only when the job allows it), "tiny" (random miniature
models built on first use into a cache folder), a folder written by
`python -m backend models build-tiny`, or a JSON manifest mapping roles to folders or ids.
Models load lazily, once, in fp16 on CUDA (fp32 on CPU), from a repository's fp16 weight
variant where one is on disk (half the bytes; models/variants.py); park() moves them off
the GPU between phases.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ModelNotAvailable
from .roles import DEFAULT_IDS, DEFAULT_SUBFOLDERS, HUB_SOURCES, IP_ADAPTER_WEIGHTS, REWARD_TOKENIZER, \
    conjure_cache, imagebind_dir, point_elsewhere

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tiny_cache_dir() -> Path:
    from .tiny import TINY_VERSION

    return conjure_cache() / f"tiny-v{TINY_VERSION}"


@dataclass
class SDComponents:
    """A Stable Diffusion model split into what guidance needs."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    alphas_cumprod: torch.Tensor  # [T]
    prediction_type: str
    image_normalizer: Any = None  # Stable unCLIP only
    image_noising_scheduler: Any = None


@dataclass
class Zero123Components:
    unet: Any
    vae: Any
    image_encoder: Callable[[torch.Tensor], torch.Tensor]  # [B,3,S,S] in [0,1] -> [B,D]
    cc_projection: Any
    alphas_cumprod: torch.Tensor
    device: torch.device


class ModelStore:
    def __init__(self, source: str = "default", allow_download: bool = False,
                 device: torch.device | str = "cpu", compile_networks: bool = False) -> None:
        """compile_networks: the UNets and decoders run through torch.compile when called
        without gradient (models/compiled.py)."""
        self.source, self.allow_download, self.compile_networks = source, allow_download, compile_networks
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
                self._manifest = json.loads(path.read_text())
                self._tiny_root = None
            elif path.is_dir():
                self._tiny_root = path
            else:
                raise ModelNotAvailable("*", source, "models must be default, tiny, a folder or a manifest file")
        else:
            self._tiny_root = None

    def available(self, role: str) -> bool:
        """Whether a role's weights are on this machine (no download, nothing loaded)."""
        where = self.location(role)
        if role == "imagebind":
            from .imagebind import CHECKPOINT

            return (imagebind_dir(where) / CHECKPOINT).exists()
        if Path(where).exists():
            return True
        if Path(where).is_absolute() or where.count("/") != 1:  # a folder that is not there, not a hub id
            return False
        from .download import complete  # a hub copy: every file group its loader reads is cached

        return complete(role)

    def check_available(self, roles: set[str]) -> None:
        """Before any work: every role a job needs is on this machine, or one error names
        all that are missing (tiny models are built on demand; downloads fetch the rest)."""
        if self.source == "tiny" or self.allow_download:
            return
        if self.source == "default":
            from .catalog import with_companions  # the tokenizers shipped apart from their models

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
                from .tiny import build_tiny

                build_tiny(self._tiny_root, [role])
            return str(folder)
        if role not in DEFAULT_IDS:
            raise ModelNotAvailable(role, "the registry", f"unknown role; known roles: {', '.join(DEFAULT_IDS)}")
        if len(HUB_SOURCES[role]) == 1:
            return DEFAULT_IDS[role]
        from .download import answering_source  # the first source whose copy is cached, else the first

        return answering_source(role)

    def _kwargs(self, where: str, sub: str = "") -> dict:
        from .variants import weights_variant

        return {"local_files_only": not self.allow_download and not Path(where).exists(), "torch_dtype": self.dtype,
                "variant": weights_variant(where, sub, half=self.dtype == torch.float16)}

    def _subfolder(self, role: str, where: str) -> str:
        """The role's subfolder in its repository, unless a local folder holds it at the root."""
        sub = DEFAULT_SUBFOLDERS.get(role, "")
        return "" if sub and Path(where).is_dir() and not (Path(where) / sub).is_dir() else sub

    def _missing(self, role: str, where: str, exc: Exception) -> ModelNotAvailable:
        if Path(where).exists():
            return ModelNotAvailable(role, where, f"the folder exists but could not be read ({exc})")
        base = role.split("/")[0]  # "zero123/image_encoder" -> zero123
        tried = HUB_SOURCES[base] if where in HUB_SOURCES.get(base, ()) else (where,)
        return ModelNotAvailable(role, where, f"tried {', '.join(tried)}: not in this machine's cache; download it "
                                 f"once (`python -m backend models download {base}`) or allow downloads in the job/"
                                 f"preferences; {point_elsewhere(base)}")

    def _load_parts(self, role: str, where: str, parts: dict[str, tuple[Any, str, bool]]) -> dict[str, Any]:
        """from_pretrained of each (class, subfolder, has_weights) part; weights in the store's
        dtype. Any unreadable part -> ModelNotAvailable naming the role."""
        local = {"local_files_only": not self.allow_download and not Path(where).exists()}
        try:
            return {name: cls.from_pretrained(where, subfolder=sub, **(self._kwargs(where, sub) if weights else local))
                    for name, (cls, sub, weights) in parts.items()}
        except (OSError, ValueError) as exc:
            raise self._missing(role, where, exc) from exc

    def sd(self, role: str = "sd") -> SDComponents:
        """Stable Diffusion (role "sd", or "unclip" for Stable unCLIP), frozen, in eval mode on
        the store's device."""
        if role in self._loaded:
            return self._ready(role)
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        where = self.location(role)
        p = self._load_parts(role, where, {
            "tokenizer": (CLIPTokenizer, "tokenizer", False), "text_encoder": (CLIPTextModel, "text_encoder", True),
            "unet": (UNet2DConditionModel, "unet", True), "vae": (AutoencoderKL, "vae", True),
            "scheduler": (DDIMScheduler, "scheduler", False)})
        tokenizer, text_encoder, unet, vae, scheduler = (p[k] for k in ("tokenizer", "text_encoder", "unet", "vae",
                                                                        "scheduler"))
        if len(tokenizer) < 100:  # transformers can silently build an empty vocabulary
            raise ModelNotAvailable(role, where, f"tokenizer has only {len(tokenizer)} tokens: broken tokenizer files")
        normalizer = noising = None
        if unet.config.class_embed_type == "projection":  # Stable unCLIP
            from diffusers import DDPMScheduler
            from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
                StableUnCLIPImageNormalizer)

            extra = self._load_parts(role, where, {
                "normalizer": (StableUnCLIPImageNormalizer, "image_normalizer", True),
                "noising": (DDPMScheduler, "image_noising_scheduler", False)})
            normalizer, noising = extra["normalizer"].to(self.device), extra["noising"]
        for m in (text_encoder, unet, vae):
            m.requires_grad_(False).eval().to(self.device)
        _checkpoint_blocks(vae)
        self._compile({f"{role}.unet": unet, f"{role}.vae.decoder": vae.decoder})
        comps = SDComponents(tokenizer, text_encoder, unet, vae, scheduler.alphas_cumprod.float().clone(),
                             scheduler.config.prediction_type, normalizer, noising)
        self._loaded[role] = comps
        return comps

    def zero123(self, role: str = "zero123") -> Zero123Components:
        if role in self._loaded:
            return self._ready(role)
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

        from .zero123_parts import CLIPCameraProjection

        where = self.location(role)
        p = self._load_parts(role, where, {
            "unet": (UNet2DConditionModel, "unet", True), "vae": (AutoencoderKL, "vae", True),
            "proj": (CLIPCameraProjection, "clip_camera_projection", True),
            "scheduler": (DDIMScheduler, "scheduler", False)})
        unet, vae, proj, scheduler = p["unet"], p["vae"], p["proj"], p["scheduler"]
        if unet.config.in_channels != 8:
            raise ModelNotAvailable(role, where, f"expected an 8-channel Zero-1-to-3 UNet, got {unet.config.in_channels}")
        for m in (unet, vae, proj):
            m.requires_grad_(False).eval().to(self.device)
        _checkpoint_blocks(vae)
        self._compile({f"{role}.unet": unet})
        encoder, _ = self.clip_image_encoder(f"{role}/image_encoder", where, "image_encoder")
        comps = Zero123Components(unet, vae, encoder, proj, scheduler.alphas_cumprod.float().clone(), self.device)
        self._loaded[role] = comps
        return comps

    def ip_adapter(self, sd: SDComponents, role: str = "ip_adapter") -> Callable[[torch.Tensor], torch.Tensor]:
        """Load IP-Adapter attention layers into sd.unet (once) and return its image encoder
        (images [B,3,H,W] in [0,1] -> [B,D] image embeddings)."""
        where = self.location(role)
        sub = self._subfolder(role, where)
        if getattr(sd.unet, "encoder_hid_proj", None) is None:
            from safetensors.torch import load_file

            try:
                if Path(where).exists():
                    path = str(Path(where) / sub / IP_ADAPTER_WEIGHTS)
                else:
                    from huggingface_hub import hf_hub_download

                    path = hf_hub_download(where, IP_ADAPTER_WEIGHTS, subfolder=sub,
                                           local_files_only=not self.allow_download)
                flat = load_file(path)
            except Exception as exc:  # noqa: BLE001 (hub and file errors come in many types)
                raise self._missing(role, where, exc) from exc
            nested: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
            for k, v in flat.items():
                group, rest = k.split(".", 1)
                nested[group][rest] = v
            sd.unet._load_ip_adapter_weights([nested])  # diffusers' own converter
            if self.device.type != "cpu":  # new layers are created in fp32 on the CPU
                sd.unet.to(device=self.device, dtype=self.dtype)
        encoder, _ = self.clip_image_encoder(f"{role}/image_encoder", where, f"{sub}/image_encoder".strip("/"))
        return encoder

    def imagebind(self, role: str = "imagebind"):  # noqa: ANN201 (-> (ImageBind, tokenizer))
        """ImageBind and its CLIP BPE tokenizer. The default folder is
        $CONJURE_CACHE/imagebind (~/.cache/conjure/imagebind)."""
        if role in self._loaded:
            return self._ready(role)
        from transformers import CLIPTokenizer

        from .imagebind import CHECKPOINT, load_imagebind

        folder = imagebind_dir(self.location(role))
        try:
            model = load_imagebind(folder, self.device)
        except FileNotFoundError as exc:
            raise ModelNotAvailable(role, str(folder / CHECKPOINT),
                                    "download the official imagebind_huge.pth (ImageBind repository README) into "
                                    "that folder, or point a models manifest's \"imagebind\" at its folder") from exc
        tok_where = str(folder / "tokenizer") if (folder / "tokenizer").exists() else DEFAULT_IDS["imagebind_tokenizer"]
        try:
            tokenizer = CLIPTokenizer.from_pretrained(tok_where, local_files_only=not self.allow_download
                                                      and not Path(tok_where).exists())
        except OSError as exc:
            raise self._missing("imagebind_tokenizer", tok_where, exc) from exc
        if len(tokenizer) != model.cfg.vocab_size:
            raise ModelNotAvailable(role, tok_where, f"tokenizer has {len(tokenizer)} tokens, the model "
                                    f"{model.cfg.vocab_size}: wrong or broken tokenizer files")
        self._loaded[role] = (model.to(self.dtype), tokenizer)
        return self._loaded[role]

    def _pretrained(self, role: str, cls: Any, where: str | None = None, sub: str | None = None, **kw: Any) -> Any:
        """One frozen transformers/diffusers model of a role, loaded once (by role) onto the
        device. `where`/`sub` default to the role's location and its default subfolder."""
        if role in self._loaded:
            return self._ready(role)
        if where is None:
            where = self.location(role)
            sub = self._subfolder(role, where)
        try:
            model = cls.from_pretrained(where, subfolder=sub or "", **self._kwargs(where, sub or ""), **kw)
        except (OSError, ValueError) as exc:
            raise self._missing(role, where, exc) from exc
        self._loaded[role] = model.requires_grad_(False).eval().to(self.device)
        return self._loaded[role]

    def _tokenizer(self, role: str, fallback: str) -> Any:
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
            if folder and not has_files or not folder and where in HUB_SOURCES.get(role, ()):
                where, sub = fallback, ""
            try:
                tok = CLIPTokenizer.from_pretrained(where, subfolder=sub, local_files_only=not self.allow_download
                                                    and not Path(where).exists())
            except OSError as exc:
                raise self._missing(key, where, exc) from exc
            if len(tok) < 100:  # transformers builds a near-empty vocabulary where files are missing
                raise ModelNotAvailable(key, where, f"tokenizer has only {len(tok)} tokens: missing or broken "
                                        "tokenizer files")
            self._loaded[key] = tok
        return self._loaded[key]

    def _pixels(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]
                ) -> Callable[[torch.Tensor], torch.Tensor]:
        """[B,3,H,W] in [0,1] -> resized to size x size, normalised, in the store's dtype."""
        m = torch.tensor(mean, device=self.device).reshape(1, 3, 1, 1)
        s = torch.tensor(std, device=self.device).reshape(1, 3, 1, 1)

        def prep(images: torch.Tensor) -> torch.Tensor:
            x = images.to(self.device)
            if x.shape[-2:] != (size, size):
                x = torch.nn.functional.interpolate(x, (size, size), mode="bilinear", align_corners=False)
            return ((x - m.to(x.device)) / s.to(x.device)).to(self.dtype)

        return prep

    def clip_image_encoder(self, role: str = "clip", where: str | None = None, sub: str = ""
                           ) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
        """-> (images [B,3,H,W] in [0,1] -> image embeddings [B,D], input size S); images are
        resized to S and CLIP-normalised here. `where`/`sub` load a tower inside another
        role's folder (Zero-1-to-3's image_encoder)."""
        from transformers import CLIPVisionModelWithProjection

        model = self._pretrained(role, CLIPVisionModelWithProjection, where, sub if where else None)
        size = int(model.config.image_size)
        prep = self._pixels(size, CLIP_MEAN, CLIP_STD)
        # Each call asks for the model again: park() may have moved it off the GPU since.
        return (lambda images: self._ready(role)(pixel_values=prep(images)).image_embeds.float()), size

    def tiny_decoder(self, role: str = "taesd") -> Callable[[torch.Tensor], torch.Tensor]:
        """TAESD's decoder: latents [B,4,h,w] as the UNet sees them (VAE latents times its
        scaling factor) -> images [B,3,8h,8w] in [0,1], at about 1/17 of the SD VAE
        decoder's work (diffusers' AutoencoderTiny; scaling factor 1)."""
        from diffusers import AutoencoderTiny

        fresh = role not in self._loaded
        model = self._pretrained(role, AutoencoderTiny)
        if fresh:
            self._compile({f"{role}.decoder": model.decoder})
        dtype = next(model.parameters()).dtype

        def decode(z: torch.Tensor) -> torch.Tensor:
            x = model.decode(z.to(dtype) / model.config.scaling_factor).sample.float()
            return ((x + 1) / 2).clamp(0, 1)

        return decode

    def dino(self, role: str = "dino") -> Callable[[torch.Tensor], torch.Tensor]:
        """DINO ViT: images [B,3,H,W] in [0,1] -> global (CLS) features [B,D]."""
        from transformers import ViTModel

        model = self._pretrained(role, ViTModel, add_pooling_layer=False)
        prep = self._pixels(int(model.config.image_size), IMAGENET_MEAN, IMAGENET_STD)
        return lambda images: self._ready(role)(pixel_values=prep(images)).last_hidden_state[:, 0].float()

    def depth(self, role: str = "depth") -> Callable[[torch.Tensor], torch.Tensor]:
        """Monocular depth: images [B,3,H,W] in [0,1] -> relative inverse depth [B,h,w]
        (MiDaS/DPT convention: larger is nearer; unknown scale and shift)."""
        from transformers import AutoModelForDepthEstimation

        model = self._pretrained(role, AutoModelForDepthEstimation)
        prep = self._pixels(int(model.config.image_size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        return lambda images: self._ready(role)(pixel_values=prep(images)).predicted_depth.float()

    def reward(self, text: str, role: str = "reward") -> Callable[[torch.Tensor], torch.Tensor]:
        """CLIP-based human-preference reward (PickScore): images [B,3,H,W] in [0,1] ->
        [B] = logit_scale · cos(text, image), the text bound here."""
        from transformers import CLIPModel

        model = self._pretrained(role, CLIPModel)
        tok = self._tokenizer(role, REWARD_TOKENIZER)
        ids = tok([text or ""], padding="max_length", truncation=True, max_length=77,
                  return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            text_emb = torch.nn.functional.normalize(model.get_text_features(input_ids=ids).pooler_output.float(), dim=-1)
        prep = self._pixels(int(model.config.vision_config.image_size), CLIP_MEAN, CLIP_STD)
        scale = model.logit_scale.exp().float()

        def score(images: torch.Tensor) -> torch.Tensor:
            feats = self._ready(role).get_image_features(pixel_values=prep(images)).pooler_output
            emb = torch.nn.functional.normalize(feats.float(), dim=-1)
            return scale * (emb @ text_emb.T)[:, 0]

        return score

    def segmenter(self, text: str, role: str = "segmenter") -> Callable[[torch.Tensor], torch.Tensor]:
        """Text-prompted foreground (CLIPSeg): image [H,W,3] in [0,1] -> [H,W] probability
        of the object the text names ("the main object" without text)."""
        from transformers import CLIPSegForImageSegmentation

        model = self._pretrained(role, CLIPSegForImageSegmentation)
        tok = self._tokenizer(role, DEFAULT_IDS[role])
        ids = tok([text or "the main object"], padding=True, truncation=True, return_tensors="pt").input_ids
        prep = self._pixels(int(model.config.vision_config.image_size), IMAGENET_MEAN, IMAGENET_STD)

        @torch.no_grad()
        def segment(image: torch.Tensor) -> torch.Tensor:
            logits = self._ready(role)(input_ids=ids.to(self.device),
                                       pixel_values=prep(image.permute(2, 0, 1)[None])).logits
            logits = logits.reshape(1, 1, *logits.shape[-2:]).float()
            up = torch.nn.functional.interpolate(logits, image.shape[:2], mode="bilinear", align_corners=False)
            return torch.sigmoid(up[0, 0]).cpu()

        return segment

    def _compile(self, modules: dict[str, torch.nn.Module]) -> None:
        if self.compile_networks:
            from .compiled import compile_for_inference

            for name, module in modules.items():
                compile_for_inference(module, name)

    def _ready(self, role: str) -> Any:
        """A loaded role, its modules moved back onto the device if they had been moved off."""
        for m in _modules(self._loaded[role]):
            if id(m) in self._away:
                self._place(m, True)
        return self._loaded[role]

    def _place(self, module: torch.nn.Module, on_device: bool) -> None:
        """Move a loaded module onto or off the device (the estimator only keeps the books)."""
        module.to(self.device if on_device else "cpu")
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

    # Parts that only condition (run once when a phase's guidance is built), never per step.
    CONDITIONING = (("sd", "text_encoder"), ("unclip", "text_encoder"), ("imagebind", None),
                    ("zero123/image_encoder", None), ("ip_adapter/image_encoder", None), ("depth", None),
                    ("segmenter", None))

    def release_conditioning(self) -> None:
        """Once a phase's guidance is built: text / image encoders used only to condition it
        leave the GPU (they come back if asked for again, e.g. by the next phase)."""
        if not self.offload:
            return
        for role, part in self.CONDITIONING:
            obj = self._loaded.get(role)
            if obj is None:
                continue
            for m in _modules(obj) if part is None else [getattr(obj, part)]:
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


def _checkpoint_blocks(vae: Any) -> None:
    """Encoding renders with gradient keeps only each block's input; backward recomputes the
    block (diffusers' checkpointing, active whenever grad is on, in eval mode too)."""
    from functools import partial

    from torch.utils.checkpoint import checkpoint

    vae.enable_gradient_checkpointing(partial(checkpoint, use_reentrant=False))


def _modules(obj: Any) -> list[torch.nn.Module]:
    """The torch modules inside a loaded role (a module, a tuple, or a components dataclass)."""
    if isinstance(obj, torch.nn.Module):
        return [obj]
    items = obj if isinstance(obj, tuple) else vars(obj).values() if hasattr(obj, "__dict__") else ()
    return [x for x in items if isinstance(x, torch.nn.Module)]
