"""Runs inside a Python that has `bpy` (PyPI, headless): installs the extension zip the way
Blender does, enables it, runs one scenario through the operators and prints a JSON report
as its last line. Driven by tests/test_blender_addon.py, one process per scenario (bpy is
one Blender per process); also `make demo`.

    python tools/blender_driver.py ZIP SCENARIO WORKDIR [JSON_ARGS]
"""
import json
import os
import sys
import time
from pathlib import Path

import bpy

MODULE = "bl_ext.user_default.conjure"


def install(zip_path: str) -> None:
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert MODULE in bpy.context.preferences.addons


def session():  # noqa: ANN201
    return sys.modules[MODULE + ".operators.session"].SESSION


def configure(models: str, work: Path) -> None:
    prefs = bpy.context.preferences.addons[MODULE].preferences
    # the backend's interpreter: this one (bpy 4.5 shares the backend's venv), or the one named
    # (a newer bpy runs on another Python than the backend)
    prefs.python = os.environ.get("CONJURE_BACKEND_PYTHON", sys.executable)
    prefs.models = models
    prefs.jobs_dir = str(work / "jobs")
    prefs.device = "cpu"


def report_object(name: str) -> dict:
    obj = bpy.data.objects[name]
    nodes = sys.modules[MODULE + ".operators.result_import"].material_nodes(obj)  # the add-on's own reading
    images = [n.image for n in nodes if n.type == "TEX_IMAGE" and n.image]
    return {"name": obj.name, "uv_layers": len(obj.data.uv_layers), "faces": len(obj.data.polygons),
            "images": len(images), "packed": all(i.packed_file is not None for i in images),
            "smooth": sum(p.use_smooth for p in obj.data.polygons) / max(len(obj.data.polygons), 1),
            "flat": [p.index for p in obj.data.polygons if not p.use_smooth],
            "custom_normals": obj.data.has_custom_normals,
            "quads": sum(len(p.vertices) == 4 for p in obj.data.polygons),
            "normal_map": any(n.type == "NORMAL_MAP" for n in nodes),
            "image_size": list(images[0].size) if images else None,
            "bsdf_linked": sorted({i.name for n in nodes if n.type == "BSDF_PRINCIPLED" for i in n.inputs
                                   if i.is_linked}),
            "collection": [c.name for c in obj.users_collection],
            "matrix": [list(r) for r in obj.matrix_world], "job": obj.get("conjure_job", "")}


def state() -> dict:
    s = bpy.context.window_manager.conjure
    return {"status": s.status, "error": s.error, "hint": s.hint, "step": s.step, "phase": s.phase,
            "running": s.running, "result": s.result_object, "preview": s.preview}


OPERATORS = ("generate", "stylize", "edit", "cancel", "resume", "wait", "free_backend", "install_backend",
             "image_slot", "models_status", "models_download", "models_accept", "models_cancel")


def operator_exists(idname: str) -> bool:
    """hasattr(bpy.ops.conjure, name) is True for any name; the RNA type is only found for a
    registered operator."""
    module, name = idname.split(".")
    try:
        getattr(getattr(bpy.ops, module), name).get_rna_type()
    except KeyError:
        return False
    return True


class _OperatorProps:
    """What layout.operator returns: only the operator's own properties may be set."""

    def __init__(self, idname: str, missing: list) -> None:
        module, name = idname.split(".")
        props = getattr(getattr(bpy.ops, module), name).get_rna_type().properties
        object.__setattr__(self, "_check", lambda key: key in props or missing.append(f"{idname}.{key}"))

    def __setattr__(self, key: str, value: object) -> None:
        self._check(key)


class Layout:
    """Stands in for a panel's UILayout (headless Blender has no region to draw in): records
    each property drawn and names every property, operator or list that does not exist.
    __slots__: a misspelt layout attribute raises, as it does on a real UILayout."""

    __slots__ = ("missing", "drawn", "enabled", "alert", "scale_y", "use_property_split")

    def __init__(self, missing: list, drawn: set) -> None:
        self.missing, self.drawn = missing, drawn

    def row(self, **kw: object) -> "Layout":
        return Layout(self.missing, self.drawn)

    column = box = row

    def _prop(self, data: bpy.types.bpy_struct, name: str) -> None:
        self.drawn.add((data.bl_rna.identifier, name))
        if name not in data.bl_rna.properties:
            self.missing.append(f"{data.bl_rna.identifier}.{name}")

    def prop(self, data: bpy.types.bpy_struct, name: str, **kw: object) -> None:
        self._prop(data, name)

    def operator(self, idname: str, **kw: object) -> _OperatorProps | None:
        if not operator_exists(idname):
            self.missing.append(idname)
            return None
        return _OperatorProps(idname, self.missing)

    def template_list(self, ui_list: str, list_id: str, data: bpy.types.bpy_struct, prop: str,
                      active_data: bpy.types.bpy_struct, active_prop: str, **kw: object) -> None:
        if not hasattr(bpy.types, ui_list):
            self.missing.append(ui_list)
        self._prop(data, prop)
        self._prop(active_data, active_prop)

    def template_ID(self, data: bpy.types.bpy_struct, prop: str, open: str = "", **kw: object) -> None:  # noqa: A002, N802
        self._prop(data, prop)
        if open and not operator_exists(open):
            self.missing.append(open)

    def label(self, **kw: object) -> None:
        pass

    progress = template_icon = separator = label


def draw_panels() -> dict:
    """Every panel of the tab drawn in each mode: idle; queued after a job failed for missing
    models, the models box showing a download; the same with the download stopped on an
    error. Returns the (class, property) pairs drawn and the names drawn that do not exist."""
    missing: list = []
    drawn: set = set()
    panels = [c for c in bpy.types.Panel.__subclasses__() if c.__name__.startswith("CONJURE_PT_")]
    wm, scene = bpy.context.window_manager.conjure, bpy.context.scene.conjure
    failed = {"status": "queued", "queue_position": 2, "farm": "1/1 GPUs busy, 3 waiting", "error": "missing",
              "hint": "download", "error_code": "model_missing"}
    states = [({}, {}), (failed, {"status": "downloading", "downloading": True, "licences": "CC-BY-NC 4.0"}),
              (failed, {"status": "error", "downloading": False, "error": "no space", "hint": "free some"})]
    for mode in ("generate", "stylize", "edit"):
        scene.mode = mode
        for job, models in states:
            for target, values in ((wm, job), (wm.models, models)):
                for key, value in values.items():
                    setattr(target, key, value)
            for panel in panels:
                panel.draw(type("Drawn", (), {"layout": Layout(missing, drawn)})(), bpy.context)
    return {"missing": sorted(set(missing)), "drawn": sorted(drawn)}


def scenario_register(work: Path, args: dict) -> dict:
    panels = {c.bl_idname: {"parent": getattr(c, "bl_parent_id", ""), "options": sorted(getattr(c, "bl_options", ()))}
              for c in bpy.types.Panel.__subclasses__() if c.__name__.startswith("CONJURE_PT_")}
    out = {"ops": {n: operator_exists(f"conjure.{n}") for n in OPERATORS}, "panels": panels,
           "panel": hasattr(bpy.types, "CONJURE_PT_main"), "scene_props": hasattr(bpy.types.Scene, "conjure"),
           "settings": sorted(p.identifier for p in bpy.context.scene.conjure.bl_rna.properties
                              if p.identifier not in ("rna_type", "name")),
           "draw": draw_panels()}
    s = bpy.context.scene.conjure
    slots = [bpy.ops.conjure.image_slot(remove=r) for r in (False, False, False, True)]
    out["image_slot"] = {"results": [sorted(r) for r in slots], "images": len(s.images), "active": s.active_image}
    bpy.ops.preferences.addon_disable(module=MODULE)
    out["after_disable"] = {"scene_props": hasattr(bpy.types.Scene, "conjure"),
                            "panel": hasattr(bpy.types, "CONJURE_PT_main"),
                            "ops": [n for n in OPERATORS if operator_exists(f"conjure.{n}")]}
    bpy.ops.preferences.addon_enable(module=MODULE)
    out["re_enabled"] = hasattr(bpy.types, "CONJURE_PT_main")
    return out


def scenario_generate(work: Path, args: dict) -> dict:
    bpy.context.scene.cursor.location = (1.0, 2.0, 0.5)
    t0 = time.monotonic()
    result = bpy.ops.conjure.generate(**args["op"])
    out = {"op": sorted(result), "state": state(), "seconds": round(time.monotonic() - t0, 1)}
    if out["state"]["result"]:
        out["object"] = report_object(out["state"]["result"])
    if args.get("save"):
        bpy.ops.wm.save_as_mainfile(filepath=args["save"])
    return out


def _mesh_job(work: Path, args: dict, op) -> dict:  # noqa: ANN001
    bpy.ops.mesh.primitive_uv_sphere_add(segments=24, ring_count=12, radius=1.0, location=(3.0, -1.0, 0.5),
                                         rotation=(0.3, 0.0, 0.7))
    original = bpy.context.active_object
    original.scale = (1.5, 1.0, 0.8)
    original.name = "Original"
    bpy.context.view_layer.update()  # matrix_world follows the new scale
    matrix = [list(r) for r in original.matrix_world]
    result = op(**args["op"])
    out = {"op": sorted(result), "state": state(), "original_matrix": matrix,
           "original_hidden": original.hide_get(), "original_exists": "Original" in bpy.data.objects}
    if out["state"]["result"]:
        out["object"] = report_object(out["state"]["result"])
    return out


def scenario_stylize(work: Path, args: dict) -> dict:
    return _mesh_job(work, args, bpy.ops.conjure.stylize)


def scenario_edit(work: Path, args: dict) -> dict:
    return _mesh_job(work, args, bpy.ops.conjure.edit)


def scenario_cancel(work: Path, args: dict) -> dict:
    assert bpy.ops.conjure.generate(wait=False, **args["op"]) == {"FINISHED"}
    bpy.ops.conjure.wait(until="progress", timeout=300)
    at_cancel = bpy.context.window_manager.conjure.step
    bpy.ops.conjure.cancel()
    bpy.ops.conjure.wait(until="end", timeout=300)
    return {"state": state(), "step_at_cancel": at_cancel,
            "messages": [m for m in session().job.messages] if session().job else []}


def scenario_kill(work: Path, args: dict) -> dict:
    assert bpy.ops.conjure.generate(wait=False, **args["op"]) == {"FINISHED"}
    bpy.ops.conjure.wait(until="progress", timeout=300)
    session().backend.proc.kill()
    bpy.ops.conjure.wait(until="end", timeout=60)
    out = {"state": state()}
    out["blender_usable"] = bpy.ops.mesh.primitive_cube_add() == {"FINISHED"}
    job_dirs = sorted((work / "jobs").iterdir())
    out["job_folder_kept"] = (job_dirs[-1] / "out" / "events.jsonl").exists() if job_dirs else False
    return out


def _jobs(work: Path) -> list[Path]:
    return sorted(p for p in (work / "jobs").iterdir() if p.is_dir())


def scenario_resume(work: Path, args: dict) -> dict:
    """Backend killed mid-job, then Resume: the same folder goes on from its checkpoint."""
    assert bpy.ops.conjure.generate(wait=False, **args["op"]) == {"FINISHED"}
    bpy.ops.conjure.wait(until="progress", timeout=300)
    while bpy.context.window_manager.conjure.step < args["kill_after"]:
        bpy.ops.conjure.wait(until="end", timeout=0.2)
    session().backend.proc.kill()
    bpy.ops.conjure.wait(until="end", timeout=60)
    after_kill = state()
    out = {"after_kill": after_kill, "resume": sorted(bpy.ops.conjure.resume(wait=True))}
    out["state"], out["jobs"] = state(), [p.name for p in _jobs(work)]
    events = [json.loads(x) for x in (_jobs(work)[0] / "out" / "events.jsonl").read_text().splitlines()]
    out["logs"] = [e["message"] for e in events if e["type"] == "log"]
    return out


def scenario_double(work: Path, args: dict) -> dict:
    """A second Generate while a job runs is refused and changes nothing of the first."""
    assert bpy.ops.conjure.generate(wait=False, **args["op"]) == {"FINISHED"}
    bpy.ops.conjure.wait(until="progress", timeout=300)
    before, job_id = state(), session().job.id
    try:
        second = sorted(bpy.ops.conjure.generate(wait=False, **args["op"]))
    except RuntimeError as exc:  # bpy raises for an operator that reported an error
        second = [str(exc).splitlines()[0]]
    out = {"second": second, "running_after": state()["running"], "same_job": session().job.id == job_id,
           "jobs": len(_jobs(work)), "before": before}
    bpy.ops.conjure.cancel()
    bpy.ops.conjure.wait(until="end", timeout=300)
    return out


def scenario_load(work: Path, args: dict) -> dict:
    """Loading another file resets the session: the next job is not refused."""
    assert bpy.ops.conjure.generate(wait=False, **args["op"]) == {"FINISHED"}
    bpy.ops.conjure.wait(until="progress", timeout=300)
    bpy.ops.wm.read_homefile()
    out = {"job_after_load": session().job is not None, "state_after_load": state()}
    out["next"] = sorted(bpy.ops.conjure.generate(wait=True, **args["fast"]))
    out["state"] = state()
    return out


def scenario_models(work: Path, args: dict) -> dict:
    """A fresh machine: the job fails for missing models, the panel's "Download what this
    job needs" asks for the licences, accepting downloads them, the job then runs offline."""
    import shutil

    bpy.context.preferences.system.use_online_access = True
    wm = bpy.context.window_manager.conjure
    m = wm.models
    try:  # headless, an operator that reports an error raises
        out = {"first": sorted(bpy.ops.conjure.generate(**args["op"]))}
    except RuntimeError as exc:
        out = {"first": str(exc)[:300]}
    out.update(first_state=state(), error_code=wm.error_code)
    out["download"] = sorted(bpy.ops.conjure.models_download(for_job=True))
    out["licences"] = m.licences
    out["accept"] = sorted(bpy.ops.conjure.models_accept())
    out["after"] = {"status": m.status, "done_gb": m.done_gb, "total_gb": m.total_gb, "error": m.error,
                    "hint": m.hint}
    bpy.ops.conjure.models_status()
    out["present"] = {r.role: r.present for r in m.roles}
    out["free_gb"], out["cache"] = m.free_gb, m.cache
    shutil.copy(args["imagebind_config"], Path(args["imagebind_folder"]) / "config.json")  # the stand-in is tiny
    out["second"] = sorted(bpy.ops.conjure.generate(**args["op"]))
    out["second_state"] = state()
    return out


def scenario_farm(work: Path, args: dict) -> dict:
    """The add-on unchanged against a studio farm (serve --http --ray): queued behind
    another artist's job, the panel's queue position and farm load, then the result."""
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.remote_url, prefs.remote_token, prefs.remote_priority = args["url"], args["token"], "HIGH"
    s = bpy.context.window_manager.conjure
    assert bpy.ops.conjure.generate(wait=False, **args["op"]) == {"FINISHED"}
    seen, end = [], time.monotonic() + 600
    while s.running and s.step == 0 and time.monotonic() < end:
        session().pump()
        if s.status == "queued" and s.queue_position >= 0 and (s.queue_position, s.farm) not in seen:
            seen.append((s.queue_position, s.farm))
        time.sleep(0.05)
    bpy.ops.conjure.wait(until="end", timeout=600)
    out = {"queued": seen, "state": state()}
    if out["state"]["result"]:
        out["object"] = report_object(out["state"]["result"])
    return out


def main() -> None:
    zip_path, name, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    args = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    install(zip_path)
    configure(args.get("models", "tiny"), work)
    try:
        report = globals()[f"scenario_{name}"](work, args)
    finally:
        session().close_backend()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
