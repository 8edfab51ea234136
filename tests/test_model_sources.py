"""Where a role's weights come from when repositories move: each role's ordered hub sources
(Stable unCLIP's community copy first, since Stability AI removed the original), the
fallback to a later source, the error that names every source tried, and PickScore's
tokenizer, which ships apart from its weights. Against the hub on 127.0.0.1
(tests/hub_mirror.py) serving the tiny models."""
from pathlib import Path

import pytest

from backend.models import cached, download as dl
from backend.errors import ModelNotAvailable
from backend.models.store import ModelStore
from backend.models.roles import default_id, registered, role
from backend.models.tiny import build_tiny

from .hub_mirror import HubMirror, folder_files
from backend.models.encoders import reward

REMOVED = "stabilityai/stable-diffusion-2-1-unclip"  # gone from the hub since 2025-11
UNCLIP = default_id("unclip")
UNCLIP_SOURCES = role("unclip").sources
REWARD_TOKENIZER = default_id("reward_tokenizer")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), ["unclip", "reward"])


def _online(monkeypatch, tmp_path: Path, mirror: HubMirror) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", mirror.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CONJURE_CACHE", str(tmp_path / "conjure"))


def _fetch(roles: list[str]) -> dl.Plan:
    p = dl.plan(roles)
    dl.download(p, lambda e: None)
    return p


def test_no_default_id_is_a_removed_repository():
    assert REMOVED not in {r.default for r in registered()}
    assert UNCLIP_SOURCES == ("sd2-community/stable-diffusion-2-1-unclip", REMOVED)
    assert role("clip").sources == UNCLIP_SOURCES  # the image tower ships inside unCLIP
    assert "sd2-community" in role("unclip").licence.url


def test_the_community_copy_answers_first_and_status_says_so(monkeypatch, tmp_path, tiny):
    with HubMirror({UNCLIP: folder_files(tiny / "unclip"),
                    REMOVED: folder_files(tiny / "unclip")}) as mirror:
        _online(monkeypatch, tmp_path, mirror)
        p = _fetch(["unclip"])
        assert {t.repo for t in p.tasks} == {UNCLIP}
        assert not any(REMOVED in path for _, path, _ in mirror.log)  # the second source was never asked
    status = cached.role_status("unclip")
    assert status["present"] and status["source"] == UNCLIP
    assert status["sources"] == list(UNCLIP_SOURCES)


def test_first_source_missing_falls_back_and_the_store_loads_it(monkeypatch, tmp_path, tiny):
    with HubMirror({REMOVED: folder_files(tiny / "unclip")}) as mirror:  # only the old id answers
        _online(monkeypatch, tmp_path, mirror)
        p = _fetch(["unclip"])
        assert {t.repo for t in p.tasks} == {REMOVED}
        assert ("GET", f"/api/models/{UNCLIP}", None) in mirror.log  # asked first
    status = cached.role_status("unclip")
    assert status["present"] and status["source"] == REMOVED
    store = ModelStore("default")
    assert store.location("unclip") == REMOVED and store.available("unclip")
    assert store.get("unclip").image_normalizer is not None  # loaded offline from the fallback's cache


def test_no_source_answering_names_the_role_every_source_and_the_way_out(monkeypatch, tmp_path):
    with HubMirror({}) as mirror:
        _online(monkeypatch, tmp_path, mirror)
        with pytest.raises(dl.DownloadError) as err:
            dl.plan(["unclip"])
    message = str(err.value)
    assert message.startswith("unclip: no source answered; tried ")
    assert all(repo in message for repo in UNCLIP_SOURCES)
    assert "models manifest" in err.value.hint and '"unclip"' in err.value.hint


def test_a_missing_role_offline_names_every_source_tried(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotAvailable) as err:
        ModelStore("default").get("unclip")
    assert all(repo in err.value.hint for repo in UNCLIP_SOURCES) and "models manifest" in err.value.hint


def test_pickscore_loads_its_tokenizer_from_its_real_source(monkeypatch, tmp_path, tiny):
    # As published: PickScore_v1 holds the CLIP-H weights; its README loads the processor
    # (tokenizer) from laion/CLIP-ViT-H-14-laion2B-s32B-b79K.
    files = folder_files(tiny / "reward")
    weights = {k: v for k, v in files.items() if not k.startswith("tokenizer")}
    tokenizer = {k: v for k, v in files.items() if k.startswith("tokenizer")}
    with HubMirror({default_id("reward"): weights, REWARD_TOKENIZER: tokenizer}) as mirror:
        _online(monkeypatch, tmp_path, mirror)
        p = _fetch(["reward"])
        assert {t.repo for t in p.tasks} == {default_id("reward"), REWARD_TOKENIZER}
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    store = ModelStore("default")
    assert store.available("reward")
    score = reward(store, "a red mug")
    import torch
    from transformers import CLIPTokenizer

    # the published tokenizer, not the 2-token vocabulary transformers builds silently when
    # a repository has no tokenizer files
    assert len(store.read_tokenizer("reward", REWARD_TOKENIZER)) == len(CLIPTokenizer.from_pretrained(tiny / "reward"))
    assert score(torch.rand(2, 3, 32, 32)).shape == (2,)


def test_a_tiny_role_is_built_whole_or_not_at_all(tmp_path, monkeypatch):
    """A killed build leaves no folder that looks built; a role another process built
    meanwhile is kept (the second build's copy is dropped)."""
    import dataclasses

    from backend.models import roles, tiny

    def broken(folder):  # noqa: ANN001, ANN202 (a build that dies half-way)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setitem(roles._ROLES, "taesd", dataclasses.replace(role("taesd"), tiny=broken))
    with pytest.raises(KeyboardInterrupt):
        tiny.build_tiny_role(tmp_path, "taesd")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    first = tiny.build_tiny_role(tmp_path, "taesd")
    stamp = sorted(p.name for p in first.iterdir())
    marker = first / "config.json"
    before = marker.read_bytes()
    assert tiny.build_tiny_role(tmp_path, "taesd") == first  # a second build finds it there
    assert sorted(p.name for p in first.iterdir()) == stamp and marker.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["taesd"]  # no scratch folder left
