"""Adding a loss is one config class and its registration: this module registers a toy loss
(an L2 pull of the rendered image towards a grey) from here alone, names it in a preset's
losses table through the job overrides, and runs phase I with it. Nothing in pipeline/
knows it: the config builds its own terms and names its own model roles."""
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch

from backend.geometry.mesh import load_mesh
from backend.guidance.base import LOSSES, GuidanceConfig, OnBatch, register_loss
from backend.pipeline.config import resolve
from backend.pipeline.guidance_terms import build_terms, required_roles
from backend.pipeline.phases import NeRFPhase, PhaseContext


class ToyL2(OnBatch):
    generator = None

    def __init__(self, target: float) -> None:
        self.target = target
        self.seen: list[torch.Tensor] = []

    def __call__(self, frame: Any, views: Any, step: int, total: int) -> dict[str, torch.Tensor]:
        self.seen.append(frame.image.detach().clone())
        return {"toy_l2": ((frame.image - self.target) ** 2).mean()}


@dataclass(frozen=True)
class ToyL2Config(GuidanceConfig):
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
    class Other(GuidanceConfig):
        def paper_term(self, phase_cfg: Any, cond: Any, seed: int) -> ToyL2:
            return ToyL2(0.0)

    with pytest.raises(ValueError, match="'toy_l2' is already registered to ToyL2Config"):
        register_loss("toy_l2")(Other)


@pytest.mark.parametrize("base", ["guidance", "anchor", "regularizer"])
def test_a_loss_that_cannot_be_computed_cannot_register(base):
    """Each kind has its method (a guidance term, an anchor term, a regulariser's value):
    a config that does not implement it is refused by name, not left a silent no-op."""
    from backend.pipeline.losses import AnchorConfig, RegularizerConfig

    kinds = {"guidance": GuidanceConfig, "anchor": AnchorConfig, "regularizer": RegularizerConfig}
    missing = {"guidance": "paper_term", "anchor": None, "regularizer": "compute"}[base]

    @dataclass(frozen=True)
    class Incomplete(kinds[base]):
        pass

    if missing is None:  # an anchor's term is built from its views: the base implements it
        register_loss("incomplete_anchor")(Incomplete)
        LOSSES.pop("incomplete_anchor")
        return
    with pytest.raises(TypeError, match=f"'incomplete': Incomplete does not implement {missing}"):
        register_loss("incomplete")(Incomplete)
    assert "incomplete" not in LOSSES


@pytest.fixture
def toy_regularizer():
    """A regulariser registered from here: the mean squared density weight of the NeRF's rays."""
    from backend.pipeline.losses import RegularizerConfig, StepData

    @dataclass(frozen=True)
    class ToyWeights(RegularizerConfig):
        needs: ClassVar[frozenset[str]] = frozenset({"volume"})

        def compute(self, data: StepData) -> torch.Tensor:
            return (data.volume.weights ** 2).mean()

    register_loss("toy_weights")(ToyWeights)
    yield
    LOSSES.pop("toy_weights")


def test_a_regularizer_registered_outside_pipeline_runs_in_a_phase(toy_regularizer, tmp_path, raster):
    """Named in the losses table, it is computed on the step's own volume render: its value
    is the weight times the term on the same draws (the phase's cameras, then its samples
    along the rays), replayed here on the field as it was before the step."""
    import copy

    from backend.eval.targets import write_target
    from backend.render.shading import sample_views
    from backend.render.volume import render_volume

    cfg = resolve("draft", {"phase1.losses.toy_weights": 3.0, "phase1.iterations": 2, "phase1.resolution": 16,
                            "phase1.samples": 8})
    write_target("blocks", tmp_path)
    terms = build_terms("phase1", cfg.phase1, "oracle", raster, 0, lambda m: None, load_mesh(tmp_path / "blocks.glb"))
    phase = NeRFPhase(cfg.phase1, PhaseContext(raster, torch.device("cpu"), 0, 1.0), terms)
    gen = torch.Generator()
    gen.set_state(phase.generator.get_state())
    field = copy.deepcopy(phase.field)
    values = phase.step(0)
    c = cfg.phase1
    views = sample_views(c.cameras, c.batch, c.resolution, gen, c.shading, c.background)
    with torch.no_grad():
        out = render_volume(field, views, c.samples, gen, 1.0, False)
    assert set(values) == {"aug_sds", "toy_weights"}
    assert values["toy_weights"] == pytest.approx(3.0 * float((out.weights ** 2).mean()), rel=1e-5)


def test_a_regularizer_a_phase_cannot_feed_is_refused_by_name(raster):
    """The texture phase computes neither a volume nor a mesh: naming laplacian there is a
    ConfigError naming the key, before any step (not a term that silently does nothing)."""
    from backend.errors import ConfigError
    from backend.pipeline.phases import TexturePhase

    cfg = resolve("draft", {"phase3.losses.laplacian": 10.0})
    with pytest.raises(ConfigError, match=r"phase3\.losses\.laplacian: needs mesh"):
        TexturePhase(cfg.phase3, PhaseContext(raster, torch.device("cpu"), 0, 1.0), [], torch.rand(3, 3),
                     torch.tensor([[0, 1, 2]]), None)
