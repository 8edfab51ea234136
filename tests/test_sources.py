"""Every loss and phase setting every preset runs is in the sources table
(backend/guidance/sources.py) with the value it runs, a published value and where that was
read; a setting that differs from its published value says why."""
import pytest

from backend.guidance.sources import SOURCES, settings_of
from backend.job import MODES
from backend.pipeline.config import resolve
from backend.pipeline.preset_files import preset_names
from backend.pipeline.settings import PHASES

PRESETS = tuple(preset_names())
PHASE_SETTINGS = ("timesteps", "weighting", "optimizer", "lr")


def _settings(preset: str, mode: str):
    cfg = resolve(preset, {}, mode)
    for phase in PHASES:
        pc = cfg.phase(phase)
        for name, loss in pc.losses.items():
            for key, value in settings_of(name, loss).items():
                yield phase, key, value
        for key in PHASE_SETTINGS:
            yield phase, key, getattr(pc, key)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_setting_a_preset_runs_is_in_the_sources_table(preset, mode):
    missing = []
    for phase, key, value in _settings(preset, mode):
        source = SOURCES.get(key)
        if source is None:
            missing.append(f"{phase}: {key} = {value!r} (not in the table)")
            continue
        expected = source.expected(preset, mode, phase)
        if expected != pytest.approx(value) if isinstance(value, float) else expected != value:
            missing.append(f"{phase}: {key} = {value!r}, the table records {expected!r}")
    assert not missing, f"{preset}/{mode}:\n" + "\n".join(missing)


def test_every_entry_names_its_source_and_is_used():
    used = {key for preset in PRESETS for mode in MODES for _, key, _ in _settings(preset, mode)}
    assert set(SOURCES) == used  # nothing recorded that no preset runs
    for key, source in SOURCES.items():
        assert source.published and source.where, key


def test_the_guidance_scales_follow_their_reference_configs():
    """Score distillation at 100 (threestudio hifa.yaml, DreamFusion), not text-to-image's
    7.5; CDS from 100 down to 30 as Consistent3D's refine stage (consistency-refine.yaml)."""
    for preset in PRESETS:
        cfg = resolve(preset, {}, "generate")
        assert cfg.phase1.losses["aug_sds"].guidance_scale == (100.0, 100.0)
        assert cfg.phase2.losses["cds"].guidance_scale == (100.0, 30.0)
