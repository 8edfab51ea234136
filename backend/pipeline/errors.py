"""Errors of a job's configuration."""
from __future__ import annotations


class ConfigError(ValueError):
    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field  # the dotted key at fault, when one is
