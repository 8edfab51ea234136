"""Rasterizer ops behind one small interface: rasterize / interpolate / texture / antialias.

Backends: "torch" (pure PyTorch, CPU and CUDA, the default) and "nvdiffrast" (optional,
CUDA only, used when importable and asked for; its licence is non-commercial). Both
produce images with row 0 at the top: for nvdiffrast, whose row 0 is NDC y = -1, clip y is
negated on the way in.
"""
from __future__ import annotations

import importlib.util
from typing import Protocol

import torch

from . import raster_torch


class Rasterizer(Protocol):
    name: str

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor: ...
    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor: ...
    def texture(self, tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor: ...
    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor: ...


def evaluates_densely(raster: Rasterizer, t: torch.Tensor) -> bool:
    """Whether per-pixel work after rasterizing (a material) runs on every pixel with masks,
    as on CUDA (and the estimator, which stands for CUDA), rather than on the covered pixels
    gathered, whose count the host would have to read."""
    return raster_torch._use_dense(t, getattr(raster, "dense", None))


class TorchRasterizer:
    """dense: the evaluation raster_torch uses (None: by device, dense on CUDA; the
    estimator, which stands for CUDA on the CPU, asks for dense)."""

    name = "torch"

    def __init__(self, dense: bool | None = None) -> None:
        self.dense = dense

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        return raster_torch.rasterize(pos, tri, resolution, self.dense)

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        return raster_torch.interpolate(attr, rast, tri, self.dense)

    texture = staticmethod(raster_torch.texture)

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        return raster_torch.antialias(color, rast, pos, tri, dense=self.dense)


class NvdiffrastRasterizer:
    name = "nvdiffrast"

    def __init__(self) -> None:
        import nvdiffrast.torch as dr  # optional dependency

        self._dr = dr
        self._ctx = dr.RasterizeCudaContext()

    @staticmethod
    def _flip(pos: torch.Tensor) -> torch.Tensor:
        pos = pos[None] if pos.dim() == 2 else pos
        return pos * pos.new_tensor([1.0, -1.0, 1.0, 1.0])

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        rast, _ = self._dr.rasterize(self._ctx, self._flip(pos).contiguous(), tri.int().contiguous(), resolution)
        return rast

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        return self._dr.interpolate(attr.contiguous(), rast, tri.int().contiguous())[0]

    def texture(self, tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        return self._dr.texture(tex.contiguous(), uv.contiguous(), filter_mode="linear", boundary_mode="clamp")

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        return self._dr.antialias(color.contiguous(), rast, self._flip(pos).contiguous(), tri.int().contiguous())


def nvdiffrast_available() -> bool:
    return importlib.util.find_spec("nvdiffrast") is not None and torch.cuda.is_available()


def make_rasterizer(backend: str = "auto", device: torch.device | str = "cpu") -> Rasterizer:
    """backend: "torch", "nvdiffrast" or "auto" (nvdiffrast on CUDA when installed)."""
    if backend == "nvdiffrast" or (backend == "auto" and torch.device(device).type == "cuda"
                                    and nvdiffrast_available()):
        return NvdiffrastRasterizer()
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown rasterizer backend {backend!r}: use auto, torch or nvdiffrast")
    return TorchRasterizer()
