"""Every input file a job names, read once before any work: a file that cannot be used
(zero bytes, truncated, another format behind the extension, a point cloud) is refused as
an InputFileError naming its field (`prompt.images[1]`), not met phases later."""
from __future__ import annotations

from ..conditioning.audio import AudioError, read_audio
from ..conditioning.image import ImageInputError, load_image
from ..errors import InputFileError, MeshError
from ..geometry.mesh import load_mesh
from ..job import Job

HINTS = {"image": "give a PNG or JPEG image of at least 8x8 pixels",
         "audio": "give a WAV, FLAC or OGG file of at least 25 ms with finite samples"}


def check_input_files(job: Job) -> None:
    """job: read (backend/job.read_job), paths absolute. Images decode to at least 8x8
    pixels, audio to at least one 25 ms frame, meshes to triangles."""
    for field, path in job.inputs():
        kind = ("image" if field.startswith("prompt.images") or field == "style_image" else
                "audio" if field == "prompt.audio" else "mesh")
        try:
            {"image": load_image, "audio": read_audio, "mesh": load_mesh}[kind](path)
        except (ImageInputError, AudioError, MeshError) as exc:
            raise InputFileError(field, str(exc), getattr(exc, "hint", None) or HINTS[kind]) from exc
