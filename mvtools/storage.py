"""Where a store lives, as a zarr ``Store``: a local folder now, through obstore's Rust I/O.

zarr's own ``LocalStore`` hands every file operation to a Python thread; obstore's local store does the
same writes (to a staging file, then renamed into place, so a reader never sees half a file) at about half
the CPU cost per small file, which is what a video of a few frames is made of. The bytes on disk are the
same plain zarr layout: ``zarr.open_group(path)`` reads them with zarr alone.
"""

from __future__ import annotations

import os

import zarr
from zarr.storage import ObjectStore, WrapperStore


class SizeRecordingStore(WrapperStore):
    """A store that remembers the size of every object written through it (until deleted), so that a
    writer knows what each array takes on storage without listing it afterwards."""

    def __init__(self, store: zarr.abc.store.Store):
        super().__init__(store)
        self.sizes: dict[str, int] = {}

    async def set(self, key: str, value) -> None:
        await self._store.set(key, value)
        self.sizes[key] = len(value)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        self.sizes.pop(key, None)

    async def delete_dir(self, prefix: str) -> None:
        await self._store.delete_dir(prefix)
        self.forget(prefix)

    def recorded(self, prefix: str) -> dict[str, int]:
        """Sizes of the objects written under ``prefix`` (a folder)."""
        prefix = prefix.rstrip("/") + "/"
        return {k: v for k, v in self.sizes.items() if k.startswith(prefix)}

    def forget(self, prefix: str) -> None:
        for key in self.recorded(prefix):
            del self.sizes[key]


def zarr_store(location: str | os.PathLike, *, read_only: bool = True) -> zarr.abc.store.Store:
    """A zarr store over the folder ``location`` (created when writing; then sizes are recorded)."""
    from obstore.store import LocalStore

    path = os.path.abspath(os.fspath(location))
    if read_only:
        return ObjectStore(LocalStore(path), read_only=True)
    os.makedirs(path, exist_ok=True)
    return SizeRecordingStore(ObjectStore(LocalStore(path, automatic_cleanup=True), read_only=False))
