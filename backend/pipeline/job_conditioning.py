"""What a job's guidance is conditioned on, computed once, lazily:

- C_m: ImageBind embedding of the job's text / images / audio (conditioning/embedding.py):
  unit length for the MS loss, at its trained scale for unCLIP.
- Reference view x_r (Zero-1-to-3, ref_view, SGC): the first reference image (else the
  style image), masked and recentred; without one, synthesised by Stable unCLIP from C_m.
- Visual prompt for VPCSM: the style image, or a self-guidance image synthesised by SD 1.5
  from the text, encoded by the IP-Adapter's image encoder.
Foreground masks of images without alpha come from the segmenter role when it is
available and plausible, else from the border flood fill.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..conditioning.embedding import ModalityEmbedding, modality_embedding
from ..conditioning.image import Segmenter, border_flood_mask, load_image, prepare_reference
from ..guidance.diffusion import SDDenoiser, sd_resolution
from ..guidance.ref_view import RefView
from ..guidance.multiview import MultiviewSettings, SGCTargets
from ..guidance.zero123 import Zero123Denoiser
from ..errors import ModelNotAvailable
from ..models.store import ModelStore
from ..render.camera import Cameras
from .guide_images import synthesise_reference, synthesise_self_guidance
from .seeds import stream
from .sgc_targets import sgc_cameras, synthesise_views
from ..models import encoders
from ..models.encoders import clip_image_encoder, ip_adapter, segmenter


class JobConditioning:
    def __init__(self, job: dict, store: ModelStore, log: Callable[[str], None], seed: int = 0) -> None:
        self.job, self.store, self.log, self.seed = job, store, log, seed
        self._cache: dict[str, object] = {}

    def once(self, key: str, make: Callable[[], object]) -> object:
        """make() once per job and key (conditioning, syntheses and targets are costly)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def text(self) -> str:
        return self.job["prompt"].get("text", "")

    @property
    def has_reference_image(self) -> bool:
        return bool(self.job["prompt"].get("images") or self.job.get("style_image"))

    def c_m(self) -> ModalityEmbedding:
        """The modality embedding ([D] unit length, and at unCLIP's scale)."""
        def make() -> ModalityEmbedding:
            model, tokenizer = self.store.get("imagebind")
            e = modality_embedding(model, tokenizer, self.job["prompt"])
            given = ", ".join(k for k in ("text", "images", "audio") if self.job["prompt"].get(k))
            self.log(f"modality embedding C_m from {given}")
            return e
        return self.once("c_m", make)

    def unclip(self, max_resolution: int | None = None) -> SDDenoiser:
        """Stable unCLIP conditioned on the text and C_m, at its training size or
        max_resolution if that is smaller (its users set their CFG scale: with_scale)."""
        sd = self.store.get("unclip")
        resolution = min(sd_resolution(sd), max_resolution or sd_resolution(sd))
        return self.once(f"unclip@{resolution}", lambda: SDDenoiser(
            sd, self.text, resolution=resolution, image_embeds=self.c_m().unclip[None].to(sd.unet.device)))

    def segmenter(self) -> Segmenter:
        """Foreground of an image without alpha: the segmenter role bound to the text (loaded
        on first use), guarded: a mask covering under 1% or over 95% of the image is not
        believed; without the model or a believable mask, the border flood fill decides."""
        def load() -> Segmenter | None:
            try:
                return segmenter(self.store, self.text)
            except ModelNotAvailable as exc:
                self.log(f"no segmenter model ({exc.where}): foreground masks by border flood fill")
                return None

        def segment(rgb: torch.Tensor) -> torch.Tensor:
            model = self.once("segmenter", load)
            if model is not None:
                prob = model(rgb)
                cover = float((prob > 0.5).float().mean())
                if 0.01 <= cover <= 0.95:
                    return prob
                self.log(f"segmenter mask covers {cover:.0%} of the image: border flood fill used instead")
            return border_flood_mask(rgb).float()

        return segment

    def reference(self) -> torch.Tensor:
        """[256,256,4] reference view x_r with its mask in alpha."""
        def make() -> torch.Tensor:
            images = self.job["prompt"].get("images") or ([self.job["style_image"]] if self.job.get("style_image")
                                                          else [])
            if images:  # the first reference image; in stylize the style image is the guidance image
                return prepare_reference(images[0], segmenter=self.segmenter())
            rgba = synthesise_reference(self.unclip(), self.segmenter(), self.seed)
            self.log("reference view generated by unCLIP from C_m")
            return rgba
        return self.once("reference", make)

    def reference_rgb(self) -> torch.Tensor:
        """[256,256,3] x_r composited on white."""
        ref = self.reference()
        return ref[..., :3] * ref[..., 3:] + (1 - ref[..., 3:])

    def ref_view(self) -> RefView:
        return RefView(self.reference())

    def visual_prompt(self, sd) -> torch.Tensor:  # noqa: ANN001
        """[1,D] IP-Adapter embedding of the style image or the self-guidance image."""
        def make() -> torch.Tensor:
            encoder = ip_adapter(self.store, sd)
            if self.job.get("style_image"):
                rgba = load_image(self.job["style_image"])
                image = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
            else:
                image = synthesise_self_guidance(sd, self.text, sd_resolution(sd), self.seed)
                self.log("self-guidance image generated by SD from the text")
            return encoder(image.permute(2, 0, 1)[None])
        return self.once("visual", make)

    def sgc_targets(self, cfg: MultiviewSettings) -> tuple[SGCTargets, Cameras]:
        """TV-3DG's multi-view targets of x_r at the config's size (made once per job and size;
        disparity and normals only when SGC has geometry parts) and their four cameras."""
        cams = sgc_cameras(self.ref_view().pose, cfg.resolution)

        def synthesise() -> tuple[torch.Tensor, torch.Tensor]:
            views = synthesise_views(self.zero123().with_scale(cfg.guidance_scale), self.reference(), self.segmenter(),
                                     cams, cfg, stream(self.seed, "sgc_targets"))
            self.log("SGC: multi-view images synthesised by Zero-1-to-3")
            return views

        images, masks = self.once(f"sgc_views{cfg.resolution}", synthesise)
        if cfg.depth > 0 or cfg.normal > 0:
            return self.once(f"sgc_targets{cfg.resolution}",
                             lambda: SGCTargets.estimate(images, masks, encoders.depth(self.store))), cams
        return SGCTargets(images, masks), cams

    def zero123(self) -> Zero123Denoiser:
        """Zero-1-to-3 conditioned on x_r at the reference pose's origin (its users set
        their CFG scale: with_scale); made once a job."""
        comps = self.store.get("zero123")  # back on the device if a phase change parked it

        def make() -> Zero123Denoiser:
            encoder = clip_image_encoder(self.store, "zero123/image_encoder", differentiable=False)
            return Zero123Denoiser(comps, encoder, self.reference_rgb().to(comps.device))
        return self.once("zero123", make)
