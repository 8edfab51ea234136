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
