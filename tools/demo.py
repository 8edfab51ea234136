"""`make demo`: one generate job through the Blender extension in headless Blender.

Builds the extension with Blender's builder, installs it, runs conjure.generate on the
real models when every role they need is on this machine (draft preset), else on the
built-in tiny random models (a short run: the shape and texture are noise, the point is
the whole path), and writes demo/out.blend, demo/result.glb, demo/turntable.png.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
PROMPT = "a small wooden treasure chest with brass corners"
# Tiny models: enough steps to go through every phase and the export, in about a minute.
TINY_RUN = {"phase1.iterations": 30, "phase2.iterations": 20, "phase3.iterations": 20, "phase1.resolution": 48,
            "phase2.resolution": 64, "phase3.resolution": 64, "phase2.tet_res": 24, "phase2.density_threshold": 5.0,
            "export.texture_size": 256, "progress.preview_every": 5}
NEEDED = ("sd", "unclip", "clip", "zero123", "imagebind")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from backend.models.store import ModelStore

    store = ModelStore("default")
    real = all(store.available(role) for role in NEEDED)
    models, overrides = ("default", {}) if real else ("tiny", TINY_RUN)
    print(f"demo: {'real models (draft preset)' if real else 'tiny random models (no real weights found)'}")
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "ext").mkdir(parents=True)
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_extension.py"), str(DEMO / "ext")], check=True)
    zip_path = next((DEMO / "ext").glob("conjure-*.zip"))
    args = {"models": models, "save": str(DEMO / "out.blend"),
            "op": {"prompt": PROMPT, "preset": "draft", "overrides": json.dumps(overrides)}}
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(DEMO / "blender_user")}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "blender_driver.py"), str(zip_path), "generate",
                           str(DEMO), json.dumps(args)], env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        return proc.returncode
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["op"] != ["FINISHED"]:
        print(f"demo failed: {report['state']['error']}\n{report['state']['hint']}", file=sys.stderr)
        return 1
    job = Path(report["object"]["job"])
    shutil.copy(job / "out" / "result.glb", DEMO / "result.glb")
    shutil.copy(job / "out" / "turntable.png", DEMO / "turntable.png")
    print(f"demo: {report['object']['name']} ({report['object']['faces']} faces, texture "
          f"{report['object']['image_size']}) in {report['seconds']} s")
    print(f"demo: wrote {DEMO / 'out.blend'}, {DEMO / 'result.glb'}, {DEMO / 'turntable.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
