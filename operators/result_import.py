"""Bring a job's result.glb into the scene, and export the selected mesh as a job input.

Generate places the result at the 3D cursor; stylize and edit give it the original's world
transform (the original was exported in its own local space) and hide the original,
never deleting it. Results go to the "Conjure" collection, named from the prompt, with the
job folder stored as the custom property "conjure_job" and the baked texture packed.
"""
from __future__ import annotations

import math

from pathlib import Path

import bpy
from mathutils import Matrix

COLLECTION = "Conjure"


def export_selected_mesh(obj: bpy.types.Object, path: Path) -> Path:
    """Write obj alone, in its local space (modifiers applied), as GLB."""
    if obj is None or obj.type != "MESH":
        raise RuntimeError("select a mesh object to stylize or edit")
    if len(obj.data.polygons) == 0:
        raise RuntimeError(f"{obj.name} has no faces: stylize and edit need a surface, not points or edges")
    saved_matrix, saved_selection = obj.matrix_world.copy(), list(bpy.context.selected_objects)
    active = bpy.context.view_layer.objects.active
    try:
        for o in saved_selection:
            o.select_set(False)
        obj.select_set(True)
        bpy.context.view_layer.objects.active = obj
        obj.matrix_world = Matrix.Identity(4)
        path.parent.mkdir(parents=True, exist_ok=True)
        bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", use_selection=True,
                                  export_apply=True, export_animations=False)
    finally:
        obj.matrix_world = saved_matrix
        obj.select_set(False)
        for o in saved_selection:
            o.select_set(True)
        bpy.context.view_layer.objects.active = active
    return path


def _collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    coll = bpy.data.collections.get(COLLECTION)
    if coll is None:
        coll = bpy.data.collections.new(COLLECTION)
    if coll.name not in scene.collection.children:
        scene.collection.children.link(coll)
    return coll


def _name(prompt: str, mode: str) -> str:
    words = "_".join(prompt.split()[:4]) or mode
    return f"Conjure_{words}"[:60]


def to_quads(obj: bpy.types.Object) -> None:
    """Blender's Tris to Quads (bmesh join_triangles at its 40-degree defaults) on the mesh;
    UVs, the material and the custom normals of the kept corners stay."""
    import bmesh

    bm = bmesh.new()
    bm.from_mesh(obj.data)
    limit = math.radians(40.0)
    bmesh.ops.join_triangles(bm, faces=bm.faces[:], angle_face_threshold=limit, angle_shape_threshold=limit,
                             cmp_uvs=True, cmp_materials=True)
    for face in bm.faces:  # as imported: smooth everywhere, the custom normals shape the shading
        face.smooth = True
    bm.to_mesh(obj.data)
    bm.free()
    obj.data.update()


def import_result(glb: str, job_dir: Path, prompt: str, mode: str, target: str = "",
                  quads: bool = False) -> bpy.types.Object:
    """Import result.glb (quads: then Tris to Quads); -> the new mesh object."""
    scene = bpy.context.scene
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=glb)
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH"]
    if not meshes:
        raise RuntimeError(f"{glb} holds no mesh")
    obj = meshes[0]
    for o in new:  # the importer may add empties; keep only the mesh
        if o is not obj:
            bpy.data.objects.remove(o)
    coll = _collection(scene)
    for c in list(obj.users_collection):
        c.objects.unlink(obj)
    coll.objects.link(obj)
    obj.name = _name(prompt, mode)
    if quads:
        to_quads(obj)
    original = bpy.data.objects.get(target) if target else None
    if original is not None:
        obj.matrix_world = original.matrix_world.copy()
        original.hide_set(True)
        original.hide_render = True
    else:
        obj.location = scene.cursor.location.copy()
    for node in material_nodes(obj):
        if node.type == "TEX_IMAGE" and node.image is not None and not node.image.packed_file:
            node.image.pack()
    obj["conjure_job"] = str(job_dir)
    obj["conjure_mode"] = mode
    for o in bpy.context.selected_objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    return obj


def material_nodes(obj: bpy.types.Object) -> list:
    """The shader nodes of an object's materials. A material's node tree is read directly:
    the material's use_nodes flag is deprecated since Blender 5.0 (every material has nodes)
    and goes in 6.0; in 4.x a material without nodes has no tree."""
    return [n for s in obj.material_slots if s.material and s.material.node_tree is not None
            for n in s.material.node_tree.nodes]
