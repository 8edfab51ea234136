"""`python -m backend bench`: seconds per iteration and peak memory of each phase of a
preset, with the paper's networks at their real sizes and random weights (SPEC Sec. 10).

The models come from RandomStore: the registry's own code paths (PaperGuidance, the
denoisers, the phases), with each part built from its published configuration instead of
read from disk. `--size tiny` uses the tiny models instead (a quick check of the bench).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .models.registry import ModelStore
from .models.tiny import build_tiny

# Published sizes (diffusers / transformers configs of the hub models).
_UNET = {
    "sd": dict(sample_size=64, cross_attention_dim=768),
    "zero123": dict(sample_size=32, cross_attention_dim=768, in_channels=8),
    "unclip": dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                   use_linear_projection=True, class_embed_type="projection",
                   projection_class_embeddings_input_dim=2048),
}
_TEXT = {"sd": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    projection_dim=768),
         "unclip": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                        projection_dim=1024, hidden_act="gelu")}
_VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
              patch_size=14, projection_dim=1024, hidden_act="gelu")
# Zero-1-to-3 conditions on OpenAI CLIP ViT-L/14 (768 + 4 pose values -> 772).
_VIT_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
              patch_size=14, projection_dim=768)


class RandomStore(ModelStore):
    """Full-size networks with random weights, built in memory (nothing is downloaded)."""

    def __init__(self, device: torch.device | str, scratch: Path) -> None:
        super().__init__(str(build_tiny(scratch, ["imagebind"])), device=device)
        from .models.tiny import tiny_imagebind

        tiny_imagebind(scratch / "imagebind", out_dim=1024)  # C_m in unCLIP's 1024-d embedding space

    def _build(self, role: str, name: str) -> Any:
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        from .models.zero123_parts import CCProjection

        key = "unclip" if role == "unclip" else "sd"
        if name == "tokenizer":
            return CLIPTokenizer.from_pretrained(Path(self.location("imagebind")) / "tokenizer")
        if name == "text_encoder":
            return CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **_TEXT[key]))
        if name == "unet":
            return UNet2DConditionModel(**_UNET[role])
        if name == "vae":
            return AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        if name == "scheduler":
            return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                 set_alpha_to_one=False,
                                 prediction_type="v_prediction" if role == "unclip" else "epsilon")
        if name == "normalizer":
            return StableUnCLIPImageNormalizer(embedding_dim=1024)
        if name == "noising":
            return DDPMScheduler(beta_schedule="squaredcos_cap_v2")
        if name == "proj":
            return CCProjection(772, 768)
        raise KeyError(f"{role}/{name}")

    def _load_parts(self, role: str, where: str, parts: dict) -> dict[str, Any]:
        out = {}
        for name in parts:
            obj = self._build(role, name)
            out[name] = obj.to(self.dtype) if isinstance(obj, torch.nn.Module) else obj
        return out

    def _pretrained(self, role: str, cls: Any, where: str | None = None, sub: str | None = None, **kw: Any) -> Any:
        if role in self._loaded:
            return self._ready(role)
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        if cls is not CLIPVisionModelWithProjection:
            raise NotImplementedError(f"bench builds no {cls.__name__}")
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**(_VIT_L if role.startswith("zero123") else _VIT_H)))
        self._loaded[role] = model.to(self.dtype).requires_grad_(False).eval().to(self.device)
        return self._loaded[role]


def _reference(path: Path) -> Path:
    img = np.zeros((256, 256, 4), np.uint8)  # alpha given: no segmenter needed
    img[64:192, 80:176] = [180, 60, 40, 255]
    Image.fromarray(img).save(path)
    return path


def bench(preset: str = "standard", device: str = "auto", size: str = "full", iterations: int = 5,
          overrides: dict | None = None) -> dict:
    """-> {phase: {s_per_it, peak_mem_gb, iterations}, estimate_s, device}."""
    from .geometry.dmtet import dmtet_from_density
    from .pipeline.config import resolve
    from .pipeline.guidance_terms import build_terms
    from .pipeline.paper import PaperGuidance
    from .pipeline.phases import GeometryPhase, NeRFPhase, PhaseContext, TexturePhase
    from .pipeline.runner import resolve_device
    from .render.raster import make_rasterizer

    dev = resolve_device(device)
    cfg = resolve(preset, overrides or {})
    scratch = Path(tempfile.mkdtemp(prefix="conjure-bench-"))
    store = RandomStore(dev, scratch) if size == "full" else ModelStore(str(build_tiny(scratch / "tiny")), device=dev)
    job = {"prompt": {"text": "a wooden chair", "images": [str(_reference(scratch / "ref.png"))], "weights": {}},
           "style_image": None}
    paper = PaperGuidance(job, store, lambda m: None)
    raster = make_rasterizer(cfg["render"]["rasterizer"], dev)
    ctx = PhaseContext(raster, dev, 0, cfg["render"]["bound"], paper.ref_view())
    report: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "preset": preset,
                    "size": size, "phases": {}}

    def run(key: str, phase) -> None:  # noqa: ANN001
        phase.step(0)  # warm-up: lazy loads, kernels, allocator
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(1, iterations + 1):
            phase.step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / iterations
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
        report["phases"][key] = {"s_per_it": round(dt, 4), "peak_mem_gb": None if peak is None else round(peak, 2),
                                 "iterations": int(cfg[key]["iterations"])}

    def terms(key: str):  # noqa: ANN202
        store.park()
        return build_terms(cfg[key], "paper", raster, 0, lambda m: None, paper=paper)

    p1 = NeRFPhase(cfg["phase1"], ctx, terms("phase1"))
    run("phase1", p1)
    sphere = lambda x: 20.0 * (x.norm(dim=-1) < 0.5).float()  # noqa: E731 (a known surface for phase II)
    p2 = GeometryPhase(cfg["phase2"], ctx, terms("phase2"),
                       dmtet_from_density(sphere, cfg["phase2"]["tet_res"], 10.0, cfg["render"]["bound"]))
    run("phase2", p2)
    verts, faces = p2.mesh()
    p3 = TexturePhase(cfg["phase3"], ctx, terms("phase3"), verts, faces, p1.field.texture_field())
    run("phase3", p3)
    report["estimate_s"] = round(sum(p["s_per_it"] * p["iterations"] for p in report["phases"].values()), 1)
    if dev.type == "cuda":
        report["peak_mem_gb"] = max(p["peak_mem_gb"] for p in report["phases"].values())
    return report


def main(args: Any) -> int:
    overrides = json.loads(args.overrides) if args.overrides else {}
    print(json.dumps(bench(args.preset, args.device, args.size, args.iterations, overrides), indent=2))
    return 0
