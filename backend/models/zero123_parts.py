"""The one Zero-1-to-3 module diffusers has no class for: the 772 -> 768 camera projection,
stored like the public diffusers-format checkpoints (cc_projection/, key "projection.*")."""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class CCProjection(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channel: int = 772, out_channel: int = 768) -> None:
        super().__init__()
        self.projection = torch.nn.Linear(in_channel, out_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)
