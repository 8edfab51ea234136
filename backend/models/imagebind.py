"""ImageBind (Girdhar et al. 2023) written here in plain torch, so the official
`imagebind_huge.pth` state dict loads with strict key matching (no timm, torchvision or
torchaudio). All six modality branches exist because the checkpoint holds them all;
Conjure feeds vision, text and audio.

Inputs: vision [B,3,224,224] CLIP-normalised; text [B,77] token ids (CLIP BPE, EOT the
largest id); audio [B,S,1,128,204] normalised fbank clips (conditioning/audio.py; the S
clips are averaged after the head). Outputs: [B,D] embeddings, unit length times the
modality's logit scale (text: learnt, audio: 20, vision: 1), as the upstream model
returns them; normalise before mixing modalities.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

CHECKPOINT = "imagebind_huge.pth"


@dataclass
class ImageBindConfig:
    out_dim: int = 1024
    vision: tuple[int, int, int] = (1280, 32, 16)  # width, blocks, heads
    text: tuple[int, int, int] = (1024, 24, 16)
    audio: tuple[int, int, int] = (768, 12, 12)
    depth: tuple[int, int, int] = (384, 12, 8)
    thermal: tuple[int, int, int] = (768, 12, 12)
    imu: tuple[int, int, int] = (512, 6, 8)
    vocab_size: int = 49408
    context_length: int = 77
    image_size: int = 224
    patch: int = 14
    audio_bins: int = 128
    audio_frames: int = 204

    @staticmethod
    def load(folder: Path) -> "ImageBindConfig":
        path = folder / "config.json"
        if not path.exists():
            return ImageBindConfig()  # the official checkpoint ships without one: huge
        raw = json.loads(path.read_text())
        return ImageBindConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    def save(self, folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(asdict(self), indent=2))


class Block(nn.Module):
    """Pre-norm transformer block; attribute names match the upstream BlockWithMasking."""

    def __init__(self, dim: int, heads: int, bias_kv: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv, batch_first=True)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    def __init__(self, dim: int, blocks: int, heads: int, pre_norm: bool, bias_kv: bool) -> None:
        super().__init__()
        # index 0 keeps the upstream key "pre_transformer_layer.0.*" (LayerNorm or nothing)
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_norm else nn.Identity())
        self.blocks = nn.Sequential(*[Block(dim, heads, bias_kv) for _ in range(blocks)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(x)
        for blk in self.blocks:
            x = blk(x, mask)
        return x


class Stem(nn.Module):
    """Patch projection (+ optional LayerNorm) -> tokens [B,L,D]."""

    def __init__(self, proj: nn.Module, dim: int | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = nn.LayerNorm(dim) if dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class PosEmbed(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * dim ** -0.5)


class PatchPreprocessor(nn.Module):
    """CLS token + patches + learnt positions (vision, audio, depth, thermal)."""

    def __init__(self, stem: Stem, stem_name: str, tokens: int, dim: int) -> None:
        super().__init__()
        self.stem_name = stem_name
        setattr(self, stem_name, stem)
        self.pos_embedding_helper = PosEmbed(tokens, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


class VisionConv(nn.Sequential):
    """Image -> 2-frame video (repeat) -> Conv3d; index 1 keeps the key "proj.1.weight"."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__(nn.Identity(), nn.Conv3d(3, dim, (2, patch, patch), stride=(2, patch, patch), bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](x[:, :, None].repeat(1, 1, 2, 1, 1))


class TextPreprocessor(nn.Module):
    def __init__(self, vocab: int, context: int, dim: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, context, dim) * 0.01)
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu_(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed


class IMUPreprocessor(nn.Module):
    def __init__(self, dim: int, kernel: int = 8, length: int = 2000) -> None:
        super().__init__()
        self.kernel = kernel
        self.imu_stem = Stem(nn.Linear(6 * kernel, dim, bias=False), dim)
        self.pos_embed = nn.Parameter(torch.randn(1, length // kernel + 1, dim) * 0.01)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)

    def forward(self, imu: torch.Tensor) -> torch.Tensor:
        patches = imu.unfold(-1, self.kernel, self.kernel).permute(0, 2, 1, 3).flatten(2)
        tokens = self.imu_stem.norm_layer(self.imu_stem.proj(patches))
        return torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1) + self.pos_embed


class LogitScale(nn.Module):
    def __init__(self, init: float, learnable: bool) -> None:
        super().__init__()
        value = torch.tensor(math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_logit_scale.exp().clamp(max=100)


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)


def _postprocessor(scale: LogitScale) -> nn.Sequential:
    return nn.Sequential(Normalize(), scale)  # index 1 keeps "1.log_logit_scale"


def _head(width: int, out: int, dropout: bool = False) -> nn.Sequential:
    """LayerNorm, select CLS (index 1, no params), [dropout], projection: upstream indices."""
    mods = [nn.LayerNorm(width, eps=1e-6), nn.Identity()] + ([nn.Dropout(0.5)] if dropout else [])
    return nn.Sequential(*mods, nn.Linear(width, out, bias=False))


class ImageBind(nn.Module):
    def __init__(self, cfg: ImageBindConfig) -> None:
        super().__init__()
        self.cfg = cfg
        v, t, a, d, th, imu = cfg.vision, cfg.text, cfg.audio, cfg.depth, cfg.thermal, cfg.imu
        grid = cfg.image_size // cfg.patch
        audio_tokens = ((cfg.audio_bins - 16) // 10 + 1) * ((cfg.audio_frames - 16) // 10 + 1)
        depth_tokens = (cfg.image_size // 16) ** 2
        self.modality_preprocessors = nn.ModuleDict({
            "vision": PatchPreprocessor(Stem(VisionConv(v[0], cfg.patch)), "rgbt_stem", grid * grid + 1, v[0]),
            "text": TextPreprocessor(cfg.vocab_size, cfg.context_length, t[0]),
            "audio": PatchPreprocessor(Stem(nn.Conv2d(1, a[0], 16, stride=10, bias=False), a[0]), "rgbt_stem",
                                       audio_tokens + 1, a[0]),
            "depth": PatchPreprocessor(Stem(nn.Conv2d(1, d[0], 16, stride=16, bias=False), d[0]), "depth_stem",
                                       depth_tokens + 1, d[0]),
            "thermal": PatchPreprocessor(Stem(nn.Conv2d(1, th[0], 16, stride=16, bias=False), th[0]), "rgbt_stem",
                                         depth_tokens + 1, th[0]),
            "imu": IMUPreprocessor(imu[0]),
        })
        self.modality_trunks = nn.ModuleDict({
            "vision": Trunk(*v, pre_norm=True, bias_kv=False),
            "text": Trunk(*t, pre_norm=False, bias_kv=False),
            "audio": Trunk(*a, pre_norm=False, bias_kv=True),
            "depth": Trunk(*d, pre_norm=False, bias_kv=True),
            "thermal": Trunk(*th, pre_norm=False, bias_kv=True),
            "imu": Trunk(*imu, pre_norm=False, bias_kv=True),
        })
        text_head = nn.Module()
        text_head.proj = nn.Sequential(nn.LayerNorm(t[0], eps=1e-6), nn.Linear(t[0], cfg.out_dim, bias=False))
        self.modality_heads = nn.ModuleDict({
            "vision": _head(v[0], cfg.out_dim), "text": text_head, "audio": _head(a[0], cfg.out_dim),
            "depth": _head(d[0], cfg.out_dim), "thermal": _head(th[0], cfg.out_dim),
            "imu": _head(imu[0], cfg.out_dim, dropout=True),
        })
        self.modality_postprocessors = nn.ModuleDict({
            "vision": Normalize(),
            "text": _postprocessor(LogitScale(1 / 0.07, learnable=True)),
            "audio": _postprocessor(LogitScale(20.0, learnable=False)),
            "depth": _postprocessor(LogitScale(5.0, learnable=False)),
            "thermal": _postprocessor(LogitScale(10.0, learnable=False)),
            "imu": _postprocessor(LogitScale(5.0, learnable=False)),
        })

    def embed(self, modality: str, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """-> [B,D]: the postprocessed embedding (unit length times the modality's logit
        scale), or with normalize=False the head's raw output (for vision, OpenCLIP ViT-H's
        image embedding: ImageBind's vision trunk and head are OpenCLIP's, frozen), as the
        public ImageBind -> unCLIP bridges' forward(inputs, normalize=False) gives it.
        Several clips per item (x [B,S,...]) are averaged at the end either way."""
        clips = None
        if x.dim() >= 5 and modality != "vision":  # several clips per item: average at the end
            clips = x.shape[1]
            x = x.flatten(0, 1)
        tokens = self.modality_preprocessors[modality](x)
        mask = self.modality_preprocessors["text"].mask if modality == "text" else None
        h = self.modality_trunks[modality](tokens, mask)
        if modality == "text":
            eot = x.argmax(dim=-1)
            out = self.modality_heads["text"].proj(h[torch.arange(h.shape[0]), eot])
        else:  # LayerNorm is per token, so taking the CLS token first is the same
            head = self.modality_heads[modality]
            out = head[-1](head[0](h[:, 0]))
        if normalize:
            out = self.modality_postprocessors[modality](out)
        if clips is not None:
            out = out.reshape(-1, clips, out.shape[-1]).mean(1)
        return out


def load_imagebind(folder: str | Path, device: torch.device | str = "cpu") -> ImageBind:
    """Build from folder/config.json (absent: the huge model) and load folder/imagebind_huge.pth
    strictly."""
    folder = Path(folder)
    path = folder / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(str(path))
    cfg = ImageBindConfig.load(folder)
    with torch.device("meta"):
        model = ImageBind(cfg)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False).to(device)
