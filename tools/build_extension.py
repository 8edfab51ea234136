"""Build the extension zip with Blender's own builder (`blender --command extension build`
is this script of the bpy package): python tools/build_extension.py OUT_DIR"""
import subprocess
import sys
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    cli = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    subprocess.run([sys.executable, str(cli), "build", "--source-dir", str(ROOT), "--output-dir", sys.argv[1]],
                   check=True)


if __name__ == "__main__":
    main()
