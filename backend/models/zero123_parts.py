"""The one Zero-1-to-3 module diffusers has no class for: the camera projection of the
diffusers-format checkpoints (ashawkey/zero123-xl-diffusers: `clip_camera_projection/`,
config {embedding_dim, additional_embeddings}, weights `proj.weight` / `proj.bias`, the
names of that repository's own zero123.py pipeline)."""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class CLIPCameraProjection(ModelMixin, ConfigMixin):
    """[B, embedding_dim + additional_embeddings] (CLIP image embedding ++ camera pose) ->
    [B, embedding_dim]: 772 -> 768 at full size."""

    @register_to_config
    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
