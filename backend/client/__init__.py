"""Client side of the protocol, used by the Blender add-on. Standard library only, no bpy:
it is unit-tested without Blender.

A client talks to one backend, a local subprocess (`StdioBackend`: `<python> -m backend
serve --stdio`) or a remote server (`HttpBackend`). A reader thread turns what arrives into
messages on a queue; the add-on drains it from a timer on Blender's main thread with
poll(), so Blender never waits on the backend. Anything unreadable becomes an error
message (code "protocol"); a backend that exits becomes one with code "backend_died", with
the tail of its log. The job folder is on disk and survives either way.
"""
from .base import Backend
from .http import HttpBackend
from .stdio import StdioBackend

__all__ = ["Backend", "HttpBackend", "StdioBackend"]
