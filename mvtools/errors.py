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


class DamagedData(StoreError):
    """Stored bytes that cannot be what was written: a chunk that does not decode, a shard missing from a
    complete video, a size that differs from the one recorded at commit. Never read as zeros or wrong pixels."""

    def __init__(self, store: str | os.PathLike, video: str, array: str, frames: tuple[int, int] | None,
                 reason: str):
        self.video, self.array, self.frames = video, array, frames
        where = f"video {video!r}, array {array!r}" + (f", frames {frames[0]}-{frames[1] - 1}" if frames else "")
        super().__init__(store, f"{where}: {reason} (mvtools verify STORE --repair marks it for re-extraction)")
