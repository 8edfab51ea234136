"""Install Backend's plan (operators/install_plan.py, no bpy): refusals before anything
downloads, Windows path lengths from a real wheel's RECORD, the steps (uv, else pip with the
torch build from nvidia-smi), the progress read from pip's and uv's output, and the real
thing: a venv built by those steps from a Python 3.13 and a 3.11 found on this machine, from a
wheel folder of tiny stand-in wheels (offline)."""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path, PureWindowsPath

import pytest

from operators.install_plan import (LONG_PATHS_FIX, LONGEST_WHEEL_PATH, PLATFORMS, PYTHONS, TORCH_INDEX,
                                    WINDOWS_MAX_PATH, InstallPlan, install_status, long_path_refusal,
                                    longest_installed_path, pinned_torch, pins, refusal, torch_build, venv_layout,
                                    windows_uv_cache, windows_venv)

from .helpers import ROOT

SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.10              Driver Version: 570.86.10      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+"""
BACKEND = ROOT / "requirements" / "backend.txt"


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


def test_pins_follow_nested_files():
    """backend.txt = backend-common.txt (numpy-free) + numpy 2; test.txt the same packages with
    numpy 1.26 (the PyPI bpy 4.5 module's)."""
    backend, test = pins(BACKEND), pins(ROOT / "requirements" / "test.txt")
    common = pins(ROOT / "requirements" / "backend-common.txt")
    assert "numpy" not in common and backend == {**common, "numpy": backend["numpy"]}
    assert backend["numpy"].startswith("2.") and test["numpy"].startswith("1.26")
    assert {k: test[k] for k in common} == common and test["uv"] == pins(ROOT / "requirements" / "installer.txt")["uv"]
    assert pinned_torch(BACKEND) == f"torch=={common['torch']}"


def test_refusals_say_why_before_anything_downloads():
    ok = [("Darwin", "arm64", "14.0", (3, 11), ("", "")), ("Darwin", "arm64", "15.3.1", (3, 13), ("", "")),
          ("Windows", "AMD64", "", (3, 13), ("", "")), ("Linux", "x86_64", "", (3, 11), ("glibc", "2.28")),
          ("Linux", "x86_64", "", (3, 13), ("glibc", "2.36"))]
    assert [refusal(*machine) for machine in ok] == [None] * len(ok)
    assert "macOS 14 (Sonoma) or newer" in refusal("Darwin", "arm64", "13.6.1", (3, 11), ("", ""))
    assert "macOS 12.7" in refusal("Darwin", "arm64", "12.7", (3, 11), ("", ""))
    intel = refusal("Darwin", "x86_64", "14.5", (3, 11), ("", ""))
    assert "Intel" in intel and "Apple-silicon" in intel and "Remote backend URL" in intel
    assert "glibc 2.28 or newer" in refusal("Linux", "x86_64", "", (3, 11), ("glibc", "2.17"))
    assert "x86-64 only" in refusal("Windows", "ARM64", "", (3, 13), ("", ""))
    assert "checked for 3.11 and 3.13" in refusal("Linux", "x86_64", "", (3, 12), ("glibc", "2.36"))


def test_the_manifest_lists_the_checked_platforms():
    """What Blender offers the extension to is what make check-install resolves for."""
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert sorted(manifest["platforms"]) == sorted(PLATFORMS)
    assert PYTHONS == ((3, 11), (3, 13))  # Blender 4.2-5.0 ship 3.11, 5.1-5.3 ship 3.13


def test_windows_path_length_from_torchs_record():
    """The longest file torch 2.13's Windows wheel installs (its RECORD, tests/fixtures/
    torch_win_amd64_record.json) under Blender's extension folder and under the short one."""
    fixture = json.loads((ROOT / "tests" / "fixtures" / "torch_win_amd64_record.json").read_text())
    assert fixture["torch"] == pins(BACKEND)["torch"], "regenerate the fixture for the pinned torch (its 'how')"
    record = "\n".join(fixture["rows"])
    profile = "C:\\Users\\" + "u" * 20  # a 20-character account name, Windows' longest
    blender = PureWindowsPath(profile + r"\AppData\Roaming\Blender Foundation\Blender\4.2\extensions\.user"
                              r"\user_default\conjure\venv\Lib\site-packages")
    length, path = longest_installed_path(blender, record)
    assert path.endswith(r"duktape-1.5.2\LICENSE.txt") and length == len(str(blender)) + 1 + LONGEST_WHEEL_PATH
    assert length == 305 > WINDOWS_MAX_PATH  # what the old layout hit
    local = profile + r"\AppData\Local"
    venv = windows_venv(local, (4, 2))
    assert venv == PureWindowsPath(local + r"\Conjure\4.2\venv")
    assert longest_installed_path(venv_layout(venv, True)[2], record)[0] == 246
    # uv unpacks the wheel in its cache first: CACHE\archive-v0\<21 characters>\<the path>
    unpacked = len(str(windows_uv_cache(local))) + len("\\archive-v0\\") + 21 + len("\\") + LONGEST_WHEEL_PATH
    assert unpacked == 255 <= WINDOWS_MAX_PATH
    assert long_path_refusal(venv, windows_uv_cache(local), long_paths=False) is None
    # a console script's row is relative to site-packages: pip puts it in the venv's Scripts
    assert longest_installed_path(venv_layout(venv, True)[2], "../../Scripts/torchrun.exe,sha256=x,1")[1] == \
        str(venv / "Scripts" / "torchrun.exe")


def test_long_paths_off_and_too_long_is_refused_with_the_fix():
    local = "C:\\Users\\" + "u" * 30 + r"\AppData\Local"  # a profile folder 30 characters long
    venv, cache = windows_venv(local, (5, 1)), windows_uv_cache(local)
    why = long_path_refusal(venv, cache, long_paths=False)
    assert why.endswith(LONG_PATHS_FIX) and f"of 265 characters in {cache} " in why  # the venv's: 256
    assert "LongPathsEnabled' -Value 1" in LONG_PATHS_FIX
    assert long_path_refusal(venv, cache, long_paths=True) is None


def test_steps_online_offline_and_pip_fallback(tmp_path):
    venv = tmp_path / "venv"
    python, uv, _ = venv_layout(venv, windows=False)
    installer = str(ROOT / "requirements" / "installer.txt")
    online = InstallPlan(venv, python, uv, "/usr/bin/python3", ROOT)
    assert [s.argv for s in online.first(venv_exists=False)] == [
        ["/usr/bin/python3", "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-r", installer]]
    assert [s.may_fail for s in online.first(venv_exists=False)] == [False, True]  # no uv: pip's path
    assert online.with_uv()[0].argv == [str(uv), "pip", "install", "--python", str(python), "-r", str(BACKEND),
                                        "--torch-backend=auto"]
    assert online.with_uv()[-1].argv == [str(python), "-m", "backend", "doctor"]
    pip = online.with_pip(f"{TORCH_INDEX}/cu128")
    assert pip[0].argv[-2:] == ["--upgrade", "pip"] and "--progress-bar" not in pip[0].argv
    assert pip[1].argv[-4:] == ["raw", pinned_torch(BACKEND), "--index-url", f"{TORCH_INDEX}/cu128"]
    assert pip[2].argv[-2:] == ["-r", str(BACKEND)] and pip[3] == online.doctor()
    windows = InstallPlan(venv, python, uv, "/usr/bin/python3", ROOT, uv_cache=PureWindowsPath(r"C:\c\Conjure\uv"))
    assert windows.with_uv()[0].argv[-2:] == ["--cache-dir", r"C:\c\Conjure\uv"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    offline = InstallPlan(venv, python, uv, "/usr/bin/python3", ROOT, wheels)
    assert offline.first(venv_exists=True) == []  # no uv wheel in the folder: pip's path
    pip = offline.with_pip(None)
    assert len(pip) == 3 and not any("--upgrade" in s.argv or "raw" in s.argv for s in pip)  # pip as the venv has it
    for step in pip[:2]:
        assert step.argv[-3:] == ["--no-index", "--find-links", str(wheels)] and "--index-url" not in step.argv
    (wheels / "uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl").touch()
    assert offline.first(venv_exists=True)[0].argv[-5:] == ["-r", installer, "--no-index", "--find-links", str(wheels)]
    assert offline.with_uv()[0].argv[-3:] == ["--no-index", "--find-links", str(wheels)]


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


# pip's lines with --progress-bar raw; uv 0.13.9's off a terminal (captured from `uv pip install scipy` here)
PIP_LOG = ("Collecting torch==2.13.0\n  Downloading torch-2.13.0-cp311-linux_x86_64.whl (800 MB)\n"
           "Progress 200000000 of 800000000\nProgress 400000000 of 800000000\n")
UV_LOG = ("Using Python 3.13.0 environment at: venv\nResolved 3 packages in 382ms\nDownloading numpy (15.9MiB)\n"
          "Downloading scipy (35.5MiB)\n Downloaded numpy\n")


def test_install_status_reads_pip_and_uv():
    step, fraction = install_status(PIP_LOG)
    assert step.startswith("Downloading torch-2.13.0") and fraction == 0.5
    assert install_status(PIP_LOG + "Installing collected packages: torch\n") == \
        ("Installing collected packages: torch", None)
    step, fraction = install_status(UV_LOG)
    assert step == "Downloaded numpy (1 of 2 downloads)" and fraction == pytest.approx(15.9 / (15.9 + 35.5))
    assert install_status(UV_LOG + " Downloaded scipy\nPrepared 3 packages in 1.91s\n") == \
        ("Prepared 3 packages in 1.91s", None)
    # uv follows pip (which installed uv) in the same log
    assert install_status(PIP_LOG + "Successfully installed uv-0.13.9\n" + UV_LOG)[0].startswith("Downloaded numpy")


# -- the real path: a venv built by the plan's own steps, offline ---------------------------

def _python(version: str) -> str | None:
    """An interpreter of this version on the PATH or in pyenv's versions (as the Makefile finds one)."""
    candidates = [shutil.which(f"python{version}"), sys.executable,
                  *sorted(map(str, (Path.home() / ".pyenv" / "versions").glob(f"{version}*/bin/python{version}")))]
    for python in filter(None, candidates):
        probe = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == version:
            return python
    return None


def _tiny_wheel(folder: Path, name: str, version: str, body: str = "", script: bool = False) -> None:
    """A pure-Python wheel (PEP 427) standing in for name==version: a module that says its
    version; script: a console script `name` running the module's main()."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {f"{module}/__init__.py": f"__version__ = {version!r}\n{body}",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: conjure-tests\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    if script:
        files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{name} = {module}:main\n"

    def digest(text: str) -> str:  # RECORD's hash: urlsafe base64 of the sha256, unpadded
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    files[f"{info}/RECORD"] = "".join(f"{p},sha256={digest(t)},{len(t.encode())}\n" for p, t in files.items()) + \
        f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def _real_uv() -> str | None:
    try:
        import uv
    except ImportError:
        return None
    return uv.find_uv_bin()


@pytest.mark.parametrize("version, with_uv", [("3.13", True), ("3.11", False)])
def test_install_backend_builds_the_venv(tmp_path, version, with_uv):
    """Install Backend's steps, run as the operator runs them, from a Python of each version
    Blender bundles: the venv, uv from the wheel folder (3.13) or pip's path (3.11: no uv
    wheel), every pin of backend.txt as a tiny stand-in wheel. The last step (backend doctor)
    needs the real packages: README's "Install Backend by hand" runs it."""
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (PATH or ~/.pyenv/versions)")
    real_uv = _real_uv() if with_uv else None
    if with_uv and real_uv is None:
        pytest.skip("uv is not installed here (make test installs requirements/installer.txt)")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wanted = pins(BACKEND)
    for name, pin in wanted.items():
        _tiny_wheel(wheels, name, pin)
    if with_uv:  # uv's stand-in hands its arguments to the real uv
        _tiny_wheel(wheels, "uv", pins(ROOT / "requirements" / "installer.txt")["uv"], script=True,
                    body=f"import os, sys\n\ndef main():\n    os.execv({real_uv!r}, [{real_uv!r}, *sys.argv[1:]])\n")
    venv = tmp_path / "venv"
    py, uv, _ = venv_layout(venv, windows=False)
    plan = InstallPlan(venv, py, uv, python, ROOT, wheels)
    # no configuration of this machine's (pip's wheel folder and index, uv's) reaches the steps
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1",
               UV_CACHE_DIR=str(tmp_path / "uv-cache"))
    log_path = tmp_path / "install.log"
    with log_path.open("w") as log:
        def run(steps: list) -> None:
            for step in steps:
                done = subprocess.run(step.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
                assert done.returncode == 0, step.argv
        first = plan.first(venv_exists=py.exists())
        assert len(first) == 1 + with_uv
        run(first)
        assert uv.exists() == with_uv  # what the operator looks at to choose the path
        rest = plan.with_uv() if with_uv else plan.with_pip(None)
        assert rest[-1] == plan.doctor()
        run(rest[:-1])
    cfg = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    assert cfg["version"].startswith(version + ".") and cfg["include-system-site-packages"] == "false"
    site = venv / "lib" / f"python{version}" / "site-packages"
    installed = {**wanted, **(pins(ROOT / "requirements" / "installer.txt") if with_uv else {})}
    assert sorted(p.name for p in site.glob("*.dist-info") if not p.name.startswith(("pip-", "setuptools-"))) == \
        sorted(f"{n.replace('-', '_')}-{v}.dist-info" for n, v in installed.items())
    probe = subprocess.run([str(py), "-c", "import sys, torch, numpy; print(sys.prefix, torch.__version__, "
                                           "numpy.__version__)"], capture_output=True, text=True, env=env)
    assert probe.stdout.split() == [str(venv), wanted["torch"], wanted["numpy"]]
    step, fraction = install_status(log_path.read_text())
    if with_uv:
        assert step.startswith(f"Installed {len(wanted)} packages") and fraction is None
    else:
        assert step.startswith("Successfully installed ") and fraction is None
