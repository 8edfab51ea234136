"""Conjure: a Blender 4.2+ extension. This module only registers; the add-on's parts live
in preferences.py, properties.py, operators/ and panels/. Nothing here imports torch: the
generation backend runs in its own process (backend/, talked to through backend/client/).
Imports happen in register() so that the repository can also be imported without bpy.
"""


def _modules():  # noqa: ANN202
    from . import preferences, properties
    from .operators import backend_ops, input_ops, job_ops, model_ops, session
    from .panels import sidebar

    return (preferences, properties, session, job_ops, input_ops, backend_ops, model_ops, sidebar)


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    from .operators import session

    session.shutdown()
    for module in reversed(_modules()):
        module.unregister()
