"""Add-on preferences: where the backend runs and what it may do."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import bpy

from .backend.pipeline.preset_files import describe, preset_names
from .operators.install_plan import venv_layout, windows_uv_cache, windows_venv

REFUSED = "cannot install here: "  # Install Backend's status when this machine is not supported
# The backend's presets (its files, quickest first), not a list of the add-on's own
PRESETS = [(name, name.title(), describe(name)) for name in preset_names()]


def _local_appdata() -> str:
    return os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")


def venv_dir(create: bool = False) -> Path:
    """The backend's own environment, created by the Install backend operator (only it
    creates the folder: drawing the preferences must not). Under the extension's user folder;
    on Windows a short folder of its own (install_plan.windows_root: the path limit)."""
    if sys.platform != "win32":
        return Path(bpy.utils.extension_path_user(__package__, path="venv", create=create))
    path = Path(windows_venv(_local_appdata(), bpy.app.version[:2]))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def uv_cache_dir() -> Path | None:
    """uv's cache for Install Backend: a short folder on Windows, else uv's own."""
    return Path(windows_uv_cache(_local_appdata())) if sys.platform == "win32" else None


def venv_python() -> Path:
    return Path(venv_layout(venv_dir(), sys.platform == "win32")[0])


class ConjurePreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python: bpy.props.StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Interpreter with the backend installed; empty: the environment Install backend creates")
    models: bpy.props.StringProperty(
        name="Models", default="default",
        description="default (hub ids from the local cache), tiny (built-in random test models), "
                    "a models folder or a manifest file")
    hf_home: bpy.props.StringProperty(name="Model folder", subtype="DIR_PATH",
                                      description="Where model weights go and are read from (the backend's "
                                                  "HF_HOME and CONJURE_CACHE); empty: the usual caches")
    allow_downloads: bpy.props.BoolProperty(
        name="Allow model downloads", default=False,
        description="Let the backend download missing models (only when Blender allows online access)")
    device: bpy.props.EnumProperty(name="Device", items=[("auto", "Auto", "GPU when there is one"),
                                                         ("cuda", "GPU", "CUDA"), ("cpu", "CPU", "Slow")])
    default_preset: bpy.props.EnumProperty(name="Default preset", items=PRESETS)
    jobs_dir: bpy.props.StringProperty(name="Job folders", subtype="DIR_PATH",
                                       description="Where job folders go; empty: beside the .blend, else temp")
    remote_url: bpy.props.StringProperty(name="Remote backend URL",
                                         description="http://host:port of `python -m backend serve --http`; "
                                                     "empty: run the backend on this computer")
    remote_token: bpy.props.StringProperty(name="Token", subtype="PASSWORD")
    remote_priority: bpy.props.EnumProperty(
        name="Priority", default="NORMAL",
        items=[("LOW", "Low", "Behind everyone's normal jobs (background work)"),
               ("NORMAL", "Normal", "Your turn among the artists sharing the farm"),
               ("HIGH", "High", "Ahead of normal jobs (a studio farm only)")],
        description="Where your jobs go in a studio farm's queue (serve --ray); a one-machine server takes "
                    "normal only")
    wheels_dir: bpy.props.StringProperty(
        name="Wheel folder", subtype="DIR_PATH",
        description="Install the backend offline from this folder of wheels (pip download -r "
                    "requirements/installer.txt -r requirements/backend.txt -d DIR on a connected machine of "
                    "this platform, with this Blender's Python version; README); empty: from the network")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "python")
        row = col.row()
        row.operator("conjure.install_backend", icon="IMPORT")
        row.label(text=f"Environment: {venv_dir()}")
        col.prop(self, "wheels_dir")
        state = context.window_manager.conjure
        if state.install_status.startswith(REFUSED):  # the reason, whole (a bar would cut it)
            for i, line in enumerate(textwrap.wrap(state.install_status, 110)):
                col.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        elif state.install_status:
            col.progress(factor=state.install_progress, type="BAR", text=state.install_status)
        if state.doctor:
            col.label(text=state.doctor, icon="CHECKMARK")
        col.prop(self, "models")
        col.prop(self, "hf_home")
        sub = col.row()
        sub.enabled = bpy.app.online_access
        sub.prop(self, "allow_downloads")
        if not bpy.app.online_access:
            col.label(text="Online access is off in Blender's preferences: no downloads", icon="INFO")
        col.prop(self, "device")
        col.prop(self, "default_preset")
        col.prop(self, "jobs_dir")
        draw_models(layout.box(), context.window_manager.conjure.models)
        box = layout.box()
        box.label(text="Remote backend")
        box.prop(self, "remote_url")
        box.prop(self, "remote_token")
        box.prop(self, "remote_priority")


def draw_models(box: bpy.types.UILayout, m: bpy.types.PropertyGroup) -> None:
    """The Models box: each role with its state and size, the cache and its free space, a
    download's progress, licences waiting to be accepted."""
    row = box.row()
    row.label(text="Models", icon="FILE_3D")
    row.operator("conjure.models_status", icon="FILE_REFRESH")
    if m.cache:
        box.label(text=f"{m.cache}: {m.free_gb:.1f} GB free")
    col = box.column(align=True)
    for r in m.roles:
        line = col.row()
        line.label(text=r.role, icon="CHECKMARK" if r.present else "X")
        line.label(text=f"{r.size_gb:.2f} GB" if r.present else "missing")
        line.label(text=r.licence)
    if m.downloading:
        box.progress(factor=m.progress, type="BAR",
                     text=f"{m.file}  {m.done_gb:.2f}/{m.total_gb:.2f} GB  {m.rate_mbps:.1f} MB/s  "
                          f"ETA {int(m.eta_s) // 60}:{int(m.eta_s) % 60:02d}")
        box.operator("conjure.models_cancel", icon="CANCEL")
    else:
        sub = box.row()
        sub.enabled = bpy.app.online_access and any(not r.present for r in m.roles)
        sub.operator("conjure.models_download", text="Download Missing", icon="IMPORT")
    if m.licences:
        for line in m.licences.splitlines():
            box.label(text=line, icon="INFO")
        box.operator("conjure.models_accept", icon="CHECKMARK")
    if m.error and not m.licences:
        box.label(text=m.error, icon="ERROR")
        if m.hint:
            box.label(text=m.hint)


def prefs(context: bpy.types.Context | None = None) -> ConjurePreferences:
    return (context or bpy.context).preferences.addons[__package__].preferences


def register() -> None:
    bpy.utils.register_class(ConjurePreferences)


def unregister() -> None:
    bpy.utils.unregister_class(ConjurePreferences)
