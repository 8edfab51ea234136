"""Adding a loss is one config class and its registration: this module registers a toy loss
(an L2 pull of the rendered image towards a grey) from here alone, names it in a preset's
losses table through the job overrides, and runs phase I with it. Nothing in pipeline/
knows it: the config builds its own terms and names its own model roles."""
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch

from backend.geometry.mesh import load_mesh
from backend.guidance.base import LOSSES, LossConfig, register_loss
from backend.pipeline.config import resolve
from backend.pipeline.guidance_terms import build_terms, required_roles
from backend.pipeline.phases import NeRFPhase, PhaseContext


class ToyL2:
    cameras = None
    needs_geometry = False
    generator = None

    def __init__(self, target: float) -> None:
        self.target = target
        self.seen: list[torch.Tensor] = []

    def __call__(self, frame: Any, views: Any, step: int, total: int) -> dict[str, torch.Tensor]:
        self.seen.append(frame.image.detach().clone())
        return {"toy_l2": ((frame.image - self.target) ** 2).mean()}


@dataclass(frozen=True)
class ToyL2Config(LossConfig):
    kind: ClassVar[str] = "guidance"
    roles: ClassVar[frozenset[str]] = frozenset({"dino"})
    target: float = 0.25

    def paper_term(self, phase_cfg: dict, cond: Any, seed: int) -> ToyL2:
        return ToyL2(self.target)

    def oracle_term(self, phase_cfg: dict, oracle: Any, seed: int) -> ToyL2:
        return ToyL2(self.target)


@pytest.fixture
def toy_loss():
    register_loss("toy_l2")(ToyL2Config)
    yield
    LOSSES.pop("toy_l2")


def test_a_loss_registered_outside_pipeline_runs_in_a_phase(toy_loss, tmp_path, raster):
    from backend.eval.targets import write_target

    cfg = resolve("draft", {"phase1.losses.aug_sds": 0.0, "phase1.losses.toy_l2": {"weight": 2.0, "target": 0.4},
                            "phase1.iterations": 2, "phase1.resolution": 16, "phase1.samples": 8})
    assert required_roles(True, [cfg.phase1]) == {"dino"}  # the config's own roles, aug_sds off
    write_target("blocks", tmp_path)
    terms = build_terms("phase1", cfg.phase1, "oracle", raster, 0, lambda m: None, load_mesh(tmp_path / "blocks.glb"))
    assert [(t.name, t.weight, type(t.guidance)) for t in terms] == [("toy_l2", 2.0, ToyL2)]
    phase = NeRFPhase(cfg.phase1, PhaseContext(raster, torch.device("cpu"), 0, 1.0), terms)
    values = phase.step(0)
    seen = terms[0].guidance.seen[-1]
    assert set(values) == {"toy_l2"}
    assert values["toy_l2"] == pytest.approx(2.0 * float(((seen - 0.4) ** 2).mean()), rel=1e-6)


def test_a_name_is_registered_once(toy_loss):
    @dataclass(frozen=True)
    class Other(LossConfig):
        pass

    with pytest.raises(ValueError, match="'toy_l2' is already registered to ToyL2Config"):
        register_loss("toy_l2")(Other)
