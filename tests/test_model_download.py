"""Model downloads against a hub on 127.0.0.1 (tests/hub_mirror.py) serving the tiny models
in the hub's file layout, plus a stand-in ImageBind checkpoint at its own address: only
the files the loaders read are fetched, with progress; a cancelled download resumes with a
Range request; a checksum mismatch or too little free space is refused with nothing half
written; licences are asked once; afterwards a job runs with downloads switched off."""
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.models import cached, download as dl
from backend.models.catalog import select_files
from backend.errors import ModelNotAvailable
from backend.models.store import ModelStore
from backend.models.roles import default_id, role as find_role
from backend.models.tiny import build_tiny

from .helpers import ROOT
from .hub_mirror import STANDIN, HubMirror, download_env, published, tiny_mirror

# What the draft preset's text-to-3D job loads: Stable unCLIP and ImageBind (+ its tokenizer).
JOB_ROLES = ["imagebind", "imagebind_tokenizer", "unclip"]
FAST = {"phase1.iterations": 2, "phase2.iterations": 2, "phase3.iterations": 2, "phase1.resolution": 32,
        "phase1.samples": 16, "phase2.resolution": 32, "phase3.resolution": 32, "phase2.batch": 1,
        "phase3.batch": 1, "phase2.tet_res": 16, "phase2.density_threshold": 5.0, "export.texture_size": 64,
        "export.preview_resolution": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), ["unclip", "imagebind", "dino"])


@pytest.fixture
def hub(tiny):
    with tiny_mirror(tiny) as mirror:
        yield mirror


@pytest.fixture
def online(monkeypatch, tmp_path, hub, tiny):
    """In-process: downloads on (the suite runs with HF_HUB_OFFLINE=1), the caches in tmp_path."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CONJURE_CACHE", str(tmp_path / "conjure"))
    monkeypatch.setenv("CONJURE_IMAGEBIND_URL", hub.url + STANDIN)
    monkeypatch.setenv("CONJURE_IMAGEBIND_SHA256", _sha(tiny / "imagebind" / "imagebind_huge.pth"))
    return hub


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetched(hub: HubMirror) -> list[str]:
    return [path for method, path, _ in hub.log if method == "GET" and "/api/" not in path]


def _env(tmp_path: Path, hub: HubMirror, tiny: Path, offline: bool) -> dict:
    return download_env(tmp_path, hub, tiny, offline)


def test_loaders_files_only(tiny):
    # Stable unCLIP as published (fp16 variants, pickles, the .ckpt originals, the card, the
    # image tower that belongs to the "clip" role): on a CPU machine, the float32 safetensors
    # of the parts the loaders read, one weights file a folder
    chosen = select_files(find_role("unclip").files, list(published("unclip", tiny)))
    weights = {"text_encoder": "model.safetensors", "unet": "diffusion_pytorch_model.safetensors",
               "vae": "diffusion_pytorch_model.safetensors", "image_normalizer": "diffusion_pytorch_model.safetensors"}
    assert chosen == sorted(["model_index.json", "scheduler/scheduler_config.json",
                             "image_noising_scheduler/scheduler_config.json",
                             *(f"tokenizer/{f}" for f in ("merges.txt", "special_tokens_map.json",
                                                          "tokenizer_config.json", "vocab.json")),
                             *(f"{folder}/config.json" for folder in weights),
                             *(f"{folder}/{name}" for folder, name in weights.items())])
    # a .bin is taken only where a folder has no safetensors
    dino = ["config.json", "pytorch_model.bin"]
    assert select_files(find_role("dino").files, dino) == dino
    # TAESD's repository also holds the original repo's .pth halves and a .bin copy: only the diffusers files
    taesd = ["README.md", "config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors",
             "taesd_decoder.pth", "taesd_encoder.pth"]
    assert select_files(find_role("taesd").files, taesd) == ["config.json", "diffusion_pytorch_model.safetensors"]


def _loaders_bytes(role: str, tiny: Path) -> dict[str, bytes]:
    """The files of a role's published repository that a CPU machine downloads."""
    repo = published(role, tiny)
    return {name: repo[name] for name in select_files(find_role(role).files, list(repo))}


def test_download_for_a_job_then_the_job_runs_offline(tmp_path, hub, tiny):
    job = {"version": 1, "prompt": {"text": "a red chair"}, "preset": "draft", "overrides": FAST, "device": "cpu"}
    (tmp_path / "job.json").write_text(json.dumps(job))
    cli = [sys.executable, "-m", "backend", "models"]
    # a fresh machine: the job is refused before work, every missing role named at once
    proc = subprocess.run([sys.executable, "-m", "backend", "run", str(tmp_path / "job.json"), "--out",
                           str(tmp_path / "before")], cwd=ROOT, env=_env(tmp_path, hub, tiny, True),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "imagebind, imagebind_tokenizer, unclip" in proc.stdout + proc.stderr
    proc = subprocess.run(cli + ["download", "--for-job", str(tmp_path / "job.json"), "--accept-licences", "--json"],
                          cwd=ROOT, env=_env(tmp_path, hub, tiny, False), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    done = [e["bytes_done"] for e in events]
    unclip, tokenizer = _loaders_bytes("unclip", tiny), _loaders_bytes("imagebind_tokenizer", tiny)
    total = sum(map(len, unclip.values())) + sum(map(len, tokenizer.values())) \
        + (tiny / "imagebind" / "imagebind_huge.pth").stat().st_size
    assert done == sorted(done) and done[-1] == total and all(e["bytes_total"] == total for e in events)
    fetched = _fetched(hub)
    assert not any(p.endswith((".fp16.safetensors", ".bin", "README.md")) for p in fetched)
    assert len(fetched) == len(unclip) + len(tokenizer) + 1  # unclip, tokenizer files, checkpoint
    # the stand-in is the tiny model, not the huge one: its config goes beside it
    (tmp_path / "conjure" / "imagebind" / "config.json").write_text((tiny / "imagebind" / "config.json").read_text())
    status = subprocess.run(cli + ["status", "--json"], cwd=ROOT, env=_env(tmp_path, hub, tiny, True),
                            capture_output=True, text=True, timeout=600)
    rows = {r["role"]: r for r in json.loads(status.stdout)}
    assert all(rows[r]["present"] for r in JOB_ROLES) and not rows["sd"]["present"]
    assert rows["unclip"]["size_bytes"] == sum(map(len, unclip.values()))
    assert rows["imagebind"]["licence"].startswith("CC-BY-NC 4.0")
    n = len(hub.log)
    proc = subprocess.run([sys.executable, "-m", "backend", "run", str(tmp_path / "job.json"), "--out",
                           str(tmp_path / "out")], cwd=ROOT, env=_env(tmp_path, hub, tiny, True),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "result.glb").is_file() and len(hub.log) == n  # offline: nothing asked of the hub


def test_cancelled_download_resumes_with_a_range_request(online, tiny):
    p = dl.plan(["unclip"])

    def cancel() -> bool:  # once a file has its first 1 MiB chunk: the UNet's weights (3.2 MB)
        return any(part.stat().st_size >= 1 << 20 for part in Path(cached.hub_cache()).rglob("*.part"))

    with pytest.raises(dl.DownloadCancelled, match="unet/diffusion_pytorch_model.safetensors"):
        dl.download(p, lambda e: None, cancel)
    again = dl.plan(["unclip"])
    partial = [t for t in again.tasks if t.done]
    assert len(partial) == 1 and 0 < partial[0].done < partial[0].size
    n = len(online.log)
    events: list[dict] = []
    dl.download(again, events.append)
    resumed = [(path, rng) for method, path, rng in online.log[n:] if path.endswith(partial[0].name)]
    assert resumed[-1][1] == f"bytes={partial[0].done}-"
    assert events[-1]["bytes_done"] == events[-1]["bytes_total"] == again.total
    fetched = Path(cached.role_status("unclip")["where"]) / partial[0].name
    assert fetched.read_bytes() == (tiny / "unclip" / partial[0].name).read_bytes()
    assert not list(Path(cached.hub_cache()).rglob("*.part"))


def test_checksum_mismatch_is_refused_and_nothing_is_left_half_written(online, monkeypatch):
    monkeypatch.setenv("CONJURE_IMAGEBIND_SHA256", "0" * 64)
    p = dl.plan(["imagebind"])
    with pytest.raises(dl.DownloadError, match="SHA-256"):
        dl.download(p, lambda e: None)
    folder = cached.url_folder("imagebind")
    assert not (folder / "imagebind_huge.pth").exists() and not (folder / "imagebind_huge.pth.part").exists()


def test_too_little_free_space_is_refused_before_any_download(online, monkeypatch):
    p = dl.plan(["unclip"])
    monkeypatch.setattr(dl, "free_bytes", lambda folder: 1000)
    with pytest.raises(dl.DownloadError, match="not enough free space") as err:
        dl.check_space(p)
    assert "GB free" in str(err.value) and "model folder" in err.value.hint
    assert _fetched(online) == []


def test_licences_are_asked_once(tmp_path, hub, tiny):
    cli = [sys.executable, "-m", "backend", "models", "download", "dino"]
    env = _env(tmp_path, hub, tiny, False)
    refused = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert refused.returncode == 3 and "dino: Apache-2.0" in refused.stderr and _fetched(hub) == []
    assert subprocess.run(cli + ["--accept-licences"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600).returncode == 0
    (tmp_path / "hub" / f"models--{default_id('dino').replace('/', '--')}").rename(tmp_path / "gone")
    again = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert again.returncode == 0 and "licences" not in again.stderr  # accepted once, on this machine


def test_a_partial_copy_counts_as_missing(online):
    dl.download(dl.plan(["dino"]), lambda e: None)
    assert cached.complete("dino")
    weights = next(Path(cached.role_status("dino")["where"]).glob("model.*"))
    weights.unlink()
    status = cached.role_status("dino")
    assert not status["present"] and status["missing"] == ["model.safetensors"]
    with pytest.raises(ModelNotAvailable, match="dino") as err:
        ModelStore("default").check_available({"dino"})
    assert "models download --for-job" in err.value.hint


def test_downloads_switched_off_are_an_error_naming_the_switch(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(dl.DownloadError, match="HF_HUB_OFFLINE"):
        dl.plan(["dino"])


def _until(backend, done, timeout: float = 60.0) -> list[dict]:  # noqa: ANN001
    import time

    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += backend.poll()
        if got and done(got[-1]):
            return got
        time.sleep(0.05)
    raise TimeoutError(got[-5:])


def _stdio_backend(tmp_path: Path, hub: HubMirror, tiny: Path):  # noqa: ANN202
    from backend.client import StdioBackend

    env = {**_env(tmp_path, hub, tiny, True), "PYTHONPATH": str(ROOT)}  # jobs offline; the download goes online
    backend = StdioBackend(sys.executable, tmp_path / "backend.log", cwd=ROOT, env=env)
    backend.wait_hello(120)
    return backend


def test_protocol_models_status_and_download(tmp_path, hub, tiny):
    """The add-on's path: a real stdio backend answers models status, refuses a download
    whose licences were not accepted, then downloads with progress events."""
    backend = _stdio_backend(tmp_path, hub, tiny)
    try:
        backend.models("status")
        status = _until(backend, lambda m: m["type"] == "models_status")[-1]
        rows = {r["role"]: r for r in status["roles"]}
        assert not rows["dino"]["present"] and status["free_bytes"] > 0
        assert status["cache"] == str(tmp_path / "hub")
        backend.models("download", ["dino"])
        refused = _until(backend, lambda m: m["type"] == "error")[-1]
        assert refused["code"] == "licence" and refused["licences"] == [f"dino: Apache-2.0 (https://huggingface.co/"
                                                                        f"{default_id('dino')})"]
        backend.models("download", ["dino"], accept_licences=True)
        msgs = _until(backend, lambda m: m["type"] == "models_status")
        progress = [m for m in msgs if m["type"] == "download"]
        assert progress and progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
        assert [m["status"] for m in msgs if m["type"] == "models_done"] == ["done"]
        assert {r["role"]: r for r in msgs[-1]["roles"]}["dino"]["present"]
    finally:
        backend.close()


def test_protocol_cancel_stops_a_download_that_the_next_one_resumes(tmp_path, tiny):
    # The mirror holds the UNet's weights (3.3 MB) after 1.5 MB: the child has written its
    # first 1 MiB chunk and waits for the second when the cancel comes, on any machine (a
    # cancel timed by progress events could land between two files, with nothing to resume).
    with tiny_mirror(tiny, hold_at=24 << 16) as held:
        backend = _stdio_backend(tmp_path, held, tiny)
        try:
            backend.models("download", ["unclip"], accept_licences=True)
            assert held.held.wait(60)
            parts = lambda: list((tmp_path / "hub").rglob("*.part"))  # noqa: E731
            deadline = time.monotonic() + 30
            while not any(p.stat().st_size >= 1 << 20 for p in parts()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [p.stat().st_size for p in parts()] == [1 << 20]
            backend.models("cancel")
            msgs = _until(backend, lambda m: m["type"] == "models_status")
            held.release()
            assert [m["status"] for m in msgs if m["type"] == "models_done"] == ["cancelled"]
            assert not {r["role"]: r for r in msgs[-1]["roles"]}["unclip"]["present"]
            n = len(held.log)
            backend.models("download", ["unclip"])  # accepted once: no need to say it again
            msgs = _until(backend, lambda m: m["type"] == "models_status")
            assert [m["status"] for m in msgs if m["type"] == "models_done"] == ["done"]
            ranges = [rng for method, _, rng in held.log[n:] if method == "GET" and rng]
            assert ranges == ["bytes=1048576-"]  # resumed from its part, after the first MiB
            assert {r["role"]: r for r in msgs[-1]["roles"]}["unclip"]["present"]
        finally:
            backend.close()
