"""Paper guidance on tiny models: every loss runs in every phase and its gradient reaches
that phase's parameters (and nothing the phase freezes); a text + image + audio job runs
all three phases and writes a textured GLB."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from backend.geometry.dmtet import dmtet_from_density
from backend.job import parse_job
from backend.geometry.surfaces import DMTetSurface
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.pipeline.config import resolve
from backend.pipeline.guidance_terms import build_terms, required_roles
from backend.pipeline.job_conditioning import JobConditioning
from backend.pipeline.phases import GeometryPhase, NeRFPhase, PhaseContext, TexturePhase
from backend.render.raster import TorchRasterizer

from .helpers import assert_clean_gltf

LOSSES = ["aug_sds", "cds", "csm", "vpcsm", "zero123_sds", "ms", "ref_view", "sgc"]


def _inputs(folder: Path) -> dict:
    img = np.full((64, 64, 3), 250, np.uint8)
    img[16:48, 20:44] = [200, 40, 40]
    Image.fromarray(img).save(folder / "ref.png")
    sf.write(folder / "clip.wav", (np.sin(np.arange(24000) / 16000 * 2 * np.pi * 440) * 0.3).astype(np.float32), 16000)
    return {"text": "a red box", "images": [str(folder / "ref.png")], "audio": str(folder / "clip.wav"), "weights": {}}


@pytest.fixture(scope="module")
def cond(tmp_path_factory) -> JobConditioning:
    root = tmp_path_factory.mktemp("paper")
    models = build_tiny(root / "models")
    return JobConditioning(parse_job({"prompt": _inputs(root)}), ModelStore(str(models)), lambda m: None)


def _phase_cfg(phase: str, loss: str, **overrides: object):  # noqa: ANN202
    """The standard preset's phase at a tiny size with `loss` alone (and overrides: key -> value)."""
    small = {"iterations": 2, "batch": 1, "resolution": 32,
             "losses": {loss: {"weight": 1.0, "resolution": 32, "steps": 3} if loss == "sgc" else 1.0}}
    if phase == "phase1":
        small.update({"samples": 16, "field.levels": 4, "field.log2_table": 12, "field.max_res": 64,
                      "field.hidden": 16})
    return resolve("standard", {f"{phase}.{k}": v for k, v in {**small, **overrides}.items()}).phase(phase)


def _params(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def _assert_first_step_followed_the_gradient(before: torch.Tensor, phase, module, name: str) -> None:  # noqa: ANN001
    """Adam's and Adan's first step is -lr g / (|g| + eps) elementwise (bias-corrected
    moments equal g and g², Adan's gradient difference is 0): the loss's gradient reached
    the parameters, some of it non-zero, and the step is exactly its own."""
    group = phase.optimizer.param_groups[0]
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in module.parameters()])
    assert grad.abs().max() > 0, name
    expected = -group["lr"] * grad / (grad.abs() + group["eps"])
    assert torch.allclose(_params(module) - before, expected, atol=1e-6), name


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_reaches_each_phase(cond, loss):
    raster = TorchRasterizer()
    ctx = PhaseContext(raster, torch.device("cpu"), 0, 1.0)
    anchors = {"ref_view": {None: cond.ref_view()}}
    cfg1 = _phase_cfg("phase1", loss)
    p1 = NeRFPhase(cfg1, ctx, build_terms("phase1", cfg1, "paper", raster, 0, print, cond=cond, anchors=anchors))
    before = _params(p1.field)
    p1.step(0)
    _assert_first_step_followed_the_gradient(before, p1, p1.field, "phase I")
    cfg2 = _phase_cfg("phase2", loss, tet_res=16)
    sphere = lambda x: 20.0 * (x.norm(dim=-1) < 0.5).float()  # noqa: E731 (a known surface)
    p1.field.density = sphere
    dmtet = dmtet_from_density(sphere, cfg2.tet_res, cfg2.density_threshold)
    p2 = GeometryPhase(cfg2, ctx, build_terms("phase2", cfg2, "paper", raster, 0, print, cond=cond, anchors=anchors),
                       DMTetSurface(dmtet))
    before = _params(p2.surface.module())
    p2.step(0)
    _assert_first_step_followed_the_gradient(before, p2, p2.surface.module(), "phase II")
    verts, faces = p2.mesh()
    cfg3 = _phase_cfg("phase3", loss)
    p3 = TexturePhase(cfg3, ctx, build_terms("phase3", cfg3, "paper", raster, 0, print, cond=cond, anchors=anchors),
                      verts, faces, p1.field.texture_field())
    frozen = p3.verts.clone()
    before = _params(p3.texture)
    p3.step(0)
    _assert_first_step_followed_the_gradient(before, p3, p3.texture, "phase III")
    assert torch.equal(frozen, p3.verts)  # geometry stays frozen in phase III


@pytest.mark.parametrize("loss", ["aug_sds", "cds"])
def test_unclip_losses_encode_at_the_smaller_of_max_resolution_and_the_training_size(cond, loss):
    """The tiny unCLIP is trained at 32² (sample_size 16, a 2x VAE): a cap above that
    (the default 512) keeps 32², a cap below it encodes the render at the cap; the
    reference synthesis always samples at the training size."""
    raster = TorchRasterizer()
    for cap, side in ((None, 32), (512, 32), (16, 16)):
        cfg = _phase_cfg("phase2", loss, **({} if cap is None else
                                            {f"losses.{loss}": {"weight": 1.0, "max_resolution": cap}}))
        (term,) = build_terms("phase2", cfg, "paper", raster, 0, print, cond=cond)
        assert term.guidance.denoiser.resolution == side
        d = term.guidance.denoiser
        assert d.encode(d.model_input(torch.rand(1, 40, 40, 3))).shape[-1] == side // 2
    assert cond.unclip().resolution == 32


@pytest.mark.slow
def test_text_image_audio_job_writes_a_textured_glb(tmp_path):
    from backend.geometry.mesh import load_mesh
    from backend.server.jobs import run_job

    prompt = _inputs(tmp_path)
    prompt = {k: (Path(v).name if isinstance(v, str) and k != "text" else v) for k, v in prompt.items()}
    prompt["images"] = ["ref.png"]
    overrides = {"phase1.iterations": 3, "phase2.iterations": 3, "phase3.iterations": 3, "phase1.resolution": 32,
                 "phase1.samples": 16, "phase1.batch": 1, "phase2.resolution": 32, "phase2.batch": 1,
                 "phase3.resolution": 32, "phase3.batch": 1, "phase2.tet_res": 16, "phase2.density_threshold": 5.0,
                 "export.texture_size": 64, "export.preview_resolution": 64}
    job = {"version": 1, "prompt": prompt, "preset": "standard", "models": str(build_tiny(tmp_path / "m")),
           "guidance": "paper", "overrides": overrides}
    events: list[dict] = []
    result = run_job(job, tmp_path, tmp_path / "out", events.append)
    assert result is not None, [e for e in events if e["type"] == "error"]
    assert_clean_gltf(result["glb"])
    mesh = load_mesh(result["glb"])
    assert mesh.uv is not None and mesh.texture is not None and mesh.faces.shape[0] > 0
    seen = {k for e in events if e["type"] == "progress" for k in e["losses"]}
    assert {"ms", "aug_sds", "zero123_sds", "ref_view", "ref_view/mask", "cds"} <= seen


def test_missing_model_fails_the_job_with_the_role_named(tmp_path):
    from backend.server.jobs import run_job

    (tmp_path / "empty").mkdir()
    events: list[dict] = []
    job = {"version": 1, "prompt": {"text": "a chair"}, "models": str(tmp_path / "empty"), "guidance": "paper"}
    assert run_job(job, tmp_path, tmp_path / "out", events.append) is None
    err = events[-1]
    assert err["type"] == "error" and err["code"] == "model_missing" and "role" in err["message"]
    assert err["hint"]


def test_a_job_names_every_missing_model_role_at_once(tmp_path):
    from backend.errors import ModelNotAvailable
    from backend.models.store import ModelStore

    manifest = tmp_path / "models.json"
    manifest.write_text(json.dumps({r: str(tmp_path / "none" / r) for r in
                                    ("sd", "unclip", "clip", "zero123", "imagebind", "ip_adapter", "depth")}))
    store = ModelStore(str(manifest))
    cfg = resolve("standard")
    text_only = parse_job({"prompt": {"text": "a chair"}})
    roles = required_roles(text_only.has_reference_image, [cfg.phase(p) for p in ("phase1", "phase2", "phase3")])
    # ms, aug_sds (its image term through TAESD), cds, zero123_sds, the reference from C_m
    assert roles == {"unclip", "imagebind", "zero123", "clip", "taesd"}
    with pytest.raises(ModelNotAvailable) as err:
        store.check_available(roles)
    assert err.value.role == "clip, imagebind, taesd, unclip, zero123"
    assert str(tmp_path / "none" / "zero123") in err.value.where
    high = resolve("high")
    assert {"depth"} <= required_roles(text_only.has_reference_image, [high.phase2])  # SGC's depth / normal parts
    for image_term in ({"image_weight": 0.1, "image_decoder": "vae"}, {"image_weight": 0.0}):
        plain = resolve("standard", {"phase1.losses.aug_sds": image_term})
        assert "taesd" not in required_roles(text_only.has_reference_image, [plain.phase1])
    vp = resolve("draft", {"phase3.losses.vpcsm": 1.0})
    assert {"sd", "ip_adapter"} <= required_roles(text_only.has_reference_image, [vp.phase3])
    store.check_available(set())  # nothing needed: nothing missing
