"""conjure.cancel, conjure.free_backend, conjure.install_backend."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpy

from ..preferences import venv_dir, venv_python
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


def install_commands(venv: Path, python: Path, root: Path = ADDON_ROOT) -> list[list[str]]:
    """The commands that create the backend environment and install its requirements."""
    commands = [] if python.exists() else [[sys.executable, "-m", "venv", str(venv)]]
    return commands + [[str(python), "-m", "pip", "install", "--upgrade", "pip"],
                       [str(python), "-m", "pip", "install", "-r", str(root / "requirements" / "backend.txt")]]


class CONJURE_OT_install_backend(bpy.types.Operator):
    """Create the backend's Python environment and install its packages (needs the network; minutes)"""

    bl_idname, bl_label = "conjure.install_backend", "Install Backend"

    _proc = None
    _timer = None

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Blender's online access is off: allow it in Preferences > System to install")
            return {"CANCELLED"}
        self._commands = install_commands(venv_dir(create=True), venv_python())
        self._log = open(Path(bpy.app.tempdir or "/tmp") / "conjure_install.log", "w")  # noqa: SIM115
        self._total = len(self._commands)
        if bpy.app.background:
            for cmd in self._commands:
                if subprocess.call(cmd, stdout=self._log, stderr=subprocess.STDOUT) != 0:
                    self.report({"ERROR"}, f"failed: {' '.join(cmd)} (see {self._log.name})")
                    return {"CANCELLED"}
            return {"FINISHED"}
        self._next()
        wm = context.window_manager
        wm.progress_begin(0, self._total)
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _next(self) -> None:
        self._proc = subprocess.Popen(self._commands.pop(0), stdout=self._log, stderr=subprocess.STDOUT)

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER" or self._proc.poll() is None:
            return {"PASS_THROUGH"}
        wm = context.window_manager
        done = self._total - len(self._commands)
        wm.progress_update(done)
        context.workspace.status_text_set(f"Conjure: installing the backend, step {done}/{self._total}")
        if self._proc.returncode != 0 or not self._commands:
            wm.event_timer_remove(self._timer)
            wm.progress_end()
            context.workspace.status_text_set(None)
            self._log.close()
            if self._proc.returncode != 0:
                self.report({"ERROR"}, f"backend install failed; see {self._log.name}")
                return {"CANCELLED"}
            self.report({"INFO"}, "Conjure backend installed")
            return {"FINISHED"}
        self._next()
        return {"PASS_THROUGH"}


CLASSES = (CONJURE_OT_cancel, CONJURE_OT_free_backend, CONJURE_OT_install_backend)


# Blender's own helper: registers in order, unregisters in reverse.
register, unregister = bpy.utils.register_classes_factory(CLASSES)
