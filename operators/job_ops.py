"""conjure.generate / conjure.stylize / conjure.edit, conjure.wait.

The job fields are operator properties so scripts can call them; a property left unset
takes the panel's value. In the UI a job runs modally (a timer pumps backend messages,
Blender stays responsive); with wait=True (the default headless, where timers do not
fire) the operator runs the job to its end before returning. Inputs from Blender (images
held only in the .blend, the selected mesh) are written into the job folder first.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import bpy

from ..backend.job import MESH_MODES, MODALITIES, Job, output_overrides, parse_job
from ..preferences import prefs
from .result_import import export_selected_mesh, import_result
from .session import SESSION


# A job folder holds the job once (JOB_FILE, the typed job as JSON) and, beside it, what
# only the add-on needs to import the result (IMPORT_FILE); the backend's out/ folder
# keeps its own self-contained copy with the inputs.
JOB_FILE, IMPORT_FILE = "job_request.json", "addon.json"


def read_job_file(folder: Path) -> Job:
    """The job a folder holds (Resume, downloading what it needs)."""
    return parse_job(json.loads((folder / JOB_FILE).read_text()))


def _jobs_root() -> Path:
    p = prefs().jobs_dir.strip()
    if p:
        return Path(bpy.path.abspath(p))
    if bpy.data.filepath:
        return Path(bpy.data.filepath).parent / "conjure_jobs"
    return Path(bpy.app.tempdir or "/tmp") / "conjure_jobs"


def _new_job_dir(prompt: str, mode: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", prompt)[:32].strip("_") or mode
    path = _jobs_root() / f"{time.strftime('%Y%m%d_%H%M%S')}_{slug}"
    n = 1
    while path.exists():
        n += 1
        path = path.with_name(f"{path.name}_{n}")
    path.mkdir(parents=True)
    return path


def _image_file(ref: str, folder: Path, index: int) -> str:
    """A file path, or the name of an image in bpy.data (saved into the job folder)."""
    img = bpy.data.images.get(ref)
    if img is None:
        path = Path(bpy.path.abspath(ref))
        if not path.is_file():
            raise RuntimeError(f"image {ref!r} is neither a file nor an image in this .blend")
        return str(path)
    if img.filepath and not img.packed_file and Path(bpy.path.abspath(img.filepath)).is_file():
        return bpy.path.abspath(img.filepath)
    out = folder / f"image_{index:02d}.png"
    copy = img.copy()  # save_render-free way to write pixels of a packed or generated image
    try:
        copy.filepath_raw, copy.file_format = str(out), "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return str(out)


class JobOperator:
    """Shared by the three job operators (mode set by each)."""

    mode = "generate"
    bl_options = {"REGISTER"}

    prompt: bpy.props.StringProperty(name="Prompt")
    images: bpy.props.StringProperty(name="Images", description="JSON list of file paths or image names")
    audio: bpy.props.StringProperty(name="Sound", subtype="FILE_PATH")
    style_image: bpy.props.StringProperty(name="Style image", description="File path or image name")
    weights: bpy.props.FloatVectorProperty(name="Weights", size=len(MODALITIES), default=(1.0,) * len(MODALITIES),
                                           min=0.0, description=", ".join(MODALITIES).capitalize())
    preset: bpy.props.StringProperty(name="Preset")
    models: bpy.props.StringProperty(name="Models", description="default, tiny, a folder or a manifest")
    overrides: bpy.props.StringProperty(name="Overrides", description="JSON object of dotted preset keys")
    seed: bpy.props.IntProperty(name="Seed", min=0)
    max_faces: bpy.props.IntProperty(name="Faces", min=0, description="Face budget (0: the preset's)")
    texture_size: bpy.props.IntProperty(name="Texture", min=0, description="Texture size (0: the preset's)")
    quads: bpy.props.BoolProperty(name="Quads", description="Join triangles into quads after import")
    pbr: bpy.props.BoolProperty(name="PBR", description="Learn roughness and metallic maps in phase III")
    wait: bpy.props.BoolProperty(name="Wait", description="Run to the end before returning (headless default)")

    _timer = None

    def _value(self, name: str, panel_value):  # noqa: ANN001, ANN202
        return getattr(self, name) if self.properties.is_property_set(name) else panel_value

    def build_job(self, context: bpy.types.Context, folder: Path) -> tuple[Job, str]:
        """-> (the job, its paths absolute; the target object's name). A field the backend
        would refuse is refused here (JobError naming it), before anything is sent."""
        s, p = context.scene.conjure, prefs(context)
        text = self._value("prompt", s.prompt).strip()
        if self.properties.is_property_set("images"):
            try:
                refs = json.loads(self.images) if self.images.strip() else []
            except json.JSONDecodeError as exc:
                raise RuntimeError(f"images must be a JSON list of paths or image names ({exc})") from exc
        else:
            refs = [item.image.name if item.image else item.path for item in s.images if item.image or item.path]
        images = [_image_file(r, folder, i) for i, r in enumerate(refs)]
        audio = self._value("audio", s.audio)
        style = self._value("style_image", s.style_image.name if s.style_image else "")
        weights = self._value("weights", [getattr(s, f"weight_{m}") for m in MODALITIES])
        preset = self._value("preset", s.preset)
        preset = p.default_preset if preset in ("", "DEFAULT") else preset
        try:
            overrides = json.loads(self.overrides) if self.overrides.strip() else {}
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"overrides must be a JSON object ({exc})") from exc
        if not isinstance(overrides, dict):
            raise RuntimeError("overrides must be a JSON object of dotted preset keys")
        # The panel's output settings; explicit overrides win.
        overrides = {**output_overrides(self._value("max_faces", s.max_faces),
                                        int(self._value("texture_size", int(s.texture_size))),
                                        self._value("pbr", s.pbr)), **overrides}
        prompt: dict = {"weights": dict(zip(MODALITIES, map(float, weights)))}
        if text:
            prompt["text"] = text
        if images:
            prompt["images"] = images
        if audio:
            prompt["audio"] = bpy.path.abspath(audio)
        raw = {"mode": self.mode, "prompt": prompt, "preset": preset,
               "models": self._value("models", p.models) or "default", "seed": self._value("seed", s.seed),
               "device": p.device, "overrides": overrides,
               "allow_downloads": bool(p.allow_downloads and bpy.app.online_access)}
        if style:
            raw["style_image"] = _image_file(style, folder, 99)
        target = ""
        if self.mode in MESH_MODES:
            obj = context.active_object
            raw["mesh"] = str(export_selected_mesh(obj, folder / "input_mesh.glb"))
            target = obj.name
        return parse_job(raw), target

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return self.execute(context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        if SESSION.job is not None:  # refused before anything: the running job's state stays as it is
            self.report({"ERROR"}, "Conjure: a job is already running: cancel it or wait for it")
            return {"CANCELLED"}
        text = self._value("prompt", context.scene.conjure.prompt).strip()
        try:
            folder = _new_job_dir(text, self.mode)
            job, target = self.build_job(context, folder)
            (folder / JOB_FILE).write_text(json.dumps(job.to_json(), indent=2))
            quads = bool(self._value("quads", context.scene.conjure.quads))
            (folder / IMPORT_FILE).write_text(json.dumps({"target": target, "quads": quads}))
            submit_in(folder, job, target, quads)
        except Exception as exc:  # noqa: BLE001 (shown to the user, Blender goes on)
            return _refused(self, context, exc)
        return self.follow(context)

    def follow(self, context: bpy.types.Context) -> set[str]:
        """The submitted job to its end: synchronously (headless, wait) or modally."""
        wait = self.wait if self.properties.is_property_set("wait") else bpy.app.background
        if wait:
            SESSION.wait("end")
            return self._finish(context)
        if bpy.app.background:
            return {"FINISHED"}  # scripts go on and call conjure.wait
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS":
            SESSION.cancel()  # the job checkpoints and ends; the timer sees it end
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        running = SESSION.pump()
        for area in context.screen.areas if context.screen else ():
            if area.type == "VIEW_3D":
                area.tag_redraw()
        if running:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context)

    def _finish(self, context: bpy.types.Context) -> set[str]:
        state = context.window_manager.conjure
        if state.status == "done":
            self.report({"INFO"}, f"Conjure: {state.result_object} ready")
            return {"FINISHED"}
        if state.status == "error":
            self.report({"ERROR"}, f"Conjure: {state.error} {state.hint}".strip())
        return {"CANCELLED"}


def submit_in(folder: Path, job: Job, target: str, quads: bool = False) -> None:
    """Submit a job in its folder; its result is imported when it arrives (bpy.context at
    that time, not the operator's: the operator may be long gone)."""
    def on_result(msg: dict) -> None:
        obj = import_result(msg["glb"], folder, job.prompt.words, job.mode, target, quads)
        bpy.context.window_manager.conjure.result_object = obj.name

    SESSION.submit(job, folder, target, on_result)


def _refused(op: bpy.types.Operator, context: bpy.types.Context, exc: Exception) -> set[str]:
    state = context.window_manager.conjure
    state.running, state.status, state.error, state.hint = False, "error", str(exc)[:500], ""
    op.report({"ERROR"}, str(exc))
    return {"CANCELLED"}


class CONJURE_OT_resume(JobOperator, bpy.types.Operator):
    """Go on with the last unfinished job in its own folder, from its last checkpoint"""

    bl_idname, bl_label, mode = "conjure.resume", "Resume", "generate"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return SESSION.job is None and SESSION.last is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        if SESSION.job is not None or SESSION.last is None:
            self.report({"ERROR"}, "Conjure: nothing to resume")
            return {"CANCELLED"}
        folder = SESSION.last.job_dir
        try:
            job = read_job_file(folder)
            meta = json.loads((folder / IMPORT_FILE).read_text())
            submit_in(folder, job, meta["target"], meta.get("quads", False))
        except Exception as exc:  # noqa: BLE001 (shown to the user, Blender goes on)
            return _refused(self, context, exc)
        return self.follow(context)


class CONJURE_OT_generate(JobOperator, bpy.types.Operator):
    """Generate a textured mesh from the prompt, images and sound"""

    bl_idname, bl_label, mode = "conjure.generate", "Generate", "generate"


class SelectedMeshJob(JobOperator):
    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.active_object is not None and context.active_object.type == "MESH"


class CONJURE_OT_stylize(SelectedMeshJob, bpy.types.Operator):
    """Restyle the selected mesh from the style image (and the prompt)"""

    bl_idname, bl_label, mode = "conjure.stylize", "Stylize Selected", "stylize"


class CONJURE_OT_edit(SelectedMeshJob, bpy.types.Operator):
    """Change the selected mesh as the prompt says"""

    bl_idname, bl_label, mode = "conjure.edit", "Edit Selected", "edit"


class CONJURE_OT_wait(bpy.types.Operator):
    """Wait for the running job (scripts and headless runs, where timers do not fire)"""

    bl_idname, bl_label = "conjure.wait", "Wait for Job"
    until: bpy.props.EnumProperty(items=[("end", "End", "Until the job ends"),
                                         ("progress", "Progress", "Until its first progress report")])
    timeout: bpy.props.FloatProperty(default=3600.0, min=0.0)

    def execute(self, context: bpy.types.Context) -> set[str]:
        return {"FINISHED"} if SESSION.wait(self.until, self.timeout) else {"CANCELLED"}


CLASSES = (CONJURE_OT_generate, CONJURE_OT_stylize, CONJURE_OT_edit, CONJURE_OT_resume, CONJURE_OT_wait)


# Blender's own helper: registers in order, unregisters in reverse.
register, unregister = bpy.utils.register_classes_factory(CLASSES)
