"""A geometry phase draws the references it is compared with the way it draws its own surface
(Views.normals). Phase II shades the DMTet by its faces, so the oracle's target and the
identity views of an edit's input are drawn by face too; drawn with interpolated normals, a
box whose corners share vertices (the edit case's input) shows rounded edges that flat faces
can only answer by bulging (docs/quality.md: 4.2% of the diagonal out of its box in 200 steps
with the target its own input, 1.0% with both drawn by face).

Known answer on such a cube: by face, every pixel inside a face's image is one of the six
axis colours (n + 1) / 2; by vertex, most are not (tests/test_mesh_normals.py)."""
import torch
import trimesh

from backend.geometry.dmtet import dmtet_from_mesh
from backend.geometry.mesh import Mesh, face_normals
from backend.geometry.surfaces import DMTetSurface, OffsetSurface
from backend.guidance.oracle import OracleDenoiser
from backend.guidance.ref_view import Anchor, identity_views
from backend.pipeline.config import resolve
from backend.pipeline.guidance_terms import Term
from backend.pipeline.phases import GeometryPhase, PhaseContext
from backend.render.camera import orbit_cameras
from backend.render.mesh_material import render_target
from backend.render.mesh_renderer import clip_positions
from backend.render.shading import Frame, Views, fixed_views

AXES = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
AXIS_COLOURS = AXES * 0.5 + 0.5


def _cube() -> Mesh:
    box = trimesh.creation.box((0.8, 0.8, 0.8))  # 8 vertices, each shared by three faces
    assert len(box.vertices) == 8
    return Mesh(torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces, dtype=torch.long))


def _off_axis_share(raster, cube: Mesh, views: Views, rgb: torch.Tensor) -> float:  # noqa: ANN001
    """The share of pixels inside one face's image (it and its 8 neighbours show the same
    face of the cube: antialiasing blends only across its edges) whose colour is not an
    axis colour (to 1e-5)."""
    rast = raster.rasterize(clip_positions(cube.verts, views.cams.mvp), cube.faces.int(), rgb.shape[1:3])
    side = (face_normals(cube.verts, cube.faces) @ AXES.T).argmax(-1)  # which of the six
    label = torch.where(rast[..., 3] > 0, side[(rast[..., 3].long() - 1).clamp(min=0)].float(), -1.0)[:, None]
    pool = torch.nn.functional.max_pool2d
    inside = (pool(label, 3, 1, 1) == label) & (-pool(-label, 3, 1, 1) == label) & (label >= 0)
    colours = rgb[inside[:, 0]]
    assert colours.shape[0] > 500  # the cube fills part of every view
    err = (colours[:, None, :] - AXIS_COLOURS[None]).abs().amax(-1).amin(-1)
    return float((err > 1e-5).float().mean())


class Recorder:
    """A guidance that passes everything to another and keeps the views it was given."""

    def __init__(self, inner) -> None:  # noqa: ANN001 (a Guidance)
        self.inner, self.seen = inner, []
        self.needs_geometry, self.generator = inner.needs_geometry, inner.generator

    def views(self, shading: str, background: str) -> Views | None:
        return self.inner.views(shading, background)

    def __call__(self, frame: Frame, views: Views, step: int, total: int) -> dict[str, torch.Tensor]:
        self.seen.append(views)
        return self.inner(frame, views, step, total)


def test_identity_views_follow_the_surface_they_are_compared_with(raster):
    cube = _cube()
    by_face = identity_views(raster, cube, 4, 64, "normal", DMTetSurface.normals)
    by_vertex = identity_views(raster, cube, 4, 64, "normal", OffsetSurface.normals)
    assert DMTetSurface.normals == "face" and OffsetSurface.normals == "vertex"
    views = by_face.views()
    assert _off_axis_share(raster, cube, views, by_face.rgb) == 0.0
    assert _off_axis_share(raster, cube, views, by_vertex.rgb) > 0.5


def test_phase_two_draws_the_oracles_target_and_the_identity_views_by_face(raster):
    cube = _cube()
    cfg = resolve("draft", {"phase2.batch": 2, "phase2.resolution": 48, "phase2.tet_res": 16,
                            "phase2.losses.identity": 1.0}).phase("phase2")
    ctx = PhaseContext(raster, torch.device("cpu"), 0, 1.0)
    oracle = OracleDenoiser(cube, raster)
    sds = Recorder(cfg.losses["cds"].oracle_term(cfg, oracle, 0))
    identity = Recorder(Anchor({"normal": identity_views(raster, cube, 4, 48, "normal", "face")}, cfg.resolution))
    dmtet = dmtet_from_mesh(cube.verts, cube.faces, cfg.tet_res, 1.0, 0.25)
    phase = GeometryPhase(cfg, ctx, [Term("cds", 1.0, sds), Term("identity", 1.0, identity)], DMTetSurface(dmtet))
    phase.step(0)
    (batch,), (fixed,) = sds.seen, identity.seen  # the sampled batch; the anchor's own cameras
    assert batch.shading == "normal" and batch.normals == "face" and fixed.normals == "face"
    # the oracle's target through the step's views: the cube's faces, never a blend of them
    assert _off_axis_share(raster, cube, batch, oracle.target_images(batch)) == 0.0
    assert _off_axis_share(raster, cube, batch, render_target(raster, cube, batch.with_normals("vertex"))) > 0.5


def test_views_made_outside_a_phase_draw_a_file_as_it_is_drawn():
    """Previews and the oracle report's renders keep interpolated normals: a file without
    split normals is drawn smooth."""
    views = fixed_views(orbit_cameras(30.0, torch.tensor([45.0]), 2.5, 40.0, 48), "normal")
    assert views.normals == "vertex"
    assert views.to("cpu").normals == views.index([0]).normals == "vertex"
    assert views.with_normals("face").to("cpu").index([0]).normals == "face"
