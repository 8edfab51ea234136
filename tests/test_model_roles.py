"""The model-role registry (backend/models/roles/: one module, one record a role). Every
record is complete and consistent: its hub sources, file groups, licence and published
layout agree; what it names exists (companions, processor configurations, subfolders); its
tiny builder writes a folder its loader loads, with what it says only conditions in it; its
full-size builders are exactly the parts its loader reads. And a role added in one module
of its own (tests/toy_role.py) is picked up by the store, the catalog, the download, the
tiny builds, the listing and the estimator's random networks, with no other file touched."""
import importlib
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from backend.models import cached, download as dl, roles
from backend.models.catalog import HubFiles, URLFile, missing_groups, select_files
from backend.models.licences import licence_lines
from backend.models.processing import ImageProcessing
from backend.models.roles import network, networks, registered, role, with_companions
from backend.models.store import ModelStore
from backend.models.tiny import build_tiny

from .hub_mirror import HubMirror, published

NAMES = [r.name for r in registered()]
KEYS = [key for key, _ in networks()]


def _https(url: str, host: str = "") -> bool:
    return url.startswith(f"https://{host}")


@pytest.mark.parametrize("name", NAMES)
def test_each_record_says_where_its_files_are_consistently(name):
    r = role(name)
    assert r.sources and len(set(r.sources)) == len(r.sources) and r.default == r.sources[0]
    assert r.licence.name and _https(r.licence.url)
    if isinstance(r.files, HubFiles):  # the published layout is the default repository's
        assert r.layout is not None and r.layout.repo == r.default
        assert r.layout.listed_at and all(_https(u, "huggingface.co/") for u in r.layout.listed_at)
        assert missing_groups(r.files, list(r.layout.files)) == []
        assert set(r.layout.classes) <= set(r.layout.files)
        read = select_files(r.files, list(r.layout.files))
        assert not r.subfolder or any(f.startswith(f"{r.subfolder}/") for f in read)  # it holds what is read
    else:  # one file at an address, downloaded into a folder of the Conjure cache
        assert isinstance(r.files, URLFile) and r.layout is None
        assert _https(r.files.url) and r.files.url.endswith(f"/{r.files.filename}") and r.files.env
    for companion in r.companions:
        assert companion != name and role(companion).files
    readers = [other.name for other in registered() if name in other.companions]
    # something loads it: its own network or parts, or the role whose companion it is
    assert r.network is not None or r.parts or readers
    # a role with no tiny build of its own has its files in its reader's
    assert r.tiny is not None or (readers and r.network is None and not r.parts)


def test_orders_are_distinct_and_listings_follow_them():
    orders = [r.order for r in registered()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert with_companions(["reward", "imagebind"]) == ["imagebind", "imagebind_tokenizer", "reward",
                                                       "reward_tokenizer"]
    with pytest.raises(KeyError, match="unknown model role 'nope'"):
        with_companions(["nope"])


@pytest.mark.parametrize("key", KEYS)
def test_each_network_names_a_loader_its_conditioning_and_a_readable_processor(key):
    net = network(key)
    assert callable(net.loader)
    assert net.conditioning == "all" or isinstance(net.conditioning, tuple)
    base = role(key.split("/")[0])
    if isinstance(net.full_size, Mapping):
        assert net.full_size and all(callable(b) for b in net.full_size.values())
    else:
        assert net.full_size is None or net.full_size == "tiny" and base.tiny is not None
    if net.processor is not None:
        if net.processor.path is None:  # the processor's defaults at the tower's size
            assert net.processor.vendored is None
        else:  # published in its role's repository, and vendored in a form the store reads
            assert net.processor.path in base.layout.files and base.files.wants(net.processor.path)  # fetched
            assert ImageProcessing(net.processor.published_config()).processor is not None


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> ModelStore:
    return ModelStore(str(build_tiny(tmp_path_factory.mktemp("tiny"))))


@pytest.mark.parametrize("key", KEYS)
def test_each_tiny_build_is_a_folder_the_loader_loads(tiny_store, key):
    net = network(key)
    obj = tiny_store.get(key)
    if isinstance(net.conditioning, tuple):  # what only conditions is a module of what it loads
        assert all(isinstance(getattr(obj, part), torch.nn.Module) for part in net.conditioning)
    if net.processor is not None:  # read from the tiny folder, where its repository has it
        assert tiny_store.image_processing(key).processor is not None


def _recording_store(tmp_path: Path):  # noqa: ANN202 (a RandomStore)
    """The estimator's store of fake full-size networks, recording by network key the names
    its loaders ask the full-size builders for (`asked`)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from backend.perf.networks import RandomStore

    class Recording(RandomStore):
        def _builder(self, key: str, name: str):  # noqa: ANN202
            self.asked.setdefault(key, set()).add(name)
            return super()._builder(key, name)

    store = Recording(torch.device("cpu"), tmp_path, FakeTensorMode(allow_non_fake_inputs=True))
    store.asked = {}
    return store


def test_each_full_size_builder_is_exactly_what_its_loader_reads(tmp_path):
    """Built as fake tensors (shapes, no memory), through the loaders' own code."""
    store = _recording_store(tmp_path)
    for key, net in networks():
        if net.full_size is not None:
            store.get(key)
    full = {key: set(net.full_size) for key, net in networks() if isinstance(net.full_size, Mapping)}
    assert store.asked == full
    # a "tiny" network runs its tiny build
    assert all(Path(store.location(key)).is_dir() for key, net in networks() if net.full_size == "tiny")


@pytest.fixture
def toy():
    """tests/toy_role.py imported: its role registered, for this test only."""
    registered()  # the built-in roles first
    saved = dict(roles._ROLES)
    sys.modules.pop("tests.toy_role", None)
    importlib.import_module("tests.toy_role")
    yield role("toy")
    roles._ROLES.clear()
    roles._ROLES.update(saved)
    sys.modules.pop("tests.toy_role", None)


def test_a_role_added_in_one_module_is_listed_built_loaded_and_released(toy, tmp_path, monkeypatch):
    from backend.server.model_service import status_message

    assert [r.name for r in registered()][-1] == "toy" and with_companions(["toy"]) == ["toy"]
    assert licence_lines(["toy"]) == ["toy: MIT (https://huggingface.co/conjure-tests/toy-vit)"]
    assert "toy" in [row["role"] for row in status_message()["roles"]]
    tiny = build_tiny(tmp_path / "tiny", ["toy"])
    store = ModelStore(str(tiny))
    store.offload = True  # parking keeps the books on a CPU too
    model = store.get("toy")
    assert model.config.hidden_size == 16 and store.image_processing("toy").crop is None
    assert store.image_processing("toy").output_size(40, 50) == (16, 16)  # the processor's 224² scaled to 16²
    assert store.loaded_on_device() == ["toy"]
    store.release_conditioning()  # it only conditions: it leaves the device
    assert store.loaded_on_device() == []
    # built on first use by a tiny store
    monkeypatch.setenv("CONJURE_CACHE", str(tmp_path / "cache"))
    assert ModelStore("tiny").get("toy").config.hidden_size == 16


def test_a_role_added_in_one_module_is_downloaded_and_loaded_offline(toy, tmp_path, monkeypatch):
    from huggingface_hub import constants

    tiny = build_tiny(tmp_path / "tiny", ["toy"])
    repo = published("toy", tiny)
    with HubMirror({toy.default: repo}) as mirror:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", mirror.url)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        p = dl.plan(["toy"], half=False)
        dl.download(p, lambda e: None)
    assert sorted(t.name for t in p.tasks) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cached.role_status("toy")["present"]
    loaded = ModelStore("default").get("toy").state_dict()
    built = ModelStore(str(tiny)).get("toy").state_dict()
    assert loaded.keys() == built.keys() and all(torch.equal(loaded[k], built[k]) for k in built)


def test_a_role_added_in_one_module_has_its_full_size_network_in_the_estimator(toy, tmp_path):
    store = _recording_store(tmp_path)
    model = store.get("toy")
    assert model.config.hidden_size == 64 and store.asked == {"toy": {"model"}}
    assert store.image_processing("toy").output_size(300, 400) == (224, 224)  # as vendored, full size
