"""conjure.cancel, conjure.free_backend, conjure.install_backend."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path, PureWindowsPath

import bpy

from ..preferences import REFUSED, prefs, uv_cache_dir, venv_dir
from .install_plan import (InstallPlan, install_status, long_path_refusal, pinned_torch, query_index, refusal,
                           torch_build, venv_layout, wheel_platform)
from .session import ADDON_ROOT, SESSION


class CONJURE_OT_cancel(bpy.types.Operator):
    """Stop the running job after its current step (its folder keeps a checkpoint)"""

    bl_idname, bl_label = "conjure.cancel", "Cancel"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not SESSION.cancel():
            self.report({"WARNING"}, "no job is running")
            return {"CANCELLED"}
        context.window_manager.conjure.status = "cancelling"
        return {"FINISHED"}


class CONJURE_OT_free_backend(bpy.types.Operator):
    """Stop the idle backend process: all its GPU and CPU memory is returned (the next job starts it again)"""

    bl_idname, bl_label = "conjure.free_backend", "Free GPU"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if SESSION.job is not None:
            self.report({"WARNING"}, "a job is running: cancel it first")
            return {"CANCELLED"}
        SESSION.close_backend()
        context.window_manager.conjure.status = "idle"
        return {"FINISHED"}


def machine_torch(online: bool) -> tuple[str, str | None]:
    """pip's fallback: the torch build for this machine (install_plan.torch_build on what it
    finds and, when online, on what the PyTorch index has for the pinned torch and this Python)."""
    smi = None
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            smi = None
    rocm = shutil.which("rocminfo") is not None or Path("/opt/rocm").is_dir()
    version = pinned_torch(ADDON_ROOT / "requirements" / "backend.txt").split("==", 1)[1]
    builds = None if not online or platform.system() == "Darwin" else query_index(
        version, f"cp{sys.version_info.major}{sys.version_info.minor}",
        wheel_platform(platform.system(), platform.machine()))
    return torch_build(platform.system(), smi, rocm, builds)


def long_paths_enabled() -> bool:
    """Windows' LongPathsEnabled switch (off unless set)."""
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            return winreg.QueryValueEx(key, "LongPathsEnabled")[0] == 1
    except OSError:
        return False


def why_not_here(plan: InstallPlan) -> str | None:
    """The refusal for this machine (install_plan.refusal, and on Windows the path length), None
    when the backend can install here."""
    why = refusal(platform.system(), platform.machine(), platform.mac_ver()[0], sys.version_info[:2],
                  platform.libc_ver())
    if why is None and sys.platform == "win32":
        why = long_path_refusal(PureWindowsPath(plan.venv), PureWindowsPath(uv_cache_dir()), long_paths_enabled())
    return why


def doctor_summary(report: dict) -> str:
    """One line of `backend doctor`'s report for the preferences."""
    torch = report.get("packages", {}).get("torch") or "missing"
    devices = ", ".join(report.get("devices", [])) or "none"
    return f"torch {torch}; devices: {devices}; rasterizers: {', '.join(report.get('rasterizers', []))}"


class CONJURE_OT_install_backend(bpy.types.Operator):
    """Create the backend's Python environment and install its packages with the torch build that fits this
    machine, then check it (needs the network, or a wheel folder; minutes)"""

    bl_idname, bl_label = "conjure.install_backend", "Install Backend"

    _proc = None
    _timer = None

    def execute(self, context: bpy.types.Context) -> set[str]:
        p, state = prefs(context), context.window_manager.conjure
        wheels = Path(bpy.path.abspath(p.wheels_dir)) if p.wheels_dir.strip() else None
        if wheels is not None and not wheels.is_dir():
            self.report({"ERROR"}, f"the wheel folder {wheels} does not exist")
            return {"CANCELLED"}
        if wheels is None and not bpy.app.online_access:
            self.report({"ERROR"}, "Blender's online access is off: allow it in Preferences > System, or set a "
                                   "wheel folder to install offline")
            return {"CANCELLED"}
        python, uv, _ = venv_layout(venv_dir(), sys.platform == "win32")
        self._plan = InstallPlan(venv_dir(), python, uv, sys.executable, ADDON_ROOT, wheels, uv_cache_dir())
        if why := why_not_here(self._plan):
            state.install_status, state.install_progress = REFUSED + why, 0.0
            self.report({"ERROR"}, f"Conjure backend: {why}")
            return {"CANCELLED"}
        venv_dir(create=True)
        self._steps, self._planned = self._plan.first(Path(python).exists()), False
        logs = Path(bpy.utils.extension_path_user(__package__.rsplit(".", 1)[0], path="logs", create=True))
        self._log_path, self._doctor_path = logs / "install.log", logs / "doctor.json"
        self._log = self._log_path.open("w")
        self._done, self._total = 0, len(self._steps) + 2  # + uv's install and the check, until planned
        if not self._steps:  # the venv is there and the wheel folder has no uv
            self._plan_rest()
        state.install_status, state.install_progress, state.doctor = "creating the environment", 0.0, ""
        if bpy.app.background:
            while True:
                self._start()
                if (outcome := self._after(self._proc.wait())) is not None:
                    return self._finish(context, outcome)
        self._start()
        wm = context.window_manager
        wm.progress_begin(0, 1)
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _start(self) -> None:
        self._step = self._steps.pop(0)
        doctor = self._step == self._plan.doctor()
        out = self._doctor_path.open("w") if doctor else self._log
        self._proc = subprocess.Popen(self._step.argv, stdout=out, stderr=self._log if doctor else subprocess.STDOUT,
                                      cwd=ADDON_ROOT)

    def _plan_rest(self) -> None:
        """When the first steps (venv, uv) are through: uv's path if uv is in the venv, else pip's."""
        self._planned = True
        if Path(self._plan.uv).exists():
            label, self._steps = "picked by uv (--torch-backend=auto)", self._plan.with_uv()
        else:
            label, index = machine_torch(online=self._plan.wheels is None)
            self._steps = self._plan.with_pip(index)
        self._log.write(f"torch build: {label}\n")
        self._log.flush()
        self._total = self._done + len(self._steps)

    def _after(self, returncode: int) -> bool | None:
        """After a step: False when the install failed, True when it is done, None to go on."""
        self._done += 1
        if returncode != 0 and not self._step.may_fail:
            return False
        if not self._steps and not self._planned:
            self._plan_rest()
        return None if self._steps else True

    def _finish(self, context: bpy.types.Context, ok: bool) -> set[str]:
        state = context.window_manager.conjure
        self._log.close()
        if not ok:
            state.install_status = f"failed: see {self._log_path}"
            self.report({"ERROR"}, f"backend install failed; see {self._log_path}")
            return {"CANCELLED"}
        try:
            state.doctor = doctor_summary(json.loads(self._doctor_path.read_text()))
        except (OSError, json.JSONDecodeError):
            state.doctor = f"the check did not answer: see {self._doctor_path}"
        state.install_status, state.install_progress = "installed", 1.0
        self.report({"INFO"}, f"Conjure backend installed: {state.doctor}")
        return {"FINISHED"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        wm, state = context.window_manager, context.window_manager.conjure
        step, fraction = install_status(self._log_path.read_text(errors="replace")[-20000:])
        if step:
            state.install_status = step
        state.install_progress = (self._done + (fraction or 0.0)) / self._total
        wm.progress_update(state.install_progress)
        context.workspace.status_text_set(
            f"Conjure: installing the backend, step {self._done + 1}/{self._total}: {step}")
        if self._proc.poll() is None:
            return {"PASS_THROUGH"}
        outcome = self._after(self._proc.returncode)
        if outcome is None:
            self._start()
            return {"PASS_THROUGH"}
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        context.workspace.status_text_set(None)
        return self._finish(context, outcome)


CLASSES = (CONJURE_OT_cancel, CONJURE_OT_free_backend, CONJURE_OT_install_backend)


# Blender's own helper: registers in order, unregisters in reverse.
register, unregister = bpy.utils.register_classes_factory(CLASSES)
