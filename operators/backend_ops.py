"""conjure.cancel, conjure.free_backend, conjure.install_backend."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import bpy

from ..preferences import prefs, venv_dir, venv_python
from .install_plan import install_commands, pinned_torch, pip_status, query_index, torch_build, wheel_platform
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
    """The torch build for this machine (install_plan.torch_build on what it finds and, when
    online, on what the PyTorch index has for the pinned torch and this Python)."""
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


def doctor_summary(report: dict) -> str:
    """One line of `backend doctor`'s report for the preferences."""
    torch = report.get("packages", {}).get("torch") or "missing"
    devices = ", ".join(report.get("devices", [])) or "none"
    return f"torch {torch}; devices: {devices}; rasterizers: {', '.join(report.get('rasterizers', []))}"


class CONJURE_OT_install_backend(bpy.types.Operator):
    """Create the backend's Python environment and install its packages: the torch build that fits this machine,
    then the rest, then a check (needs the network, or a wheel folder; minutes)"""

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
        label, index = machine_torch(online=wheels is None)
        self._commands = install_commands(venv_dir(create=True), venv_python(), ADDON_ROOT, sys.executable, index,
                                          wheels)
        logs = Path(bpy.utils.extension_path_user(__package__.rsplit(".", 1)[0], path="logs", create=True))
        self._log_path, self._doctor_path = logs / "install.log", logs / "doctor.json"
        self._log = self._log_path.open("w")
        self._total = len(self._commands)
        state.install_status, state.install_progress, state.doctor = f"torch: {label}", 0.0, ""
        if bpy.app.background:
            while self._commands:
                self._next()
                if self._proc.wait() != 0:
                    return self._finish(context, False)
            return self._finish(context, True)
        self._next()
        wm = context.window_manager
        wm.progress_begin(0, self._total)
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _next(self) -> None:
        cmd = self._commands.pop(0)
        doctor = cmd[-2:] == ["backend", "doctor"]
        out = self._doctor_path.open("w") if doctor else self._log
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=self._log if doctor else subprocess.STDOUT,
                                      cwd=ADDON_ROOT)

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
        done = self._total - len(self._commands) - (self._proc.poll() is None)
        step, fraction = pip_status(self._log_path.read_text(errors="replace")[-20000:])
        if step:
            state.install_status = step
        state.install_progress = (done + (fraction or 0.0)) / self._total
        wm.progress_update(done)
        context.workspace.status_text_set(f"Conjure: installing the backend, step {done + 1}/{self._total}: {step}")
        if self._proc.poll() is None:
            return {"PASS_THROUGH"}
        if self._proc.returncode != 0 or not self._commands:
            wm.event_timer_remove(self._timer)
            wm.progress_end()
            context.workspace.status_text_set(None)
            return self._finish(context, self._proc.returncode == 0)
        self._next()
        return {"PASS_THROUGH"}


CLASSES = (CONJURE_OT_cancel, CONJURE_OT_free_backend, CONJURE_OT_install_backend)


# Blender's own helper: registers in order, unregisters in reverse.
register, unregister = bpy.utils.register_classes_factory(CLASSES)
