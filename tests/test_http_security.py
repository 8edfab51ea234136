"""The remote server against hostile requests: real `make_server` on 127.0.0.1, raw HTTP
(http.client, so paths, headers and bodies are exactly what an attacker would send). Each
case asserts the exact refusal and that nothing was written outside the job folders."""
import base64
import http.client
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from backend.client import HttpBackend
from backend.job import parse_job
from backend.eval.targets import write_target
from backend.server import http as server_http

from .helpers import self_signed_certificate

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server(tmp_path):
    jobs = tmp_path / "jobs"
    srv = server_http.make_server("127.0.0.1", 0, jobs, TOKEN)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, jobs
    srv.shutdown()
    srv.server_close()
    srv.service.close(wait=False)


def _call(srv, method: str, path: str, body: bytes | dict | list | None = None, headers: dict | None = None,
          ) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.putrequest(method, path, skip_accept_encoding=True)
    sent = {**AUTH, **(headers or {})}
    if data is not None and "Content-Length" not in sent:
        sent["Content-Length"] = str(len(data))
    for k, v in sent.items():
        conn.putheader(k, v)
    conn.endheaders(data)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw)
    except json.JSONDecodeError:
        return resp.status, {"raw": raw}


def _events(srv, job_id: str, key: str, until: str = "error", timeout: float = 30) -> list[dict]:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        status, reply = _call(srv, "GET", f"/jobs/{job_id}/events?after={len(seen)}&wait=2",
                              headers={"X-Conjure-Job-Key": key})
        assert status == 200
        seen += reply["events"]
        if any(e["type"] in (until, "done", "error", "cancelled") for e in seen):
            return seen
    raise AssertionError(f"no {until} event: {seen}")


def _outside(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if "jobs" not in p.relative_to(root).parts[:1]}


@pytest.mark.parametrize("job_id", ["..", ".", "a/b", "../x", "a.b", "", "-x", "x" * 65, "é"])
def test_job_ids_are_plain_names(server, tmp_path, job_id):
    srv, jobs = server
    before = _outside(tmp_path)
    status, reply = _call(srv, "POST", "/jobs", {"id": job_id, "job": {"version": 1}, "files": {}})
    assert status == 400 and "job id" in reply["message"]
    assert _outside(tmp_path) == before and not any(jobs.glob("*")) if jobs.exists() else True


def test_dot_dot_paths_reach_no_file(server, tmp_path):
    srv, jobs = server
    (tmp_path / "secret.txt").write_text("private")
    for path in ("/jobs/../files/events.jsonl", "/jobs/../../secret.txt/files/events.jsonl",
                 "/jobs/x/files/../../../secret.txt", "/jobs/%2e%2e/files/events.jsonl"):
        status, reply = _call(srv, "GET", path)
        assert status == 404, path
        assert b"private" not in json.dumps(reply).encode()


def _submit(srv, job: dict, files: dict | None = None, job_id: str = "job1") -> str:
    status, reply = _call(srv, "POST", "/jobs", {"id": job_id, "job": job, "files": files or {}})
    assert status == 200, reply
    return reply["key"]


@pytest.mark.parametrize("field,job", [
    ("prompt.images[0]", {"prompt": {"text": "x", "images": ["{secret}"]}}),
    ("prompt.images[0]", {"prompt": {"text": "x", "images": ["../../../{name}"]}}),
    ("prompt.audio", {"prompt": {"audio": "{secret}"}}),
    ("style_image", {"mode": "stylize", "mesh": "input00.glb", "style_image": "{secret}", "prompt": {"text": "x"}}),
    ("mesh", {"mode": "edit", "mesh": "{secret}", "prompt": {"text": "x"}}),
    ("mesh", {"mode": "edit", "mesh": "../upload/../../../{name}", "prompt": {"text": "x"}}),
    ("oracle.target_mesh", {"guidance": "oracle", "oracle": {"target_mesh": "{secret}"}}),
    ("models", {"models": "{folder}", "prompt": {"text": "x"}}),
    ("preset", {"preset": "../../x", "prompt": {"text": "x"}}),
])
def test_a_remote_job_reads_only_what_it_uploaded(server, tmp_path, field, job):
    srv, jobs = server
    secret = tmp_path / "server_side.glb"
    write_target("blocks", tmp_path)
    shutil.copy(tmp_path / "blocks.glb", secret)
    text = json.dumps(job).replace("{secret}", str(secret)).replace("{name}", secret.name)
    text = text.replace("{folder}", str(tmp_path))
    files = {"input00.glb": base64.b64encode((tmp_path / "blocks.glb").read_bytes()).decode()}
    key = _submit(srv, {"version": 1, **json.loads(text)}, files)
    err = _events(srv, "job1", key)[-1]
    assert err["type"] == "error" and err["code"] == "invalid_job", err
    assert f"fix the field {field!r}" in err["hint"]
    assert not (jobs / "job1" / "out" / "inputs").exists()  # nothing was copied or run


def test_events_files_and_cancel_are_scoped_to_the_job(server):
    srv, jobs = server
    key_a = _submit(srv, {"version": 1, "prompt": {}}, job_id="a")
    key_b = _submit(srv, {"version": 1, "prompt": {}}, job_id="b")
    assert _events(srv, "a", key_a)[-1]["id"] == "a"
    for headers in ({}, {"X-Conjure-Job-Key": key_b}, {"X-Conjure-Job-Key": ""}):
        for method, path in (("GET", "/jobs/a/events"), ("GET", "/jobs/a/files/events.jsonl"),
                             ("POST", "/jobs/a/cancel")):
            status, reply = _call(srv, method, path, {} if method == "POST" else None, headers)
            assert status == 404 and reply["message"] == "no job 'a' for this client", (method, path, headers)
    assert all(e["id"] == "b" for e in _events(srv, "b", key_b))
    status, _ = _call(srv, "POST", "/jobs", {"id": "a", "job": {"version": 1}, "files": {}})
    assert status == 409  # an id in use is not taken over


def test_event_buffers_are_bounded(monkeypatch, tmp_path):
    monkeypatch.setattr(server_http, "MAX_EVENTS", 3)
    buffer = server_http.JobEvents(tmp_path)
    buffer.open("j")
    for i in range(10):
        buffer({"id": "j", "type": "log", "message": str(i)})
    events, nxt = buffer.since("j", 0, 0)
    assert nxt == 10 and [e["message"] for e in events] == ["7", "8", "9"]
    assert [e["message"] for e in buffer.since("j", 8, 0)[0]] == ["8", "9"]
    buffer({"type": "freed"})  # no job: not kept
    assert buffer.since("j", 10, 0) == ([], 10)


@pytest.mark.parametrize("headers", [{"Authorization": ""}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}])
def test_token_needs_the_bearer_scheme(server, headers):
    srv, _ = server
    status, reply = _call(srv, "GET", "/hello", headers=headers)
    assert status == 401 and reply["message"] == "missing or wrong token"
    assert _call(srv, "GET", "/hello")[0] == 200


@pytest.mark.parametrize("body,headers,status,message", [
    (b'{"id": "x", "job": {}, "files": {"a.png": "!!notbase64"}}', {}, 400, "files.a.png is not base64"),
    (b'[1, 2]', {}, 400, "body must be a JSON object, got list"),
    (b'{}', {"Content-Length": "abc"}, 400, "Content-Length 'abc' is not a byte count"),
    (b'{}', {"Content-Length": "-1"}, 400, "Content-Length '-1' is not a byte count"),
    (b"[" * 200000, {}, 400, "body: " + "[0]" * 32 + ": nested deeper than 32 levels"),
    (b'{"id": "\xff"}', {}, 400, "body is not a JSON object: UnicodeDecodeError"),
    (b'{"id": "x", "job": {}, "files": [1]}', {}, 400, "files must map file names to base64 strings"),
    (b'{"id": "x", "job": {}, "files": {"../a.png": ""}}', {}, 400, "bad file name '../a.png'"),
])
def test_malformed_bodies_get_400_and_the_server_goes_on(server, body, headers, status, message):
    srv, _ = server
    got, reply = _call(srv, "POST", "/jobs", body, headers)
    assert got == status and reply["message"].startswith(message)
    assert _call(srv, "GET", "/hello")[0] == 200


def test_a_bounded_burst_of_parallel_clients_is_answered(server):
    srv, _ = server

    def one(i: int) -> int:
        if i % 3 == 0:
            return _call(srv, "POST", "/jobs", b"[", {})[0]
        return _call(srv, "GET", "/hello", headers={} if i % 3 == 1 else {"Authorization": "x"})[0]

    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(48)))
    assert codes == [[400, 200, 401][i % 3] for i in range(48)]
    assert time.monotonic() - start < 30


def test_non_loopback_without_token_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("CONJURE_TOKEN", raising=False)
    assert server_http.serve_http("0.0.0.0:0") == 2
    assert "needs a token" in capsys.readouterr().err
    assert server_http.serve_http("127.0.0.1:0", tls_cert="c.pem") == 2


def test_client_uploads_any_file_name_under_a_plain_one(server, tmp_path):
    srv, jobs = server
    client = HttpBackend(f"http://127.0.0.1:{srv.server_address[1]}", TOKEN, poll_wait=1.0)
    try:
        for i, name in enumerate(("my photo (1).png", "café.png")):
            Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / name, "PNG")
            # a valid job (kept: it fails later, on the models this offline machine lacks)
            job_id = client.submit(parse_job({"prompt": {"text": "x", "images": [name]}}),
                                   tmp_path, tmp_path / f"out{i}", job_id=f"photo{i}")
            deadline = time.monotonic() + 30  # the upload runs in the background
            while job_id not in client.keys:
                assert time.monotonic() < deadline, client.poll()
                time.sleep(0.05)
            assert (jobs / job_id / "upload" / "input00.png").is_file()
    finally:
        client.close()


def test_an_upload_the_server_refuses_arrives_as_the_jobs_error(server, tmp_path):
    srv, jobs = server
    client = HttpBackend(f"http://127.0.0.1:{srv.server_address[1]}", TOKEN, poll_wait=1.0)
    try:
        (jobs / "taken").mkdir(parents=True)  # the server refuses an id that is in use (409)
        job_id = client.submit(parse_job({"prompt": {"text": "x"}}), tmp_path, tmp_path / "o", job_id="taken")
        deadline = time.monotonic() + 30
        while job_id in client.running:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        err = [m for m in client.poll() if m.get("id") == job_id][-1]
        assert err["type"] == "error" and "HTTP 409" in err["message"] and "could not be sent" in err["message"]
    finally:
        client.close()


def test_https_with_a_self_signed_certificate(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    srv = server_http.make_server("127.0.0.1", 0, tmp_path / "jobs", TOKEN, (str(cert), str(key)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        client = HttpBackend(f"https://127.0.0.1:{port}", TOKEN, cafile=str(cert))
        assert client.capabilities is not None
        client.close()
        with pytest.raises(RuntimeError, match="cannot reach"):  # the system store does not trust it
            HttpBackend(f"https://127.0.0.1:{port}", TOKEN)
    finally:
        srv.shutdown()
        srv.server_close()
        srv.service.close(wait=False)


def test_a_users_file_gives_each_artist_a_token(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"alice": "a" * 16, "bob": "b" * 20}))
    assert server_http.load_users(str(users)) == {"a" * 16: "alice", "b" * 20: "bob"}
    for bad, message in (('{"alice": "short"}', "16\\+ characters"), ('{"a": "' + "x" * 16 + '", "b": "' + "x" * 16
                                                                       + '"}', "share a token"),
                         ("[1]", "16\\+ characters"), ("{", "cannot read it as JSON")):
        users.write_text(bad)
        with pytest.raises(ValueError, match=message):
            server_http.load_users(str(users))
    srv = server_http.make_server("127.0.0.1", 0, tmp_path / "jobs", None, users={"a" * 16: "alice"})
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert _call(srv, "GET", "/hello", headers={"Authorization": "Bearer " + "a" * 16})[0] == 200
        assert _call(srv, "GET", "/hello", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 401
    finally:
        srv.shutdown()
        srv.server_close()
        srv.service.close(wait=False)


def test_a_one_machine_server_has_no_farm_status_and_takes_no_priorities(server):
    srv, jobs = server
    status, reply = _call(srv, "GET", "/status")
    assert status == 404 and "--ray" in reply["hint"]
    status, reply = _call(srv, "POST", "/jobs", {"id": "p1", "job": {}, "files": {}, "priority": "high"})
    assert status == 400 and "priorities need a farm" in reply["message"]
    status, reply = _call(srv, "POST", "/jobs", {"id": "p2", "job": {}, "files": {}, "priority": "urgent"})
    assert status == 400 and "'urgent' is not one of low, normal, high" in reply["message"]
    assert not jobs.exists() or not list(jobs.iterdir())  # refused before any folder was made
