"""3D view sidebar tab "Conjure": the mode on top, then collapsible sub-panels (parented
with bl_parent_id, as Dream Textures' ui/panels/dream_texture.py builds its own): Inputs
(with Weights, closed by default), Style, Output, and Progress (Generate / Cancel / Resume,
progress, preview, last error)."""
from __future__ import annotations

import bpy

from ..backend.job import MODALITIES
from ..backend.pipeline.memory_budget import estimated_peak_gb
from ..preferences import draw_models, prefs


class CONJURE_UL_images(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname):  # noqa: ANN001, PLR0913
        row = layout.row(align=True)
        row.prop(item, "image", text="")
        if item.image is None:
            row.prop(item, "path", text="")


class _Tab:
    """Where every panel of the tab lives (a mixin: Blender reads these class attributes)."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Conjure"


class CONJURE_PT_main(_Tab, bpy.types.Panel):
    bl_label = "Conjure"
    bl_idname = "CONJURE_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.prop(context.scene.conjure, "mode", text="")


class _Section(_Tab):
    """A collapsible section under the tab's main panel."""

    bl_parent_id = CONJURE_PT_main.bl_idname


class CONJURE_PT_inputs(_Section, bpy.types.Panel):
    bl_label = "Inputs"
    bl_idname = "CONJURE_PT_inputs"

    def draw(self, context: bpy.types.Context) -> None:
        s, layout = context.scene.conjure, self.layout
        layout.prop(s, "prompt", text="", icon="TEXT")
        layout.label(text="Reference images")
        row = layout.row()
        row.template_list("CONJURE_UL_images", "", s, "images", s, "active_image", rows=2)
        col = row.column(align=True)
        col.operator("conjure.image_slot", icon="ADD", text="").remove = False
        col.operator("conjure.image_slot", icon="REMOVE", text="").remove = True
        layout.prop(s, "audio")


class CONJURE_PT_weights(_Tab, bpy.types.Panel):
    """How much each kind of input counts (1 each unless changed: closed by default)."""

    bl_label = "Weights"
    bl_idname = "CONJURE_PT_weights"
    bl_parent_id = CONJURE_PT_inputs.bl_idname
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        s = context.scene.conjure
        col = self.layout.column(align=True)
        for m in MODALITIES:
            col.prop(s, f"weight_{m}")


class CONJURE_PT_style(_Section, bpy.types.Panel):
    bl_label = "Style"
    bl_idname = "CONJURE_PT_style"

    def draw(self, context: bpy.types.Context) -> None:
        self.layout.template_ID(context.scene.conjure, "style_image", open="image.open")


class CONJURE_PT_output(_Section, bpy.types.Panel):
    bl_label = "Output"
    bl_idname = "CONJURE_PT_output"

    def draw(self, context: bpy.types.Context) -> None:
        s, layout = context.scene.conjure, self.layout
        row = layout.row(align=True)
        row.prop(s, "preset")
        row.prop(s, "seed")
        preset = prefs().default_preset if s.preset == "DEFAULT" else s.preset
        need = estimated_peak_gb(preset)
        if need is not None:  # the estimator's figure, for a GPU backend
            layout.label(text=f"{preset}: about {need:.1f} GB of GPU memory (estimate)", icon="MEMORY")
        row = layout.row(align=True)
        row.prop(s, "max_faces")
        row.prop(s, "texture_size", text="")
        row = layout.row(align=True)
        row.prop(s, "quads", toggle=True)
        row.prop(s, "pbr", toggle=True)


class CONJURE_PT_progress(_Section, bpy.types.Panel):
    bl_label = "Progress"
    bl_idname = "CONJURE_PT_progress"

    def draw(self, context: bpy.types.Context) -> None:
        s, state, layout = context.scene.conjure, context.window_manager.conjure, self.layout
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.enabled = not state.running
        row.operator(f"conjure.{s.mode}", icon="SHADERFX")  # one operator per mode, named by it
        row = layout.row(align=True)
        row.enabled = state.running
        row.operator("conjure.cancel", icon="CANCEL")
        layout.operator("conjure.resume", icon="RECOVER_LAST")  # greyed out unless a job ended unfinished
        layout.operator("conjure.free_backend", icon="TRASH")
        if state.running or state.status not in ("idle", ""):
            box = layout.box()
            eta = f", ETA {state.eta_s:.0f}s" if state.running and state.eta_s else ""
            box.label(text=f"{state.status} {state.phase} {state.step}/{state.total}{eta}".strip())
            if state.status == "queued" and state.queue_position >= 0:
                box.label(text=f"{state.queue_position} job(s) ahead of yours", icon="SORTTIME")
            if state.status == "queued" and state.farm:
                box.label(text=state.farm)
            box.progress(factor=state.progress, type="BAR", text=f"{state.progress:.0%}")
        img = bpy.data.images.get("Conjure Preview")
        if img is not None and img.preview is not None:
            layout.template_icon(icon_value=img.preview.icon_id, scale=8.0)
        if state.error:
            box = layout.box()
            box.alert = True
            box.label(text=state.error, icon="ERROR")
            if state.hint:
                box.label(text=state.hint)
            if state.error_code == "model_missing":
                row = box.row()
                row.enabled = bpy.app.online_access  # else the hint: allow it in Preferences > System
                row.operator("conjure.models_download", text="Download What This Job Needs",
                             icon="IMPORT").for_job = True
        m = state.models
        if m.downloading or m.licences or m.status == "error":
            draw_models(layout.box(), m)  # the download it started, its licences, its error


# Parents before their children: Blender needs a sub-panel's parent registered first.
CLASSES = (CONJURE_UL_images, CONJURE_PT_main, CONJURE_PT_inputs, CONJURE_PT_weights, CONJURE_PT_style,
           CONJURE_PT_output, CONJURE_PT_progress)


# Blender's own helper: registers in order, unregisters in reverse.
register, unregister = bpy.utils.register_classes_factory(CLASSES)
