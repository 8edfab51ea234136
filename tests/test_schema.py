"""backend/schema.py, the one strict parser of every config: the kinds it reads, the dotted
key of each refusal, ranges that belong to their field and to no other of the same name."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import pytest

from backend.errors import ConfigError
from backend.job import MODES
from backend.pipeline.config import resolve, resolve_data
from backend.pipeline.preset_files import preset_names
from backend.pipeline.settings import Config
from backend.schema import IntSpan, Span, parse, setting


@dataclass(frozen=True, kw_only=True)
class Inner:
    lr: float = setting(0.1, lo=0.0, hi=1.0)
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True, kw_only=True)
class Outer:
    count: int = setting(lo=1, hi=10)
    span: Span = setting((0.0, 1.0), lo=-5.0, hi=5.0)
    gap: IntSpan = (1, 2)
    items: tuple[float, ...] = ()
    table: dict[str, float] | None = None
    inner: Inner = Inner()
    extra: Inner | None = None
    lr: float = 5.0  # no range: Inner.lr's range is Inner's alone

    def check(self, path: str) -> None:
        if self.count == 7:
            raise ConfigError(f"{path}.count: 7 is not allowed with the rest", f"{path}.count")


def _field_of(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse(Outer, data, "top")
    return err.value.field


def test_the_kinds_and_the_defaults():
    got = parse(Outer, {"count": 3, "span": 2, "gap": [3, 4], "items": [1, 2.5], "inner": {"mode": "b"},
                        "extra": {"lr": 1}, "lr": 50, "table": {"a": 1}}, "top")
    assert got == Outer(count=3, span=(2.0, 2.0), gap=(3, 4), items=(1.0, 2.5), inner=Inner(mode="b"),
                        extra=Inner(lr=1.0), lr=50.0, table={"a": 1.0})
    assert isinstance(got.extra.lr, float) and isinstance(got.gap[0], int)
    assert parse(Outer, {"count": 1, "extra": None}, "").extra is None


@pytest.mark.parametrize("data, field", [
    ({"count": 3, "cuont": 1}, "top.cuont"),
    ({}, "top.count"),
    ({"count": 0}, "top.count"),
    ({"count": 2.0}, "top.count"),
    ({"count": True}, "top.count"),
    ({"count": 10 ** 400}, "top.count"),
    ({"count": 3, "lr": float("nan")}, "top.lr"),
    ({"count": 3, "lr": float("inf")}, "top.lr"),
    ({"count": 3, "lr": 10 ** 400}, "top.lr"),
    ({"count": 3, "span": [2, 1]}, "top.span"),
    ({"count": 3, "span": [0, 9]}, "top.span[1]"),
    ({"count": 3, "span": 9}, "top.span"),
    ({"count": 3, "span": [0, 1, 2]}, "top.span"),
    ({"count": 3, "gap": [1.5, 2]}, "top.gap[0]"),
    ({"count": 3, "items": [1, "x"]}, "top.items[1]"),
    ({"count": 3, "items": 1}, "top.items"),
    ({"count": 3, "inner": {"lr": 2}}, "top.inner.lr"),
    ({"count": 3, "inner": {"mode": "c"}}, "top.inner.mode"),
    ({"count": 3, "inner": {"mode": True}}, "top.inner.mode"),
    ({"count": 3, "inner": []}, "top.inner"),
    ({"count": 3, "table": {"a": "x"}}, "top.table.a"),
    ({"count": 3, "table": [1]}, "top.table"),
    ({"count": 3, "extra": {"lr": -1}}, "top.extra.lr"),
    ({"count": 7}, "top.count"),
])
def test_each_refusal_names_its_dotted_key(data, field):
    assert _field_of(data) == field


def test_a_key_of_the_same_name_elsewhere_does_not_inherit_a_range():
    """The old range table was keyed by the leaf's name wherever it stood: `lr` here would
    have been held to [1e-8, 10]. Now only the field that declares a range has one."""
    assert parse(Outer, {"count": 1, "lr": 50}, "").lr == 50.0
    # and in the presets: the SGC loss's `resolution` and the phase's `resolution` have their own
    assert resolve("draft", {"phase3.losses.sgc": {"weight": 0.0, "resolution": 16}}).phase3.losses["sgc"].resolution == 16


def test_every_preset_and_mode_parses_and_every_setting_is_typed():
    for preset in preset_names():
        for mode in MODES:
            cfg = resolve(preset, mode=mode)
            assert isinstance(cfg, Config) and (cfg.source is None) == (mode == "generate")
            data = resolve_data(preset, mode=mode)
            # every section of the JSON is a field of the typed config, and back
            assert set(data) <= {f.name for f in fields(Config)}


def test_a_mode_sets_a_value_for_one_preset_only(monkeypatch):
    """presets/modes/edit.json gives draft's phase II the steps an edit needs (its "presets"
    table); other presets and modes keep theirs, and a job's override still has the last word."""
    import json

    from backend.pipeline import config
    from backend.pipeline.preset_files import PRESET_DIR

    table = json.loads((PRESET_DIR / "modes" / "edit.json").read_text())["presets"]
    assert resolve("draft", mode="edit").phase2.iterations == table["draft"]["phase2"]["iterations"] == 800
    assert resolve("draft").phase2.iterations == 400
    for preset in set(preset_names()) - set(table):
        assert resolve(preset, mode="edit").phase2.iterations == resolve(preset).phase2.iterations
    assert resolve("draft", {"phase2.iterations": 50}, mode="edit").phase2.iterations == 50
    # a table for a preset that does not exist is refused, naming where
    monkeypatch.setattr(config, "load_mode", lambda mode: {"presets": {"drafty": {"phase2": {"iterations": 1}}}})
    with pytest.raises(ConfigError) as err:
        resolve("draft", mode="edit")
    assert err.value.field == "presets" and "drafty" in str(err.value)


def test_a_declared_setting_the_preset_leaves_out_may_be_overridden():
    assert resolve("draft").phase1.field.features == 2  # the default, written once on FieldConfig
    assert resolve("draft", {"phase1.field.features": 4}).phase1.field.features == 4
    with pytest.raises(ConfigError) as err:
        resolve("draft", {"phase1.field.featurez": 4})
    assert err.value.field == "phase1.field.featurez"
    with pytest.raises(ConfigError) as err:
        resolve("draft", {"source.max_faces": 1000})  # generate has no source section
    assert err.value.field == "source.max_faces"
