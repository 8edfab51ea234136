"""Install Backend's plan (operators/install_plan.py, no bpy): the torch build for the
machine from what nvidia-smi reports, offline installs from a wheel folder, pip's raw
progress lines."""
from pathlib import Path

from operators.install_plan import TORCH_INDEX, install_commands, pinned_torch, pip_status, torch_build

from .helpers import ROOT

SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.10              Driver Version: 570.86.10      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+"""


def test_torch_build_fits_the_machine():
    assert torch_build("Darwin", None, False) == ("Apple (MPS)", None)  # PyPI's wheel has MPS
    label, index = torch_build("Linux", SMI.format(cuda="12.8"), False)
    assert index == f"{TORCH_INDEX}/cu128" and "12.8" in label
    assert torch_build("Windows", SMI.format(cuda="12.9"), False)[1] == f"{TORCH_INDEX}/cu128"  # newest it runs
    assert torch_build("Linux", SMI.format(cuda="13.1"), True)[1] == f"{TORCH_INDEX}/cu130"
    old, index = torch_build("Linux", SMI.format(cuda="11.4"), False)
    assert index == f"{TORCH_INDEX}/cpu" and "update the driver" in old
    assert torch_build("Linux", None, True)[1].startswith(f"{TORCH_INDEX}/rocm")
    assert torch_build("Linux", None, False) == ("CPU", f"{TORCH_INDEX}/cpu")


def test_install_commands_online_and_from_a_wheel_folder(tmp_path):
    python = tmp_path / "venv" / "bin" / "python"
    torch = pinned_torch(ROOT / "requirements" / "backend.txt")
    assert torch.startswith("torch==")
    online = install_commands(tmp_path / "venv", python, ROOT, "/usr/bin/python3", f"{TORCH_INDEX}/cu128")
    assert online[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")]
    assert online[1][-2:] == ["--upgrade", "pip"]
    assert online[2][-3:] == [torch, "--index-url", f"{TORCH_INDEX}/cu128"]
    assert online[3][-2:] == ["-r", str(ROOT / "requirements" / "backend.txt")]
    assert online[-1] == [str(python), "-m", "backend", "doctor"]
    python.parent.mkdir(parents=True)
    python.touch()  # the environment is there already
    offline = install_commands(tmp_path / "venv", python, ROOT, "/usr/bin/python3", None, Path("/wheels"))
    assert len(offline) == 3 and not any("--upgrade" in c for c in offline)  # no pip upgrade, no venv
    for cmd in offline[:2]:
        assert cmd[-3:] == ["--no-index", "--find-links", "/wheels"] and "--index-url" not in cmd


def test_pip_status_reads_steps_and_raw_progress():
    out = "Collecting torch==2.13.0\n  Downloading torch-2.13.0-cp311-linux_x86_64.whl (800 MB)\n" \
          "Progress 200000000 of 800000000\nProgress 400000000 of 800000000\n"
    step, fraction = pip_status(out)
    assert step.startswith("Downloading torch-2.13.0") and fraction == 0.5
    assert pip_status(out + "Installing collected packages: torch\n") == ("Installing collected packages: torch", None)


# The PyTorch index's page of torch wheels is a PEP 503 simple page: one anchor per wheel,
# the file name (PEP 427, the build as its local version) as the text, '+' quoted in the
# href. These lines follow that form; the builds named are made up for the test.
INDEX_PAGE = "\n".join(
    f'<a href="/whl/{tag}/torch-{v}%2B{tag}-{py}-{py}-{plat}.whl#sha256=00">torch-{v}+{tag}-{py}-{py}-{plat}.whl</a><br/>'
    for v, tag, py, plat in [
        ("2.13.0", "cu126", "cp311", "manylinux_2_28_x86_64"), ("2.13.0", "cu129", "cp311", "manylinux_2_28_x86_64"),
        ("2.13.0", "cu131", "cp311", "manylinux_2_28_x86_64"), ("2.13.0", "cu131", "cp312", "manylinux_2_28_x86_64"),
        ("2.13.0", "cu126", "cp311", "win_amd64"), ("2.13.0", "cpu", "cp311", "manylinux_2_28_x86_64"),
        ("2.13.0", "rocm7.0", "cp311", "manylinux_2_28_x86_64"), ("2.13.0", "rocm6.4", "cp311", "manylinux_2_28_x86_64"),
        ("2.13.0", "cu128", "cp311", "manylinux_2_28_aarch64"), ("2.12.0", "cu132", "cp311", "manylinux_2_28_x86_64")])


def test_the_index_says_which_builds_the_pinned_torch_has():
    from operators.install_plan import index_builds, wheel_platform

    linux = wheel_platform("Linux", "x86_64")
    builds = index_builds(INDEX_PAGE, "2.13.0", "cp311", linux)
    assert builds == ["cpu", "cu126", "cu129", "cu131", "rocm6.4", "rocm7.0"]  # not 2.12's, cp312's or aarch64's
    assert index_builds(INDEX_PAGE, "2.13.0", "cp311", wheel_platform("Windows", "AMD64")) == ["cu126"]
    assert index_builds(INDEX_PAGE, "2.13.0", "cp311", wheel_platform("Linux", "aarch64")) == ["cu128"]
    # the newest CUDA build the driver runs, from what the index has, not the fixed table
    assert torch_build("Linux", SMI.format(cuda="13.0"), False, builds)[1] == f"{TORCH_INDEX}/cu129"
    label, index = torch_build("Linux", SMI.format(cuda="13.2"), False, builds)
    assert index == f"{TORCH_INDEX}/cu131" and "from the index" in label
    assert torch_build("Linux", None, True, builds)[1] == f"{TORCH_INDEX}/rocm7.0"  # 7.0 > 6.4, numerically
    assert "offline table" in torch_build("Linux", SMI.format(cuda="12.8"), False)[0]


def test_query_index_reads_the_page_and_answers_none_offline():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from operators.install_plan import query_index

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = INDEX_PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/whl/torch/"
        assert query_index("2.13.0", "cp311", ("win", "amd64"), url) == ["cu126"]
        assert query_index("9.9.9", "cp311", ("win", "amd64"), url) is None  # nothing for that version
    finally:
        server.shutdown()
        server.server_close()
    assert query_index("2.13.0", "cp311", ("linux", "x86_64"), url, timeout=2) is None  # nobody answers
