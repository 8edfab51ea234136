"""The papers' networks at their published sizes with random weights (nothing is
downloaded), behind the ModelStore's readers so every code path is the store's and the
loaders' own.

With a FakeTensorMode the networks are built as fake tensors (shapes, no memory): the
estimator runs them on any machine. Parking then only keeps the books of what would be on
the GPU (ModelStore.resident_bytes), as it would on CUDA.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..models.layouts import processor_config
from ..models.store import ModelStore
from ..models.tiny import build_tiny

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
    """Full-size networks with random weights, built in memory (nothing is downloaded).
    fake: build them as fake tensors in fp16 (as on CUDA) and only book-keep parking."""

    def __init__(self, device: torch.device | str, scratch: Path, fake: FakeTensorMode | None = None,
                 compile_networks: bool = False, graph_networks: bool = False) -> None:
        # A tiny ImageBind: its embedding is the huge model's 1024-d, unCLIP's image_embeds.
        super().__init__(str(build_tiny(scratch, ["imagebind"])), device=device, compile_networks=compile_networks,
                         graph_networks=graph_networks)
        self.fake = fake
        if fake is not None:
            self.dtype, self.offload = torch.float16, True

    def _place(self, module: torch.nn.Module, on_device: bool) -> None:
        if self.fake is None:
            super()._place(module, on_device)
        else:
            (self._away.discard if on_device else self._away.add)(id(module))

    def _make(self, build: Any) -> Any:
        if self.fake is None:
            return build()
        from transformers.initialization import no_init_weights

        default = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)  # built in fp16: fake parameters cannot be converted
        try:
            # Fake weights have no values to initialise, and an initialiser that samples until
            # a test on the values passes (torch's trunc_normal_, in DINO's and DPT's ViTs)
            # would never stop on a fake tensor, whose every test reads as the worst case.
            with self.fake, no_init_weights():
                obj = build()
        finally:
            torch.set_default_dtype(default)
        if isinstance(obj, torch.nn.Module):  # already where it would be: .to() is a no-op
            object.__setattr__(obj, "to", lambda *args, **kwargs: obj)
        return obj

    def _build(self, role: str, name: str) -> Any:
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        from ..models.zero123_parts import CLIPCameraProjection

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
            return CLIPCameraProjection(768, 4)
        raise KeyError(f"{role}/{name}")

    def read_parts(self, role: str, where: str, parts: dict) -> dict[str, Any]:
        out = {}
        for name in parts:
            obj = self._make(lambda: self._build(role, name))
            out[name] = obj.to(self.dtype) if isinstance(obj, torch.nn.Module) else obj
        return out

    def read_tokenizer(self, role: str, fallback: str) -> Any:
        return self._build(role, "tokenizer")  # CLIP's BPE, shipped with the tiny ImageBind

    def read_config(self, role: str, path: str) -> dict[str, Any]:
        return processor_config(role)  # the only configs read beside the networks: processors

    def read_model(self, role: str, cls: Any, where: str | None = None, sub: str | None = None, **kw: Any) -> Any:
        from transformers import (AutoModelForDepthEstimation, CLIPConfig, CLIPModel, CLIPVisionConfig,
                                  CLIPVisionModelWithProjection, DPTConfig, DPTForDepthEstimation, ViTConfig, ViTModel)

        from diffusers import AutoencoderTiny

        if cls is AutoencoderTiny:  # its defaults are madebyollin/taesd's configuration
            build = AutoencoderTiny
        elif cls is CLIPVisionModelWithProjection:
            config = CLIPVisionConfig(**(_VIT_L if role.startswith("zero123") else _VIT_H))
            build = lambda: CLIPVisionModelWithProjection(config)  # noqa: E731
        elif cls is ViTModel:  # DINO ViT-B/16
            build = lambda: ViTModel(ViTConfig(image_size=224, patch_size=16), add_pooling_layer=False)  # noqa: E731
        elif cls is AutoModelForDepthEstimation:  # DPT at ViT-B size (dpt-hybrid-midas is ViT-B hybrid)
            build = lambda: DPTForDepthEstimation(DPTConfig(  # noqa: E731
                hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                neck_hidden_sizes=[96, 192, 384, 768]))
        elif cls is CLIPModel:  # PickScore: OpenCLIP ViT-H/14
            build = lambda: CLIPModel(CLIPConfig(text_config={**_TEXT["unclip"], "num_hidden_layers": 24},  # noqa: E731
                                                 vision_config=_VIT_H, projection_dim=1024))
        else:
            raise NotImplementedError(f"bench builds no {cls.__name__}")
        return self._make(build).to(self.dtype).requires_grad_(False).eval().to(self.device)
