"""The tiny models and the test hub mirror against each role's repository as published
(each role record's layout, backend/models/roles/: file lists taken from the repositories'
own pages, cited there),
and the fp16 weight variants a CUDA machine fetches and loads instead of float32.

These would have caught: the catalog asking Zero-1-to-3 XL for `cc_projection/` (its
repository has `clip_camera_projection/`, class CLIPCameraProjection, keys proj.*), tiny
folders with the IP-Adapter and CLIP towers outside the subfolders their repositories use,
and tokenizers that only ever loaded from tokenizer.json (Stable Diffusion's and CLIPSeg's
repositories publish vocab.json + merges.txt without one)."""
import json
from pathlib import Path

import pytest
import torch

from backend.models import cached, download as dl
from backend.models.catalog import missing_groups, select_files
from backend.models.roles import default_id, registered, role as find_role
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny
from backend.models.variants import weight_kind, weights_variant

from .hub_mirror import HubMirror, folder_files, published, tiny_folder, tiny_repos

# The roles read from the hub, each in its repository's published layout.
HUB_ROLES = sorted(r.name for r in registered() if r.layout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


def _tiny_files(tiny: Path, role: str) -> dict[str, bytes]:
    files = folder_files(tiny_folder(tiny, role))
    if find_role(role).tiny is None:  # a tokenizer in the folder of the role that reads it
        files = {k: v for k, v in files.items() if "token" in k or k in ("vocab.json", "merges.txt")}
    return files


def _named_class(data: bytes, name: str) -> str:
    cfg = json.loads(data)
    if name.endswith("tokenizer_config.json"):
        return cfg["tokenizer_class"]
    return cfg.get("_class_name") or cfg["architectures"][0]


@pytest.mark.parametrize("role", HUB_ROLES)
def test_the_catalog_finds_every_file_group_in_the_published_repository(role):
    layout, files = find_role(role).layout, find_role(role).files
    assert missing_groups(files, list(layout.files)) == []
    for half in (False, True):  # one weights file a folder, whichever precision is fetched
        chosen = select_files(files, list(layout.files), half)
        folders = [str(Path(f).parent) for f in chosen if weight_kind(f)]
        assert len(folders) == len(set(folders)), chosen


@pytest.mark.parametrize("role", HUB_ROLES)
def test_tiny_folders_have_the_published_names_and_config_classes(tiny, role):
    own = _tiny_files(tiny, role)
    layout = find_role(role).layout
    extra = sorted(n for n in own if n not in layout.files and not n.endswith("tiny.json"))
    if role == "reward_tokenizer":  # the CLIP-H copy we could list publishes no merges.txt
        extra = [n for n in extra if n != "merges.txt"]
    assert extra == [], f"{role}: tiny files the published repository does not have"
    # everything a loader reads is a real tiny file (no placeholder), at either precision
    served = published(role, tiny)
    for half in (False, True):
        for name in select_files(find_role(role).files, list(layout.files), half):
            assert not served[name].startswith(b"published, not read"), f"{role}: {name}"
    for name, cls in layout.classes.items():
        if name in own:
            assert _named_class(own[name], name) == cls, name


def test_the_mirror_lists_exactly_each_published_repository(tiny):
    repos = tiny_repos(tiny)
    layouts = [find_role(role).layout for role in HUB_ROLES]
    assert set(repos) == {layout.repo for layout in layouts}
    for layout in layouts:
        assert sorted(repos[layout.repo]) == sorted(layout.files)


def test_tokenizers_load_from_vocab_and_merges_alone(tiny):
    from transformers import CLIPTokenizer

    assert not (tiny / "sd" / "tokenizer" / "tokenizer.json").exists()
    bpe = CLIPTokenizer.from_pretrained(tiny / "sd" / "tokenizer")
    fast = CLIPTokenizer.from_pretrained(tiny / "imagebind" / "tokenizer")  # with tokenizer.json
    assert len(bpe) == len(fast) == 519  # 512 bytes (and end-of-word forms), 5 merges, 2 specials
    assert bpe("the mug's handle").input_ids == fast("the mug's handle").input_ids


def test_zero123_camera_projection_loads_from_the_published_names(tiny):
    comps = ModelStore(str(tiny)).get("zero123")
    state = comps.cc_projection.state_dict()
    assert sorted(state) == ["proj.bias", "proj.weight"] and state["proj.weight"].shape == (768, 772)
    cfg = json.loads((tiny / "zero123" / "clip_camera_projection" / "config.json").read_text())
    # as published (ashawkey/zero123-xl-diffusers clip_camera_projection/config.json, vendored)
    assert (cfg["embedding_dim"], cfg["additional_embeddings"]) == (768, 4)


def _online(monkeypatch, tmp_path: Path, mirror: HubMirror) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", mirror.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CONJURE_CACHE", str(tmp_path / "conjure"))


@pytest.mark.parametrize("half", [True, False])
def test_a_gpu_machine_fetches_and_loads_the_fp16_variants(monkeypatch, tmp_path, tiny, half):
    repo = published("unclip", tiny)
    with HubMirror({default_id("unclip"): repo}) as mirror:
        _online(monkeypatch, tmp_path, mirror)
        p = dl.plan(["unclip"], half=half)
        dl.download(p, lambda e: None)
    weights = sorted(t.name for t in p.tasks if weight_kind(t.name))
    folders = ["image_normalizer", "text_encoder", "unet", "vae"]
    stems = {"text_encoder": "model"}
    kind = ".fp16.safetensors" if half else ".safetensors"
    assert weights == [f"{f}/{stems.get(f, 'diffusion_pytorch_model')}{kind}" for f in folders]
    full_bytes = sum(len(repo[w.replace(".fp16.", ".")]) for w in weights)
    fetched_bytes = sum(t.size for t in p.tasks if weight_kind(t.name))
    if half:  # half the bytes, less the safetensors headers
        assert 0.49 < fetched_bytes / full_bytes < 0.51
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cached.complete("unclip")
    # the store reads what is there: in fp16 on CUDA the variant; on this CPU the variant when
    # it is the only copy (upcast), else the float32 file
    store = ModelStore("default")
    assert weights_variant(default_id("unclip"), "unet", half=True) == ("fp16" if half else None)
    assert weights_variant(default_id("unclip"), "unet", half=False) == ("fp16" if half else None)
    unet = store.get("unclip").unet
    from safetensors.torch import load

    expected = load((tiny / "unclip" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    name = "conv_in.weight"
    want = expected[name].half().float() if half else expected[name]
    assert unet.state_dict()[name].dtype == torch.float32 and torch.equal(unet.state_dict()[name], want)


def test_with_both_precisions_on_disk_the_gpu_takes_the_variant_and_the_cpu_the_full_file(tmp_path, tiny):
    folder = tmp_path / "unet"
    folder.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        (folder / name).write_bytes((tiny / "unclip" / "unet" / name).read_bytes())
    assert weights_variant(str(tmp_path), "unet", half=True) is None  # no variant here
    (folder / "diffusion_pytorch_model.fp16.safetensors").write_bytes(
        published("unclip", tiny)["unet/diffusion_pytorch_model.fp16.safetensors"])
    assert weights_variant(str(tmp_path), "unet", half=True) == "fp16"
    assert weights_variant(str(tmp_path), "unet", half=False) is None
