"""conjure.models_status, conjure.models_download, conjure.models_cancel: the Models box.

The backend answers through the session (state.models); downloads need Blender's online
access, checked here before anything is asked."""
from __future__ import annotations

import json
from pathlib import Path

import bpy

from ..backend.job import Job
from .job_ops import JOB_FILE, read_job_file
from .session import SESSION


def _job_in(folder: str) -> Job | None:
    """The job a folder holds (the last one, which failed for missing models), if any."""
    return read_job_file(Path(folder)) if folder and (Path(folder) / JOB_FILE).is_file() else None


class CONJURE_OT_models_status(bpy.types.Operator):
    """Ask the backend which models are on this machine"""

    bl_idname, bl_label = "conjure.models_status", "Refresh"

    wait: bpy.props.BoolProperty(name="Wait", description="Return once the answer is in (headless default)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            SESSION.models("status")
        except RuntimeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.wait or bpy.app.background:
            SESSION.wait_models(120)
        return {"FINISHED"}


class CONJURE_OT_models_download(bpy.types.Operator):
    """Download model weights (exactly the files the backend reads), with progress; resumes where it stopped"""

    bl_idname, bl_label = "conjure.models_download", "Download"

    roles: bpy.props.StringProperty(name="Roles", description="JSON list of roles; empty: every missing role")
    for_job: bpy.props.BoolProperty(name="For the last job", description="What the last job needs")
    accept_licences: bpy.props.BoolProperty(name="Accept licences",
                                            description="I have read the licences shown and accept them")
    wait: bpy.props.BoolProperty(name="Wait", description="Return when the download ends (headless default)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.app.online_access:
            self.report({"ERROR"}, "online access is off (Preferences > System > Network): downloads need it")
            return {"CANCELLED"}
        m = context.window_manager.conjure.models
        job_dir = context.window_manager.conjure.job_dir if self.for_job else ""
        try:
            job = _job_in(job_dir)
        except (OSError, ValueError) as exc:  # a job file edited by hand
            self.report({"ERROR"}, f"the last job's {JOB_FILE} cannot be read: {exc}")
            return {"CANCELLED"}
        if self.for_job and job is None:
            self.report({"ERROR"}, "no job to download for: run one first")
            return {"CANCELLED"}
        try:
            roles = json.loads(self.roles) if self.roles.strip() else []
        except json.JSONDecodeError as exc:
            self.report({"ERROR"}, f"roles must be a JSON list ({exc})")
            return {"CANCELLED"}
        if not roles and job is None:
            roles = [r.role for r in m.roles if not r.present]
        m.request = json.dumps({"roles": roles, "job_dir": job_dir})
        try:
            SESSION.models("download", roles=roles, job=job, accept_licences=self.accept_licences)
        except RuntimeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.wait or bpy.app.background:
            SESSION.wait_models()
        return {"FINISHED"}


class CONJURE_OT_models_accept(bpy.types.Operator):
    """Accept the licences shown and repeat the download that asked for them"""

    bl_idname, bl_label = "conjure.models_accept", "Accept Licences and Download"

    def execute(self, context: bpy.types.Context) -> set[str]:
        m = context.window_manager.conjure.models
        request = json.loads(m.request or "{}")
        try:
            SESSION.models("download", roles=request.get("roles", []), job=_job_in(request.get("job_dir", "")),
                           accept_licences=True)
        except (RuntimeError, OSError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if bpy.app.background:
            SESSION.wait_models()
        return {"FINISHED"}


class CONJURE_OT_models_cancel(bpy.types.Operator):
    """Stop the download (what arrived stays; the next download resumes it)"""

    bl_idname, bl_label = "conjure.models_cancel", "Cancel Download"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if SESSION.backend is None or not context.window_manager.conjure.models.downloading:
            self.report({"WARNING"}, "no download is running")
            return {"CANCELLED"}
        SESSION.models("cancel")
        return {"FINISHED"}


CLASSES = (CONJURE_OT_models_status, CONJURE_OT_models_download, CONJURE_OT_models_accept, CONJURE_OT_models_cancel)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
