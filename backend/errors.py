"""The errors a job can end with, in one light module (standard library only, no torch):
the server and the CLI catch them without importing the pipeline. Each carries what the
user can change: the dotted field, or a hint."""
from __future__ import annotations

from .protocol import JobError


class ConfigError(ValueError):
    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field  # the dotted key at fault, when one is


class PipelineError(RuntimeError):
    """A run that cannot go on; `hint` says what the user can change."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class OutOfGPUMemory(PipelineError):
    """The job does not fit the GPU (refused before work, or out of memory mid-run with the
    last step's checkpoint kept)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Memory ran out: CUDA's allocator ("CUDA out of memory"), the CPU's ("DefaultCPUAllocator:
    can't allocate memory") or Python's MemoryError."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


class Cancelled(Exception):
    """The user cancelled; the last checkpoint is on disk and the job can be resumed."""


class ModelNotAvailable(RuntimeError):
    """Weights for a role cannot be found; the message names the role, where we looked and
    how to provide them."""

    def __init__(self, role: str, where: str, hint: str) -> None:
        super().__init__(f"model for role {role!r} not available at {where}: {hint}")
        self.role, self.where, self.hint = role, where, hint


class MeshError(ValueError):
    """A mesh file that cannot be used; the message says why, `hint` what to give instead."""

    def __init__(self, message: str, hint: str = "give a surface mesh (GLB, OBJ, PLY or STL) with faces") -> None:
        super().__init__(message)
        self.hint = hint


class InputFileError(JobError):
    """A named input file that exists but cannot be used; `hint` says what to give."""

    def __init__(self, field: str, message: str, hint: str) -> None:
        super().__init__(field, message)
        self.hint = hint
