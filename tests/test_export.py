import torch
import trimesh

from backend.export.mesh_export import bake, build_textured_mesh, dilate, unwrap, write_glb
from backend.geometry.cleanup import cleanup
from backend.geometry.mesh import Mesh, load_mesh, MeshError
import pytest


def _albedo(x: torch.Tensor) -> torch.Tensor:
    return (x * 0.5 + 0.5).clamp(0, 1)


def test_cleanup_removes_specks_and_duplicates():
    a = trimesh.creation.icosphere(2, 0.5)
    speck = trimesh.creation.icosphere(0, 0.01)
    speck.apply_translation([0.8, 0, 0])
    m = trimesh.util.concatenate([a, speck])
    v, f, _ = cleanup(torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces), 100000, 0.05)
    assert f.shape[0] == a.faces.shape[0]
    v2, f2, _ = cleanup(torch.tensor(a.vertices, dtype=torch.float32), torch.tensor(a.faces), 100, 0.0)
    assert f2.shape[0] <= 100


def test_uv_bake_round_trip(raster):
    sphere = trimesh.creation.icosphere(3, 0.6)
    v, f = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    v, f, uv = unwrap(v, f, 256, 2)
    assert uv.min() >= 0 and uv.max() <= 1 and v.shape[0] == uv.shape[0]
    tex = bake(raster, v, f, uv, _albedo, 256)
    # Sampling the baked texture at each vertex's UV returns the field's colour there.
    mesh = Mesh(v, f, uv=uv, texture=tex)
    from backend.geometry.mesh import sample_colors

    got = sample_colors(mesh, uv, None)
    assert (got - _albedo(v)).abs().mean() < 0.02


def test_dilation_fills_empty_texels():
    img = torch.zeros(8, 8, 3)
    filled = torch.zeros(8, 8, dtype=torch.bool)
    img[3, 3] = 1.0
    filled[3, 3] = True
    out = dilate(img, filled, 3)
    assert torch.allclose(out[2, 2], torch.ones(3)) and torch.allclose(out[0, 0], torch.ones(3))


def test_glb_round_trip_positions_uvs_texture(tmp_path, raster):
    sphere = trimesh.creation.icosphere(2, 0.6)
    v, f = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    mesh = build_textured_mesh(raster, v, f, _albedo, {"max_faces": 5000, "min_component_fraction": 0.0,
                                                       "texture_size": 128, "uv_padding": 2})
    write_glb(mesh, tmp_path / "r.glb")
    back = load_mesh(tmp_path / "r.glb")
    assert torch.allclose(back.verts, mesh.verts, atol=1e-6)
    assert torch.allclose(back.uv, mesh.uv, atol=1e-6)
    assert (back.texture - mesh.texture).abs().max() <= 1 / 255 + 1e-6


def test_load_mesh_errors(tmp_path):
    with pytest.raises(MeshError, match="not found"):
        load_mesh(tmp_path / "missing.glb")
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"this is not a mesh")
    with pytest.raises(MeshError):
        load_mesh(bad)
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(torch.rand(50, 3).numpy()).export(str(cloud))
    with pytest.raises(MeshError, match="no triangles"):
        load_mesh(cloud)


def test_atomic_path_replaces_only_on_success(tmp_path):
    from backend.atomic import atomic_path

    target = tmp_path / "result.glb"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]  # no partial file left
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".glb" and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]


def test_partials_left_by_a_killed_write_are_removed(tmp_path):
    from backend.atomic import remove_partials

    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / "checkpoints" / ".phase3.partial.pt", tmp_path / ".result.partial.glb"]
    keep = [tmp_path / "checkpoints" / "phase3.pt", tmp_path / "result.glb"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert sorted(remove_partials(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
