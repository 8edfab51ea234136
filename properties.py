"""What the panel edits (scene: the job's inputs) and what it shows (window manager: the
running job's state, updated on the main thread from backend messages)."""
from __future__ import annotations

import bpy

from .backend.job import DEFAULT_WEIGHT, MODALITIES, MODE_HELP, MODES
from .preferences import PRESETS

MODE_ITEMS = [(m, m.title() if m == "generate" else f"{m.title()} selected", MODE_HELP[m]) for m in MODES]


class ConjureImageItem(bpy.types.PropertyGroup):
    image: bpy.props.PointerProperty(type=bpy.types.Image, name="Image")
    path: bpy.props.StringProperty(name="File", subtype="FILE_PATH")


class ConjureSettings(bpy.types.PropertyGroup):
    prompt: bpy.props.StringProperty(name="Prompt", description="What to make")
    images: bpy.props.CollectionProperty(type=ConjureImageItem)
    active_image: bpy.props.IntProperty()
    audio: bpy.props.StringProperty(name="Sound", subtype="FILE_PATH", description="WAV, FLAC or OGG clip")
    style_image: bpy.props.PointerProperty(type=bpy.types.Image, name="Style image")
    mode: bpy.props.EnumProperty(name="Mode", items=MODE_ITEMS)
    preset: bpy.props.EnumProperty(name="Preset", items=[("DEFAULT", "Default", "The preferences' default preset")]
                                   + PRESETS)
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
    max_faces: bpy.props.IntProperty(name="Faces", default=0, min=0, soft_max=200_000,
                                     description="Face budget of the result (0: the preset's)")
    texture_size: bpy.props.EnumProperty(name="Texture", default="0", description="Texture size of the result",
                                         items=[("0", "Preset", "The preset's texture size"), ("1024", "1K", ""),
                                                ("2048", "2K", ""), ("4096", "4K", "")])
    quads: bpy.props.BoolProperty(name="Quads", default=False,
                                  description="Join the result's triangles into quads after import (Tris to Quads)")
    pbr: bpy.props.BoolProperty(name="PBR", default=False,
                                description="Learn roughness and metallic maps along with the colours (from lit "
                                            "views); off: the preset's constant roughness and metallic")


# weight_text, weight_images, weight_audio: one per modality the job's prompt has
ConjureSettings.__annotations__.update(
    {f"weight_{m}": bpy.props.FloatProperty(name=m.title(), default=DEFAULT_WEIGHT, min=0.0, soft_max=2.0)
     for m in MODALITIES})


class ConjureModelRole(bpy.types.PropertyGroup):
    """One model role as the backend's last `models_status` described it."""

    role: bpy.props.StringProperty()
    present: bpy.props.BoolProperty()
    size_gb: bpy.props.FloatProperty()
    licence: bpy.props.StringProperty()
    where: bpy.props.StringProperty()


class ConjureModels(bpy.types.PropertyGroup):
    """The Models box: every role, the cache and its free space, a download's progress."""

    roles: bpy.props.CollectionProperty(type=ConjureModelRole)
    cache: bpy.props.StringProperty()
    free_gb: bpy.props.FloatProperty()
    downloading: bpy.props.BoolProperty()
    status: bpy.props.StringProperty(default="unknown")  # unknown, asking, downloading, done, cancelled, error
    file: bpy.props.StringProperty()
    progress: bpy.props.FloatProperty(subtype="FACTOR", min=0.0, max=1.0)
    done_gb: bpy.props.FloatProperty()
    total_gb: bpy.props.FloatProperty()
    rate_mbps: bpy.props.FloatProperty()
    eta_s: bpy.props.FloatProperty()
    error: bpy.props.StringProperty()
    hint: bpy.props.StringProperty()
    licences: bpy.props.StringProperty(description="Licences waiting to be accepted, one per line")
    request: bpy.props.StringProperty(description="The refused download (JSON), to repeat once accepted")


class ConjureState(bpy.types.PropertyGroup):
    running: bpy.props.BoolProperty()
    status: bpy.props.StringProperty(default="idle")
    phase: bpy.props.StringProperty()
    step: bpy.props.IntProperty()
    total: bpy.props.IntProperty()
    progress: bpy.props.FloatProperty(subtype="FACTOR", min=0.0, max=1.0)
    eta_s: bpy.props.FloatProperty()
    queue_position: bpy.props.IntProperty(default=-1)  # jobs ahead while queued; -1 once it runs
    farm: bpy.props.StringProperty()  # a farm's load while queued ("2/2 GPUs busy, 5 waiting")
    preview: bpy.props.StringProperty(subtype="FILE_PATH")
    error: bpy.props.StringProperty()
    error_code: bpy.props.StringProperty()
    hint: bpy.props.StringProperty()
    job_dir: bpy.props.StringProperty(subtype="DIR_PATH")
    result_object: bpy.props.StringProperty()
    models: bpy.props.PointerProperty(type=ConjureModels)
    install_status: bpy.props.StringProperty()  # Install Backend: the torch build picked, then pip's step
    install_progress: bpy.props.FloatProperty(subtype="FACTOR", min=0.0, max=1.0)
    doctor: bpy.props.StringProperty()  # `backend doctor` after the install, in one line


CLASSES = (ConjureImageItem, ConjureSettings, ConjureModelRole, ConjureModels, ConjureState)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.conjure = bpy.props.PointerProperty(type=ConjureSettings)
    bpy.types.WindowManager.conjure = bpy.props.PointerProperty(type=ConjureState)


def unregister() -> None:
    del bpy.types.WindowManager.conjure
    del bpy.types.Scene.conjure
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
