"""The errors a user can act on. Each names the file and says what went wrong."""

from __future__ import annotations

import os


class MvtoolsError(Exception):
    """Base of every error mvtools raises on purpose."""


class VideoError(MvtoolsError):
    """A video that cannot be opened, has no video stream, or is truncated or corrupt."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class StoreError(MvtoolsError):
    """A store that is missing, of another schema, or lacks what was asked of it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
