"""Procedural target meshes for oracle runs (tests and the demo): strong colours, holes,
concavities and thin parts. `python -m backend.eval.targets --out DIR` writes them as GLB
plus a ready-to-run oracle job per target. write_mode_job: the stylize and edit cases of
the end-to-end tests (an input mesh and the variant of it the oracle aims at)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def _colored(mesh, rgb):  # noqa: ANN001, ANN202 (trimesh objects; rgb [3] or [V,3] in [0,1])
    rgb = np.broadcast_to(np.clip(np.asarray(rgb, dtype=np.float64), 0, 1), (len(mesh.vertices), 3))
    mesh.visual.vertex_colors = (rgb * 255).astype(np.uint8)
    return mesh


THIN = 0.04  # 4 mm on a 10 cm object: the thin parts' thickness, in units of the object's size


def _tube_ring(major: float, minor: float):  # noqa: ANN202 (trimesh.Trimesh)
    """A torus in the xy plane, finely sectioned (a thin tube needs many sections round)."""
    from trimesh import creation

    return creation.torus(major, minor, major_sections=96, minor_sections=12)


def _union(parts: list):  # noqa: ANN202 (trimesh objects)
    """One closed surface (a concatenation would leave hidden inner faces that no view can
    see, which the Chamfer metric would count as missing)."""
    out = parts[0]
    for p in parts[1:]:
        out = out.union(p, engine="manifold")
    return out


def _face_colored(mesh, region, palette: list[tuple[int, int, int]]):  # noqa: ANN001, ANN202
    """Flat colours by region: region(face centres [F,3]) -> palette index per face."""
    mesh.unmerge_vertices()
    rgba = np.array([[*c, 255] for c in palette], np.uint8)[region(mesh.triangles_center)]
    mesh.visual.vertex_colors = np.repeat(rgba, 3, axis=0)
    return mesh


def make_target(name: str):  # noqa: ANN201 (trimesh.Trimesh)
    """name: "mug" (a 4 mm handle on a 10 cm cup: a hole through it, an open concave cup),
    "chair" (4 mm legs and back posts), "ring_stick" (a ring of 4 mm wire on a 4 mm stick
    in a base), "table" (legs 8% of its width), "ring" (a torus with a hole), "blocks"
    (stacked boxes)."""
    import trimesh
    from trimesh import creation

    if name == "mug":
        # 10 cm tall, a handle 4 mm thick (units: 1 = 10 cm): the thin part artists model daily
        cup = creation.cylinder(0.4, 1.0, sections=64)
        inner = creation.cylinder(0.36, 1.0, sections=64)
        inner.apply_translation([0, 0, 0.06])
        handle = _tube_ring(0.22, THIN / 2)
        handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        handle.apply_translation([0.6, 0, 0])
        mesh = cup.union(handle, engine="manifold").difference(inner, engine="manifold")
        mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # z-up -> y-up
        mesh = _face_colored(mesh, lambda c: np.where(c[:, 0] > 0.41, 1, 0), [(230, 40, 25), (25, 75, 230)])
    elif name == "chair":
        # 10 cm tall; legs and back posts 4 mm thick
        boxes = [([0.5, THIN * 1.5, 0.5], [0, 0, 0]), ([0.48, 0.08, THIN], [0, 0.46, -0.22])]
        for x in (-0.22, 0.22):
            boxes += [([THIN, 0.45, THIN], [x, -0.225, z]) for z in (-0.22, 0.22)]
            boxes.append(([THIN, 0.5, THIN], [x, 0.25, -0.22]))
        mesh = _union([creation.box(size, transform=trimesh.transformations.translation_matrix(at))
                       for size, at in boxes])
        mesh = _face_colored(mesh, lambda c: np.where(c[:, 1] < -0.04, 1, np.where(c[:, 1] > 0.04, 2, 0)),
                             [(204, 128, 50), (25, 153, 50), (50, 50, 204)])
    elif name == "ring_stick":
        # a ring of 4 mm wire on a 4 mm stick standing in a base, 10 cm tall
        ring = _tube_ring(0.2, THIN / 2)  # in the xy plane, facing +z
        ring.apply_translation([0, 0.25, 0])
        up = trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0])
        stick = creation.cylinder(THIN / 2, 0.55, sections=24, transform=up)
        stick.apply_translation([0, -0.225, 0])
        base = creation.cylinder(0.18, 0.06, sections=48, transform=up)
        base.apply_translation([0, -0.5, 0])
        mesh = _union([ring, stick, base])
        mesh = _face_colored(mesh, lambda c: np.where(c[:, 1] > 0.03, 0, np.where(c[:, 1] > -0.46, 1, 2)),
                             [(230, 180, 25), (50, 128, 230), (204, 50, 75)])
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
        mesh.unmerge_vertices()  # flat faces: a box's corners shared would draw its sides with blended normals
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


TARGETS = ("mug", "chair", "ring_stick", "table", "ring", "blocks")


def write_target(name: str, out_dir: Path, preset: str = "draft", overrides: dict | None = None,
                 seed: int = 0) -> Path:
    """Write DIR/NAME.glb and DIR/NAME_job.json (an oracle job); -> the job path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    make_target(name).export(str(out_dir / f"{name}.glb"))
    job = {"version": 1, "mode": "generate", "preset": preset, "guidance": "oracle",
           "oracle": {"target_mesh": f"{name}.glb"}, "seed": seed, "device": "auto", "overrides": overrides or {}}
    path = out_dir / f"{name}_job.json"
    path.write_text(json.dumps(job, indent=2))
    return path


def mode_meshes(mode: str):  # noqa: ANN201 (trimesh.Trimesh pair)
    """-> (input, target) of the end-to-end case. stylize: a sphere anywhere in space (the
    result comes back in place), the target its recoloured copy; edit: a 1 x 0.6 x 0.6 box,
    the target the same box taller and bent."""
    from trimesh import creation

    if mode == "stylize":
        sphere = creation.icosphere(3, 0.7)
        sphere.apply_translation([40.0, 3.0, -7.0])
        v = sphere.vertices - sphere.vertices.mean(0)
        _colored(sphere, np.c_[0.8 * np.ones(len(v)), 0.3 + 0.2 * (v[:, 1] > 0), 0.2 * np.ones(len(v))])
        target = _colored(sphere.copy(), np.c_[0.1 + 0.8 * (v[:, 0] > 0), 0.2 * np.ones(len(v)),
                                                      0.9 - 0.6 * (v[:, 2] > 0)])
        return sphere, target
    if mode == "edit":
        box = creation.box((1.0, 0.6, 0.6)).subdivide().subdivide()
        v = box.vertices
        _colored(box, np.c_[0.8 * np.ones(len(v)), 0.3 + 0.4 * (v[:, 1] > 0), 0.2 * np.ones(len(v))])
        variant = box.copy()
        tv = variant.vertices.copy()
        tv[:, 1] = tv[:, 1] * 1.8 + 0.6 * tv[:, 0] ** 2  # taller and bent
        variant.vertices = tv
        return box, variant
    raise ValueError(f"unknown mode case {mode!r}")


# The end-to-end cases' settings. Stylize: phase III long enough to restyle a sphere. Edit:
# identity 1 instead of the preset's 10 (a bold edit: "how much may change"), and phase II
# at tet_res 48 and 128² (the box has no thin part; draft's finer grid and renders are for
# 4 mm parts and cost this CPU 4x the time); its steps are draft's edit's (presets/modes/edit.json).
MODE_OVERRIDES = {
    "stylize": {"phase3.iterations": 120, "export.texture_size": 256},
    "edit": {"phase3.iterations": 30, "phase2.tet_res": 48, "phase2.resolution": 128,
             "phase2.losses.identity": 1.0, "export.texture_size": 128},
}


def write_mode_job(mode: str, out_dir: Path, overrides: dict | None = None, seed: int = 0) -> Path:
    """Write DIR/input.glb, DIR/target.glb and DIR/job.json (the mode's oracle job with
    MODE_OVERRIDES, then `overrides`); -> the job path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source, target = mode_meshes(mode)
    source.export(str(out_dir / "input.glb"))
    target.export(str(out_dir / "target.glb"))
    job = {"version": 1, "mode": mode, "mesh": "input.glb", "guidance": "oracle", "oracle": {"target_mesh": "target.glb"},
           "seed": seed, "overrides": {**MODE_OVERRIDES[mode], **(overrides or {})}}
    if mode == "edit":
        job["prompt"] = {"text": "taller and bent"}
    path = out_dir / "job.json"
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
