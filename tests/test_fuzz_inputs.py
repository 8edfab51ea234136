"""Property-based fuzzing of everything a job can carry: the job schema (read_job and
the input files behind it), the wire protocol's lines (decode) and the HTTP API (a real
make_server on 127.0.0.1). Cases are generated from the schema and mutated (wrong types,
NaN / Infinity / huge / negative numbers, empty and 10 MB strings, control characters,
unicode, NUL bytes, absolute and `..` paths, symlinks out of the folder, zero-byte,
truncated and wrong-magic images, audio and meshes, duplicate keys). Each case must be
refused with its field named, or accepted; never another exception, a write outside the
job folder, or a dead server.

Fixed seed (derandomize) and a short budget in `make test`; CONJURE_FUZZ_EXAMPLES=N runs
N cases a property instead (a longer search)."""
import http.client
import json
import os
import string
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import protocol
from backend.job import MODES, read_job
from backend.errors import InputFileError
from backend.pipeline.input_files import check_input_files

EXAMPLES = int(os.environ.get("CONJURE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NUMBERS = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")), st.just(1e308),
                    st.just(-1e308), st.integers(-10 ** 30, 10 ** 30), st.floats(allow_nan=True), st.just(-1),
                    st.just(0), st.booleans())
TEXTS = st.one_of(st.text(max_size=40), st.just(""), st.just("x" * (10 << 20)),
                  st.text(alphabet=st.characters(max_codepoint=31), max_size=20), st.just("\x00"),
                  st.just("é🙂\u202e"), st.just("../../../etc/passwd"), st.just("/etc/passwd"))
VALUES = st.one_of(NUMBERS, TEXTS, st.none(), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A job folder with one good file of each kind and bad ones beside them; a symlink
    that points out of the folder; a file outside it."""
    import soundfile as sf
    import trimesh
    from PIL import Image

    root = tmp_path_factory.mktemp("fuzz")
    base = root / "job"
    base.mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(base / "good.png")
    sf.write(base / "good.wav", np.zeros(8000, np.float32), 16000)
    trimesh.creation.box().export(base / "good.glb")
    png, wav, glb = ((base / n).read_bytes() for n in ("good.png", "good.wav", "good.glb"))
    for kind, data in (("png", png), ("wav", wav), ("glb", glb)):
        (base / f"empty.{kind}").write_bytes(b"")
        (base / f"truncated.{kind}").write_bytes(data[: len(data) // 3])
    (base / "wrongmagic.png").write_bytes(wav)
    (base / "wrongmagic.wav").write_bytes(png)
    (base / "wrongmagic.glb").write_bytes(png)
    (base / "tiny.png").write_bytes(_png(2, 2))
    (root / "outside.png").write_bytes(png)
    (base / "link.png").symlink_to(root / "outside.png")
    return base


def _png(w: int, h: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(out, "PNG")
    return out.getvalue()


FILES = st.sampled_from(["good.png", "good.wav", "good.glb", "empty.png", "empty.wav", "empty.glb",
                         "truncated.png", "truncated.wav", "truncated.glb", "wrongmagic.png", "wrongmagic.wav",
                         "wrongmagic.glb", "tiny.png", "link.png", "missing.png", "../outside.png"])
# (dotted field, how to set it on a job) for every field a job has
FIELDS = ["version", "mode", "prompt", "prompt.text", "prompt.images", "prompt.images[0]", "prompt.audio",
          "prompt.weights", "prompt.weights.text", "prompt.weights.images", "prompt.weights.audio", "style_image",
          "mesh", "preset", "models", "guidance", "oracle", "oracle.target_mesh", "seed", "device", "overrides",
          "allow_downloads", "unknown_key", "prompt.unknown"]


def _set(job: dict, field: str, value) -> None:
    node, *rest = field.replace("[0]", ".0").split(".")
    if not rest:
        job[node] = value
        return
    child = job.setdefault(node, {})
    if rest[0] == "0":
        if not isinstance(child, list) or not child:
            job[node] = child = [None]
        child[0] = value
        return
    if not isinstance(child, dict):
        job[node] = child = {}
    _set(child, ".".join(rest), value)


@st.composite
def jobs(draw):
    """A valid job (a text, image or audio prompt, in any mode), then one to three of its
    fields set to hostile values or to files from the folder."""
    mode = draw(st.sampled_from(MODES))
    job = {"version": 1, "mode": mode, "prompt": {"text": "a red mug"}, "preset": "draft"}
    if mode != "generate":
        job["mesh"] = "good.glb"
    if draw(st.booleans()):
        job["prompt"]["images"] = ["good.png"]
    mutated = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
    for field in mutated:
        value = draw(st.one_of(VALUES, FILES)) if field in ("prompt.images[0]", "prompt.audio", "style_image", "mesh",
                                                             "oracle.target_mesh") else draw(VALUES)
        _set(job, field, value)
    return job, mutated


def _roots(field: str) -> set[str]:
    """The field and each dotted prefix of it (an error may name the enclosing object)."""
    parts = field.replace("[0]", "").split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} | {field}


def _inside(path: str, base: Path) -> bool:
    return Path(path).resolve().is_relative_to(base.resolve())


@FUZZ
@given(case=jobs(), confined=st.booleans())
def test_every_job_field_is_refused_with_its_name_or_accepted(folder, case, confined):
    job, mutated = case
    try:
        valid = read_job(json.loads(json.dumps(job, allow_nan=True)), folder, confined)
        check_input_files(valid)
    except protocol.JobError as exc:
        # the mutated field, an object enclosing it or a key inside it; or a field that a
        # mutation made necessary (a mode's mesh, a prompt emptied, the oracle's target)
        named = set().union(*map(_roots, mutated)) | {"prompt", "mesh", "style_image", "oracle.target_mesh"}
        assert any(exc.field.split("[")[0].startswith(n) for n in named), (exc.field, mutated, str(exc))
        assert exc.field in str(exc)
        return
    # accepted: a job that can start; every number finite, files readable, and a remote
    # job's files inside its folder
    data = valid.to_json()
    assert protocol.first_unusable({k: v for k, v in data.items() if k != "overrides"}) is None
    assert all(0 <= w <= 100 for w in data["prompt"]["weights"].values())
    for _, path in valid.inputs():
        assert Path(path).is_file()
        if confined:
            assert _inside(path, folder)


@pytest.mark.parametrize("literal,field", [("NaN", "prompt.weights.text"), ("Infinity", "prompt.weights.text"),
                                           ("-Infinity", "prompt.weights.text"), ("1e400", "prompt.weights.text"),
                                           ("1e308", "prompt.weights.text"), ("-0.5", "prompt.weights.text"),
                                           ("NaN", "seed")])
def test_non_finite_and_absurd_numbers_from_a_job_file_are_refused_naming_the_field(folder, literal, field):
    text = ('{"version": 1, "prompt": {"text": "a mug", "weights": {"text": %s}}}' % literal if field != "seed"
            else '{"version": 1, "prompt": {"text": "a mug"}, "seed": %s}' % literal)
    with pytest.raises(protocol.JobError) as err:
        read_job(protocol.loads(text), folder)
    assert err.value.field == field


def test_duplicate_keys_are_refused_not_silently_last_wins():
    with pytest.raises(protocol.DuplicateKey, match="'preset'"):
        protocol.loads('{"version": 1, "preset": "draft", "preset": "high"}')
    line = '{"v": 1, "type": "ping", "type": "shutdown"}'
    with pytest.raises(protocol.ProtocolError, match="duplicate key 'type'"):
        protocol.decode(line, protocol.CLIENT_TYPES)


def test_unusable_input_files_name_their_field_and_say_what_to_give(folder):
    for name, field in (("truncated.png", "prompt.images[0]"), ("wrongmagic.wav", "prompt.audio"),
                        ("empty.glb", "mesh"), ("tiny.png", "prompt.images[0]")):
        raw = {"version": 1, "mode": "edit" if field == "mesh" else "generate", "mesh": "good.glb",
               "prompt": {"text": "a mug"}}
        _set(raw, field, name)
        job = read_job(raw, folder)
        with pytest.raises(InputFileError) as err:
            check_input_files(job)
        assert err.value.field == field and name in str(err.value) and err.value.hint


LINES = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet=string.printable, max_size=200),
    st.builds(lambda m: json.dumps(m, allow_nan=True),
              st.fixed_dictionaries({"v": st.one_of(st.just(1), VALUES),
                                     "type": st.one_of(st.sampled_from(protocol.CLIENT_TYPES), VALUES)},
                                    optional={"id": VALUES, "job": VALUES, "out_dir": VALUES, "base_dir": VALUES,
                                              "action": st.one_of(st.sampled_from(protocol.MODEL_ACTIONS), VALUES),
                                              "roles": VALUES, "x": NUMBERS})),
    st.just("[" * 100_000), st.just('{"v": 1, "type": "ping", "n": 1e999}'))


@FUZZ
@given(line=LINES)
def test_protocol_lines_decode_or_are_refused(line):
    try:
        msg = protocol.decode(line, protocol.CLIENT_TYPES)
    except protocol.ProtocolError:
        return
    assert msg["type"] in protocol.CLIENT_TYPES
    assert protocol.first_unusable({k: v for k, v in msg.items() if k != "job"}) is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from backend.server import http as server_http

    root = tmp_path_factory.mktemp("http")
    srv = server_http.make_server("127.0.0.1", 0, root / "jobs", "fuzz-token")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, root
    srv.shutdown()
    srv.server_close()
    srv.service.close(wait=False)


def _request(srv, method: str, path: str, body: bytes | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    headers = {"Authorization": "Bearer fuzz-token"}
    if body is not None:
        headers["Content-Length"] = str(len(body))
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


BODIES = st.one_of(
    st.binary(max_size=100),
    st.builds(lambda d: json.dumps(d, allow_nan=True).encode(),
              st.fixed_dictionaries({}, optional={"id": st.one_of(st.text(max_size=70), VALUES),
                                                  "job": st.one_of(VALUES, jobs().map(lambda c: c[0])),
                                                  "files": st.one_of(VALUES, st.dictionaries(
                                                      st.one_of(st.just("../x.png"), st.just("/abs.png"),
                                                                st.text(max_size=10)), VALUES, max_size=2)),
                                                  "priority": VALUES})),
    st.just(b'{"id": "dup", "id": "dup2"}'))
PATHS = st.one_of(st.sampled_from(["/jobs", "/jobs/x/cancel", "/free", "/jobs/../../etc/cancel"]),
                  st.builds(lambda q: "/jobs/x/events?" + q, st.text(alphabet=string.ascii_letters + "=&.-0123456789",
                                                                     max_size=30)),
                  st.just("/jobs/x/events?wait=nan"), st.just("/jobs/x/events?wait=inf&after=-5"))


@FUZZ
@given(method=st.sampled_from(["GET", "POST"]), path=PATHS, body=BODIES)
def test_http_requests_are_answered_and_stay_in_the_jobs_folder(server, method, path, body):
    srv, root = server
    before = {p for p in root.rglob("*") if "jobs" not in p.relative_to(root).parts[:1]}
    # a job that passes is queued and fails on the models (offline, none cached): quick
    status = _request(srv, method, path, body if method == "POST" else None)
    assert status < 500
    assert _request(srv, "GET", "/hello", None) == 200  # still serving
    assert {p for p in root.rglob("*") if "jobs" not in p.relative_to(root).parts[:1]} == before
