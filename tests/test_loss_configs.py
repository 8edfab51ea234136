"""A preset's losses tables parsed into typed configs: unknown names and parameters and
values of the wrong kind fail before any work, naming the dotted key."""
import pytest

from backend.guidance.cds import CDSConfig
from backend.guidance.ms import MSConfig
from backend.errors import ConfigError
from backend.pipeline.config import resolve
from backend.pipeline.losses import LOSSES, parse_loss


def test_a_list_of_weights_is_not_mistaken_for_a_range():
    cfg = resolve("standard", {"phase1.losses.ms": {"weight": 1.0, "aug_weights": [0.7, 0.3]}})
    assert cfg.phase1.losses["ms"].aug_weights == (0.7, 0.3)
    with pytest.raises(ConfigError) as err:
        resolve("standard", {"phase2.losses.cds": {"weight": 1.0, "gap": [300, 100]}})
    assert err.value.field == "phase2.losses.cds.gap"


def test_numbers_and_objects_become_configs_with_the_defaults_of_the_class():
    assert parse_loss("cds", 2, "p.cds") == CDSConfig(weight=2.0)
    ms = parse_loss("ms", {"weight": 0.5, "omega_l": 0, "aug_weights": [0.6, 0.4]}, "p.ms")
    assert ms == MSConfig(weight=0.5, omega_l=0.0, aug_weights=(0.6, 0.4))
    assert resolve("draft", {"phase2.losses.cds": {"gap": [50, 80]}}).phase2.weight("cds") == 1.0
    assert resolve("draft", mode="stylize").phase2.weight("cds") == 0.0


@pytest.mark.parametrize("overrides, field", [
    ({"phase2.losses.cds": {"weight": 1.0, "t_strat": 300}}, "phase2.losses.cds.t_strat"),
    ({"phase1.losses.aug_sds.image_weigth": 0.1}, "phase1.losses.aug_sds.image_weigth"),
    ({"phase2.losses.cds": {"weight": 1.0, "gap": [100]}}, "phase2.losses.cds.gap"),
    ({"phase2.losses.cds": {"weight": 1.0, "gap": [100.5, 200]}}, "phase2.losses.cds.gap[0]"),
    ({"phase1.losses.ms": {"weight": 1.0, "aug_weights": []}}, "phase1.losses.ms"),
    ({"phase3.losses.vpcsm": {"weight": 1.0, "fixed_views": 1}}, "phase3.losses.vpcsm.fixed_views"),
    ({"phase1.losses.sds": 1.0}, "phase1.losses.sds"),
    ({"phase1.losses.aug_sds": {"weight": 1.0, "image_decoder": "taesd"}}, "phase1.losses.aug_sds.image_decoder"),
    ({"phase1.losses.aug_sds": {"weight": 1.0, "image_decoder": 1}}, "phase1.losses.aug_sds.image_decoder"),
    ({"phase1.losses.aug_sds": {"weight": 1.0, "max_resolution": 4}}, "phase1.losses.aug_sds.max_resolution"),
    ({"phase2.losses.cds": {"weight": 1.0, "max_resolution": 512.5}}, "phase2.losses.cds.max_resolution"),
])
def test_a_typo_or_a_wrong_value_names_its_key(overrides, field):
    with pytest.raises(ConfigError) as err:
        resolve("standard", overrides)
    assert err.value.field == field, str(err.value)
