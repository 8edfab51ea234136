"""conjure.image_slot: adds or removes a row of the sidebar's reference-image list."""
from __future__ import annotations

import bpy


class CONJURE_OT_image_slot(bpy.types.Operator):
    """Add or remove a reference image"""

    bl_idname, bl_label = "conjure.image_slot", "Reference Image"
    remove: bpy.props.BoolProperty()

    def execute(self, context: bpy.types.Context) -> set[str]:
        s = context.scene.conjure
        if self.remove:
            if len(s.images):
                s.images.remove(s.active_image)
                s.active_image = max(0, s.active_image - 1)
        else:
            s.images.add()
            s.active_image = len(s.images) - 1
        return {"FINISHED"}


CLASSES = (CONJURE_OT_image_slot,)


# Blender's own helper: registers in order, unregisters in reverse.
register, unregister = bpy.utils.register_classes_factory(CLASSES)
