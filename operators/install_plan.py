"""What Install Backend runs (standard library only, no bpy: tested on its own).

First the checks that need nothing downloaded: the platforms and Pythons the requirements
resolve for (`make check-install` proves it against PyPI), and on Windows the longest path the
install will write against the 260-character limit. Then a venv from Blender's own Python, uv
into it (a PyPI wheel for every supported platform, or the wheel folder's), and uv installs
`requirements/backend.txt` with the torch build it picks for the machine
(`--torch-backend=auto`: CUDA from the NVIDIA driver, ROCm, Intel XPU, else CPU; PyPI's wheel on
a Mac; https://docs.astral.sh/uv/guides/integration/pytorch/#automatic-backend-selection). Where
uv cannot be installed (a wheel folder without it, or its install fails) pip installs instead:
the torch build then comes from our own detection (torch_build: `nvidia-smi`'s CUDA version
against the builds the PyTorch index lists for the pinned torch, a fixed table offline). An
offline machine installs from a local folder of wheels (README: `pip download` on a machine of
the same platform, with the same Python). Last, `backend doctor` answers in the preferences.
"""
from __future__ import annotations

import csv
import io
import ntpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath

TORCH_INDEX = "https://download.pytorch.org/whl"
# The offline answer (not checked against the index): build tags of the pinned torch.
OFFLINE_BUILDS = ("cpu", "cu126", "cu128", "cu130", "rocm6.4")
_WHEEL = re.compile(r"torch-([^-+]+)\+([a-z0-9.]+)-(cp\d+)-(cp\d+t?)-([A-Za-z0-9_.]+)\.whl")

# Where the backend installs, as the manifest's `platforms` names them -> uv's --python-platform
# for the oldest system of each that the pinned wheels support (`make check-install` resolves
# requirements/ for each, with every Python below). torch 2.13's wheels set the floors: macOS
# 14 arm64 (macosx_14_0_arm64: no Intel Mac), glibc 2.28 (manylinux_2_28_x86_64), win_amd64.
PLATFORMS = {"windows-x64": "x86_64-pc-windows-msvc", "macos-arm64": "aarch64-apple-darwin",
             "linux-x64": "x86_64-manylinux_2_28"}
MACOS_MIN = (14, 0)
GLIBC_MIN = (2, 28)
# The Pythons Blender bundles: 3.11 in 4.2 LTS to 5.0, 3.13 in 5.1 to 5.3.
PYTHONS = ((3, 11), (3, 13))

# Windows without long paths: at most 259 characters (MAX_PATH 260 with the terminating NUL;
# https://learn.microsoft.com/en-us/windows/win32/fileio/maximum-file-path-limitation).
WINDOWS_MAX_PATH = 259
# The longest path a backend wheel installs below site-packages: torch 2.13.0's win_amd64
# wheels (cp311 and cp313 alike), `torch-2.13.0.dist-info/licenses/third_party/kineto/.../
# duktape-1.5.2/LICENSE.txt` (tests/fixtures/torch_win_amd64_record.json, with its source); the
# next longest of the 66 win_amd64 cp313 wheels backend.txt resolves to: diffusers', 112.
LONGEST_WHEEL_PATH = 167
# uv unpacks each wheel into CACHE\archive-v0\<a 21-character id>\ and links the files from there.
UV_ARCHIVE_DEPTH = len("\\archive-v0\\") + 21
LONG_PATHS_FIX = ("turn on Windows' long paths once (as administrator, in PowerShell): New-ItemProperty -Path "
                  "'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\FileSystem' -Name 'LongPathsEnabled' -Value 1 "
                  "-PropertyType DWORD -Force; then restart Blender and install again")


def _version(text: str) -> tuple[int, ...]:
    """"13.6.1" -> (13, 6)."""
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def refusal(system: str, machine: str, release: str, python: tuple[int, int], libc: tuple[str, str]) -> str | None:
    """Why the backend cannot be installed on this machine, before anything downloads; None
    when it can. system, machine: platform.system(), platform.machine(); release: macOS's
    version (platform.mac_ver()[0]); libc: platform.libc_ver()."""
    arch = machine.lower()
    where = "the PyTorch wheels the backend pins"
    if system == "Darwin":
        if arch != "arm64":
            return ("this Blender runs on Intel (an Intel Mac, or Blender's Intel build under Rosetta): "
                    f"{where} are for Apple silicon only. On an Apple-silicon Mac use Blender's Apple-silicon "
                    "download; otherwise use a Remote backend URL (a GPU machine running the backend)")
        if _version(release) < MACOS_MIN:
            return (f"macOS {release}: {where} need macOS {MACOS_MIN[0]} (Sonoma) or newer. Update macOS, or "
                    "use a Remote backend URL (a GPU machine running the backend)")
    elif system in ("Windows", "Linux"):
        if arch not in ("amd64", "x86_64"):
            return (f"{system} on {machine}: the backend installs on x86-64 only ({where}); use a Remote "
                    "backend URL (a GPU machine running the backend)")
        if system == "Linux" and libc[0] == "glibc" and _version(libc[1]) < GLIBC_MIN:
            return (f"glibc {libc[1]}: {where} need glibc {GLIBC_MIN[0]}.{GLIBC_MIN[1]} or newer (RHEL/Rocky 8, "
                    "Ubuntu 20.04, Debian 10 and later)")
    else:
        return f"{system}: the backend installs on Windows, macOS and Linux only"
    if python not in PYTHONS:
        return (f"Blender's Python {python[0]}.{python[1]}: the backend's requirements are checked for "
                f"{' and '.join(f'{a}.{b}' for a, b in PYTHONS)} (Blender 4.2 to 5.3)")
    return None


def venv_layout(venv: PurePath, windows: bool) -> tuple[PurePath, PurePath, PurePath]:
    """-> (python, uv, site-packages) inside the venv; site-packages for Windows only (a
    POSIX venv's depends on the Python version, and no path limit applies there)."""
    scripts = venv / ("Scripts" if windows else "bin")
    ext = ".exe" if windows else ""
    return scripts / f"python{ext}", scripts / f"uv{ext}", venv / "Lib" / "site-packages"


def windows_root(local_appdata: str) -> PureWindowsPath:
    """The backend's own folder on Windows: %LOCALAPPDATA%\\Conjure (venvs, uv's cache). Under
    Blender's extension folder (%APPDATA%\\Blender Foundation\\Blender\\4.2\\extensions\\.user\\
    user_default\\conjure\\venv\\Lib\\site-packages: 117 characters plus the profile folder's name)
    torch's longest file reaches 285 + name; here 226 + name in the venv and 235 + name in uv's
    cache: under the limit for profile folder names up to 24 characters."""
    return PureWindowsPath(local_appdata) / "Conjure"


def windows_venv(local_appdata: str, blender: tuple[int, int]) -> PureWindowsPath:
    """One venv per Blender version (it runs on that Blender's Python)."""
    return windows_root(local_appdata) / f"{blender[0]}.{blender[1]}" / "venv"


def windows_uv_cache(local_appdata: str) -> PureWindowsPath:
    return windows_root(local_appdata) / "uv"


def longest_installed_path(site_packages: PureWindowsPath, record: str) -> tuple[int, str]:
    """-> (length, path) of the longest file a wheel installs, from its RECORD (PEP 376/427
    CSV: one installed path per row, relative to site-packages; scripts as ../../Scripts/...)."""
    paths = [ntpath.normpath(ntpath.join(str(site_packages), row[0].replace("/", "\\")))
             for row in csv.reader(io.StringIO(record)) if row]
    longest = max(paths, key=len)
    return len(longest), longest


def long_path_refusal(venv: PureWindowsPath, uv_cache: PureWindowsPath | None, long_paths: bool) -> str | None:
    """Windows, before anything downloads: the longest path the install writes (torch's, in the
    venv or in uv's cache) against the 260-character limit; None when it fits or long paths are on."""
    depth = {venv_layout(venv, True)[2]: 0} | ({uv_cache: UV_ARCHIVE_DEPTH} if uv_cache else {})
    folder, extra = max(depth.items(), key=lambda item: len(str(item[0])) + item[1])
    length = len(str(folder)) + extra + 1 + LONGEST_WHEEL_PATH
    if long_paths or length <= WINDOWS_MAX_PATH:
        return None
    return (f"installing would write paths of {length} characters in {folder} (torch's longest file), over "
            f"Windows' limit of 260, and long paths are off: {LONG_PATHS_FIX}")


def wheel_platform(system: str, machine: str) -> tuple[str, ...]:
    """What a wheel's platform tag must contain here: Linux x86_64 -> manylinux, x86_64."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    return ("win", "amd64") if system == "Windows" else ("linux", arch)


def index_builds(page: str, version: str, python_tag: str, platform: tuple[str, ...]) -> list[str]:
    """The build tags (cpu, cu128, rocm6.4, ...) the index page lists for torch==version,
    this CPython (python_tag, e.g. cp311) and a platform tag containing every part of
    `platform` (wheel_platform)."""
    return sorted({tag for v, tag, py, abi, plat in _WHEEL.findall(page)
                   if v == version and py == python_tag == abi and all(part in plat for part in platform)})


def query_index(version: str, python_tag: str, platform: tuple[str, ...], url: str = f"{TORCH_INDEX}/torch/",
                timeout: float = 15.0) -> list[str] | None:
    """index_builds of the live index page; None when it cannot be read (offline)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            page = r.read(64 << 20).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    return index_builds(page, version, python_tag, platform) or None


def _cuda(tag: str) -> tuple[int, int] | None:
    """cu130 -> (13, 0), cu118 -> (11, 8); None for other tags."""
    m = re.fullmatch(r"cu(\d+)(\d)", tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _rocm(tag: str) -> tuple[int, ...] | None:
    m = re.fullmatch(r"rocm(\d+(?:\.\d+)*)", tag)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def torch_build(system: str, nvidia_smi: str | None, rocm: bool, builds: list[str] | tuple[str, ...] | None = None
                ) -> tuple[str, str | None]:
    """pip's fallback: -> (what was picked, for the panel; pip index URL, None for PyPI's
    default wheel). system: platform.system(); nvidia_smi: its output (None without a driver);
    builds: what the index has (query_index), None for the offline table."""
    if system == "Darwin":
        return "Apple (MPS)", None
    where = "offline table" if builds is None else "from the index"
    builds = OFFLINE_BUILDS if builds is None else builds
    cuda = sorted((_cuda(t), t) for t in builds if _cuda(t))  # oldest first
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi or "")
    if match and cuda:
        driver = (int(match.group(1)), int(match.group(2)))
        fits = [tag for needs, tag in cuda if needs <= driver]
        if fits:
            return (f"NVIDIA GPU, CUDA build {fits[-1]} (driver supports CUDA {driver[0]}.{driver[1]}; {where})",
                    f"{TORCH_INDEX}/{fits[-1]}")
        return (f"CPU: the NVIDIA driver supports CUDA {driver[0]}.{driver[1]}, older than the builds "
                f"({cuda[0][1]} and newer); update the driver and install again"), f"{TORCH_INDEX}/cpu"
    rocm_builds = sorted((_rocm(t), t) for t in builds if _rocm(t))
    if rocm and rocm_builds:
        return f"AMD GPU, ROCm build {rocm_builds[-1][1]} ({where})", f"{TORCH_INDEX}/{rocm_builds[-1][1]}"
    return "CPU", f"{TORCH_INDEX}/cpu"


def pins(requirements: Path) -> dict[str, str]:
    """name -> version of a requirements file's `name==version` lines, following `-r FILE`
    (relative to the file, as pip reads it); markers and comments dropped."""
    out: dict[str, str] = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out.update(pins(requirements.parent / line[3:].strip()))
        elif "==" in line:
            name, version = line.split(";", 1)[0].split("==")
            out[name.strip().lower()] = version.strip()
    return out


def pinned_torch(requirements: Path) -> str:
    """The `torch==X` requirement of the backend's requirements."""
    version = pins(requirements).get("torch")
    if version is None:
        raise ValueError(f"{requirements} pins no torch version")
    return f"torch=={version}"


@dataclass(frozen=True)
class Step:
    """One command of the install; a step that may fail leaves the install on pip's path."""

    argv: list[str]
    may_fail: bool = False


@dataclass(frozen=True)
class InstallPlan:
    """venv: the backend's venv; python, uv: inside it (venv_layout); base_python: Blender's
    sys.executable; root: the add-on (its requirements/); wheels: an offline wheel folder;
    uv_cache: uv's cache folder (Windows: a short one, windows_uv_cache), None for uv's own."""

    venv: PurePath
    python: PurePath
    uv: PurePath
    base_python: str
    root: Path
    wheels: Path | None = None
    uv_cache: PurePath | None = None

    @property
    def backend(self) -> Path:
        return self.root / "requirements" / "backend.txt"

    def _source(self) -> list[str]:
        return ["--no-index", "--find-links", str(self.wheels)] if self.wheels else []

    def first(self, venv_exists: bool) -> list[Step]:
        """The venv (unless there), then uv into it: from PyPI, or from the wheel folder when
        that has a uv wheel (else no uv step: pip's path)."""
        steps = [] if venv_exists else [Step([self.base_python, "-m", "venv", str(self.venv)])]
        if self.wheels is None or any(self.wheels.glob("uv-*.whl")):
            steps.append(Step([str(self.python), "-m", "pip", "install", "-r",
                               str(self.root / "requirements" / "installer.txt")] + self._source(), may_fail=True))
        return steps

    def with_uv(self) -> list[Step]:
        """uv installs the requirements, online with the torch build it picks; then the check."""
        cmd = [str(self.uv), "pip", "install", "--python", str(self.python), "-r", str(self.backend)]
        cmd += self._source() or ["--torch-backend=auto"]
        cmd += ["--cache-dir", str(self.uv_cache)] if self.uv_cache else []
        return [Step(cmd), self.doctor()]

    def with_pip(self, index: str | None) -> list[Step]:
        """pip (uv missing): an up-to-date pip (online: raw progress needs pip 24.1, and a new
        venv's own pip can be older, 23.2.1 from CPython 3.11.7), torch from its build's index
        (or the wheel folder, with the venv's pip and no raw progress), the rest."""
        pip = [str(self.python), "-m", "pip", "install"]
        steps = [] if self.wheels else [Step(pip + ["--upgrade", "pip"])]
        pip += [] if self.wheels else ["--progress-bar", "raw"]
        torch_source = self._source() or (["--index-url", index] if index else [])
        steps.append(Step(pip + [pinned_torch(self.backend)] + torch_source))
        steps.append(Step(pip + ["-r", str(self.backend)] + self._source()))
        return steps + [self.doctor()]

    def doctor(self) -> Step:
        return Step([str(self.python), "-m", "backend", "doctor"])


_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")
_PIP_STEP = re.compile(r"^(Collecting|Downloading|Processing|Installing collected packages|Successfully installed|"
                       r"ERROR)\b.*")
_UV_STEP = re.compile(r"^(Resolved|Prepared|Installed|Uninstalled|Audited|error:)\b.*")
_UV_DOWNLOAD = re.compile(r"^Downloading (\S+) \(([\d.]+)([KMG]i?B)\)")
_UV_DONE = re.compile(r"^Downloaded (\S+)$")
_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def install_status(text: str) -> tuple[str, float | None]:
    """From the install log so far (pip's and uv's output): the last step line and the
    current download's fraction, or None. pip: its raw "Progress N of M" lines; uv (no
    progress lines off a terminal): the share of the announced download sizes finished."""
    step, fraction = "", None
    sizes: dict[str, float] = {}
    done: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if m := _PROGRESS.search(line):
            fraction = int(m.group(1)) / max(int(m.group(2)), 1)
        elif m := _UV_DOWNLOAD.match(line):
            sizes[m.group(1)] = float(m.group(2)) * _UNITS[m.group(3)]
            step = line[:120]
            fraction = sum(sizes[n] for n in done if n in sizes) / sum(sizes.values())
        elif (m := _UV_DONE.match(line)) and m.group(1) in sizes:
            done.add(m.group(1))
            step = f"{line} ({len(done)} of {len(sizes)} downloads)"
            fraction = sum(sizes[n] for n in done) / sum(sizes.values())
        elif _UV_STEP.match(line):
            step, fraction = line[:120], None
            if line.startswith("Resolved"):
                sizes, done = {}, set()
        elif _PIP_STEP.match(line):
            step, fraction = line[:120], None if not line.startswith("Downloading") else 0.0
    return step, fraction
