"""The wire protocol without Blender: message validation, the stdio server, the client
against real and misbehaving backend processes, and the HTTP transport."""
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from backend import protocol
from backend.client import HttpBackend, StdioBackend
from backend.job import Job, parse_job
from backend.server.stdio import serve_stdio

from .helpers import ROOT, TINY, oracle_job

ENV = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("line, says", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"v": 99, "type": "ping"}', "protocol version 99"),
    ('{"type": "ping"}', "protocol version None"),
    ('{"v": 1, "type": "explode"}', "unknown message type"),
    ('{"v": 1, "type": "cancel"}', "needs a string \"id\""),
    ('{"v": 1, "type": "submit", "id": "a", "job": 3, "out_dir": "x"}', "submit needs"),
    (b'{"v": 1, "type": "ping", "x": "\xff"}', "not UTF-8"),
    ("x" * (protocol.MAX_LINE + 1), "exceeds"),
])
def test_malformed_messages_are_rejected_with_a_reason(line, says):
    with pytest.raises(protocol.ProtocolError, match=says):
        protocol.decode(line, protocol.CLIENT_TYPES)


def test_encode_decode_round_trip():
    line = protocol.encode({"type": "cancel", "id": "j1"})
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert protocol.decode(line, protocol.CLIENT_TYPES) == {"v": 1, "type": "cancel", "id": "j1"}


def _serve(lines: list[bytes]) -> list[dict]:
    out = io.StringIO()
    serve_stdio(io.BytesIO(b"".join(lines)), out)
    return [json.loads(x) for x in out.getvalue().splitlines()]


def test_stdio_server_survives_garbage_and_huge_lines():
    msgs = _serve([b"garbage\n", b"x" * (protocol.MAX_LINE + 10) + b"\n", b'{"v": 7, "type": "ping"}\n', b"\n",
                   protocol.encode({"type": "ping"}).encode(), protocol.encode({"type": "shutdown"}).encode(),
                   protocol.encode({"type": "ping"}).encode()])
    kinds = [m["type"] for m in msgs]
    assert kinds[0] == "hello" and msgs[0]["capabilities"]["protocol"] == protocol.PROTOCOL_VERSION
    assert kinds[1:] == ["error", "error", "error", "pong"]  # nothing after shutdown
    assert all(m["code"] == "protocol" and m["message"] for m in msgs[1:4])
    assert "too long" in msgs[2]["message"]


def test_stdio_server_answers_every_hostile_line_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    submit = lambda **kw: protocol.encode({"type": "submit", "id": "j", "job": {"version": 1}, **kw}).encode()  # noqa: E731
    msgs = _serve([b"[" * 200000 + b"\n", submit(out_dir=str(tmp_path / "o"), base_dir=123), submit(out_dir=""),
                   submit(out_dir="relative/out"), protocol.encode({"type": "cancel", "id": "nobody"}).encode(),
                   protocol.encode({"type": "ping"}).encode()])
    assert [m["type"] for m in msgs] == ["hello", "error", "error", "error", "error", "error", "pong"]
    assert [m["message"] for m in msgs[1:6]] == [
        "[0]" * 32 + ": nested deeper than 32 levels", "submit's \"base_dir\" must be a path (a string)",
        "submit needs \"job\" (an object) and \"out_dir\" (a non-empty path)",
        "submit's out_dir and base_dir must be absolute paths", "no job 'nobody' to cancel"]
    assert msgs[5]["id"] == "nobody" and list(tmp_path.iterdir()) == []  # nothing written in the cwd


def test_stdio_server_reports_an_invalid_job_by_field(tmp_path):
    msgs = _serve([protocol.encode({"type": "submit", "id": "j", "job": {"version": 1, "mode": "sculpt"},
                                    "out_dir": str(tmp_path / "out")}).encode()])
    err = [m for m in msgs if m["type"] == "error"][0]
    assert err["id"] == "j" and err["code"] == "invalid_job" and "mode" in err["message"] and err["hint"]


def _fake_backend(tmp_path: Path, body: str) -> Path:
    pkg = tmp_path / "fake" / "backend"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(body)
    return pkg.parent


def _wait_for(backend, pred, timeout: float = 120.0) -> list[dict]:
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += backend.poll()
        if any(pred(m) for m in seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"timed out; got {[m['type'] for m in seen]}")


def test_client_reports_garbage_on_stdout_and_a_dying_backend(tmp_path):
    cwd = _fake_backend(tmp_path, "import sys\nprint('Loading weights 100%')\nsys.stdout.flush()\n"
                                  "sys.stderr.write('Traceback: boom\\n')\nsys.exit(3)\n")
    backend = StdioBackend(sys.executable, tmp_path / "log.txt", cwd=cwd)
    msgs = _wait_for(backend, lambda m: m.get("code") == "backend_died")
    assert msgs[0]["code"] == "protocol" and "Loading weights" in msgs[0]["message"]
    died = msgs[-1]
    assert "code 3" in died["message"] and "boom" in died["message"] and "log" in died["hint"]
    with pytest.raises(RuntimeError, match="exited with code 3"):
        backend.wait_hello(timeout=1)
    with pytest.raises(RuntimeError, match="not running"):
        backend.submit(Job(), tmp_path, tmp_path / "out")
    backend.close()


def test_client_rejects_a_backend_of_another_protocol_version(tmp_path):
    cwd = _fake_backend(tmp_path, "print('{\"v\": 2, \"type\": \"hello\"}', flush=True)\nimport time\ntime.sleep(30)\n")
    backend = StdioBackend(sys.executable, tmp_path / "log.txt", cwd=cwd)
    msgs = _wait_for(backend, lambda m: m.get("type") == "error")
    assert "version 2" in msgs[0]["message"] and "reinstall" in msgs[0]["message"]
    backend.close(timeout=1)


@pytest.fixture
def backend(tmp_path):
    b = StdioBackend(sys.executable, tmp_path / "backend.log", cwd=ROOT, env=ENV)
    b.wait_hello(120)
    yield b
    b.close()


def test_real_backend_runs_a_job_then_cancels_one(backend, tmp_path):
    job = oracle_job(tmp_path, overrides=TINY)
    first = backend.submit(parse_job(job), tmp_path, tmp_path / "out1")
    second = backend.submit(parse_job(job), tmp_path, tmp_path / "out2")
    msgs = _wait_for(backend, lambda m: m.get("id") == first and m["type"] in ("done", "error"), 300)
    mine = [m for m in msgs if m.get("id") == first]
    assert [m for m in mine if m["type"] == "queued"][0]["position"] == 0
    assert any(m["type"] == "progress" and m.get("preview") for m in mine)
    result = [m for m in mine if m["type"] == "result"][0]
    assert Path(result["glb"]).is_file() and mine[-1]["type"] == "done"
    queued_second = [m for m in msgs if m.get("id") == second and m["type"] == "queued"]
    assert queued_second and queued_second[0]["position"] == 1
    # The second job is running (or about to): cancel it and it stops within a step.
    backend.cancel(second)
    msgs = _wait_for(backend, lambda m: m.get("id") == second and m["type"] in ("cancelled", "done"), 120)
    assert msgs[-1]["type"] == "cancelled"
    assert (tmp_path / "out2" / "job.json").exists() or "before it started" in msgs[-1]["message"]


def test_killed_backend_gives_an_error_and_keeps_the_job_folder(backend, tmp_path):
    job = oracle_job(tmp_path, overrides={**TINY, "phase1.iterations": 400})
    job_id = backend.submit(parse_job(job), tmp_path, tmp_path / "out")
    _wait_for(backend, lambda m: m.get("type") == "progress", 120)
    backend.proc.kill()
    msgs = _wait_for(backend, lambda m: m.get("code") == "backend_died", 30)
    died = [m for m in msgs if m.get("code") == "backend_died"][0]
    assert died["id"] == job_id and "press Resume" in died["hint"]
    assert (tmp_path / "out" / "events.jsonl").exists() and (tmp_path / "out" / "inputs").is_dir()


def test_http_backend_uploads_inputs_and_downloads_results(tmp_path):
    from backend.server.http import make_server

    server = make_server("127.0.0.1", 0, tmp_path / "remote", "s3cret")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(RuntimeError, match="401"):
            HttpBackend(url, "wrong")
        client = HttpBackend(url, "s3cret", poll_wait=1.0)
        assert client.capabilities["protocol"] == protocol.PROTOCOL_VERSION
        local = tmp_path / "local"
        local.mkdir()
        job_id = client.submit(parse_job(oracle_job(local, overrides=TINY)), local, local / "out")
        msgs = _wait_for(client, lambda m: m.get("id") == job_id and m["type"] in ("done", "error"), 300)
        result = [m for m in msgs if m["type"] == "result"][0]
        assert Path(result["glb"]).parent == local / "out" and Path(result["glb"]).stat().st_size > 1000
        assert (tmp_path / "remote" / job_id / "upload").is_dir()
        client.close()
    finally:
        server.shutdown()
        server.server_close()
        server.service.close(wait=True)


def test_a_dead_backend_is_reported_with_its_exception_not_a_progress_bar(tmp_path):
    backend = StdioBackend.__new__(StdioBackend)  # only the log reader is exercised
    backend.log_path = tmp_path / "backend.log"
    backend.log_path.write_text("Loading weights: 100%|#####| 3/3\nTraceback (most recent call last):\n"
                                '  File "x.py", line 1, in <module>\n    f()\nMemoryError: cannot allocate 2 GB\n'
                                "Loading checkpoint shards:  50%|##   | 1/2\r")
    assert backend._log_tail() == "MemoryError: cannot allocate 2 GB"
    backend.log_path.write_text("starting\nLoading weights: 100%|#####| 3/3\n")
    assert backend._log_tail() == "starting"
