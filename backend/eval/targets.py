"""Procedural target meshes for oracle runs (tests and the demo): strong colours, holes,
concavities and thin parts. `python -m backend.eval.targets --out DIR` writes them as GLB
plus a ready-to-run oracle job per target."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def _colored(mesh, rgb: tuple[float, float, float]):  # noqa: ANN001, ANN202 (trimesh objects)
    mesh.visual.vertex_colors = np.tile((np.array(rgb) * 255).astype(np.uint8), (len(mesh.vertices), 1))
    return mesh


def make_target(name: str):  # noqa: ANN201 (trimesh.Trimesh)
    """name: "mug" (hole through the handle, open concave cup), "table" (thin legs),
    "torus_knot"-like "ring" (a torus with a hole), "blocks" (stacked boxes)."""
    import trimesh
    from trimesh import creation

    if name == "mug":
        outer = creation.cylinder(0.45, 0.9, sections=48)
        inner = creation.cylinder(0.36, 0.9, sections=48)
        inner.apply_translation([0, 0, 0.12])
        cup = outer.difference(inner, engine="manifold")
        handle = creation.torus(0.25, 0.07, major_sections=32, minor_sections=12)
        handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        handle.apply_translation([0.5, 0, 0])
        parts = [_colored(cup, (0.9, 0.15, 0.1)), _colored(handle, (0.1, 0.3, 0.9))]
        mesh = trimesh.util.concatenate(parts)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # z-up -> y-up
    elif name == "table":
        top = _colored(creation.box([1.2, 0.1, 0.8]), (0.8, 0.6, 0.1))
        top.apply_translation([0, 0.4, 0])
        legs = []
        for x in (-0.5, 0.5):
            for z in (-0.3, 0.3):
                leg = _colored(creation.box([0.08, 0.8, 0.08]), (0.1, 0.7, 0.2))
                leg.apply_translation([x, 0.0, z])
                legs.append(leg)
        mesh = trimesh.util.concatenate([top, *legs])
    elif name == "ring":
        mesh = creation.torus(0.5, 0.18, major_sections=48, minor_sections=16)
        v = mesh.vertices
        colors = np.where(v[:, :1] > 0, [[230, 40, 40]], [[40, 60, 230]])
        colors = np.where(v[:, 2:3] > 0.3, [[40, 200, 60]], colors)
        mesh.visual.vertex_colors = np.concatenate([colors, np.full((len(v), 1), 255)], 1).astype(np.uint8)
        mesh.apply_transform(trimesh.transformations.rotation_matrix(0.9, [1, 0, 0]))
    elif name == "blocks":
        # One closed surface (boolean union): a concatenation would leave hidden inner faces
        # that no view can see, which the Chamfer metric would count as missing.
        a = creation.box([0.9, 0.5, 0.9])
        a.apply_translation([0, -0.3, 0])
        b = creation.box([0.5, 0.5, 0.5])
        b.apply_translation([0.1, 0.2, -0.1])
        mesh = a.union(b, engine="manifold")
        mesh.unmerge_vertices()  # flat per-face colours
        upper = mesh.triangles_center[:, 1] > -0.05 + 1e-6
        colors = np.where(upper[:, None], [[204, 25, 153, 255]], [[230, 204, 25, 255]]).astype(np.uint8)
        mesh.visual.vertex_colors = np.repeat(colors, 3, axis=0)
    else:
        raise ValueError(f"unknown target {name!r}")
    return mesh


TARGETS = ("mug", "table", "ring", "blocks")


def write_target(name: str, out_dir: Path, preset: str = "draft", overrides: dict | None = None) -> Path:
    """Write DIR/NAME.glb and DIR/NAME_job.json (an oracle job); -> the job path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    make_target(name).export(str(out_dir / f"{name}.glb"))
    job = {"version": 1, "mode": "generate", "preset": preset, "guidance": "oracle",
           "oracle": {"target_mesh": f"{name}.glb"}, "seed": 0, "device": "auto", "overrides": overrides or {}}
    path = out_dir / f"{name}_job.json"
    path.write_text(json.dumps(job, indent=2))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--preset", default="draft")
    args = ap.parse_args()
    torch.manual_seed(0)
    for name in args.targets:
        print(write_target(name, Path(args.out), args.preset))


if __name__ == "__main__":
    main()
