"""The 3D view sidebar tab."""
