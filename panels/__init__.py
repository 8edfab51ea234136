"""The 3D view sidebar tab: a parent panel and its collapsible sub-panels."""
