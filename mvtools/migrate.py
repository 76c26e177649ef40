"""``mvtools migrate OLD NEW``: a schema-1 store (mvtools 0.1) rewritten as schema 2, without the sources.

Schema 2 keeps every array and attribute; it changes the layout (one frame per JPEG chunk, the
``imagecodecs_jpeg`` codec, dimension names, the index). Vectors, masks, frame types and timestamps are
copied exactly; frames, residuals and keyframes are decoded and JPEG-coded again at the store's quality,
a second lossy pass (re-extracting from the sources avoids it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import zarr

from .errors import StoreError
from .index import VideoIndex
from .storage import zarr_store
from .store import VideoWriter, create_store, storage_errors

#: Attributes the writer sets itself.
_WRITER_ATTRS = ("complete", "num_frames", "bytes", "files")


def migrate(old: str | os.PathLike, new: str | os.PathLike, *, storage_options: Mapping[str, str] | None = None,
            progress: bool = True) -> int:
    """Write every complete video of the schema-1 store ``old`` into a new schema-2 store ``new``; returns
    the number of videos. ``StoreError`` if ``old`` is not a schema-1 store or ``new`` exists."""
    from tqdm import tqdm

    old, new = os.fspath(old), os.fspath(new)
    with storage_errors(old):
        root = zarr.open_group(zarr_store(old, storage_options=storage_options), mode="r", zarr_format=3)
        if root.attrs.get("mvtools_schema") != 1:
            raise StoreError(old, f"not a schema-1 mvtools store (schema {root.attrs.get('mvtools_schema')})")
        groups = [(key, group) for key, group in sorted(root["videos"].groups()) if group.attrs.get("complete")]
    target = create_store(new, dict(root.attrs["settings"]), storage_options)
    if target.index() is not None or target.all_keys():
        raise StoreError(new, "already holds videos; migrate into a new location")
    rows = []
    with storage_errors(new):
        target.invalidate_index()
        for key, group in tqdm(groups, desc="migrate", unit="video", disable=not progress):
            rows.append(copy_video(target, key, group))
        index = VideoIndex.from_rows(rows)
        target.write_index(index, labels=sorted(index.labels()), failures=dict(root.attrs.get("failures", {})))
    return len(rows)


def copy_video(target, key: str, group: zarr.Group) -> dict:
    """One schema-1 video group into ``target`` through the schema-2 writer; returns its index row."""
    attrs = {k: v for k, v in group.attrs.asdict().items() if k not in _WRITER_ATTRS}
    n = int(group.attrs["num_frames"])
    arrays = dict(group.arrays())
    writer: VideoWriter = target.begin_video(key, int(attrs["stored_height"]), int(attrs["stored_width"]), attrs,
                                             expected_frames=n)
    per_frame = [name for name in arrays if name not in VideoWriter.KEYFRAMES]
    for start in range(0, n, writer.block):
        block = {name: arrays[name][start:start + writer.block] for name in per_frame}
        for t in range(len(block["pts"])):
            writer.append({name: values[t] for name, values in block.items()})
    if "keyframes" in arrays:
        for index, frame in zip(arrays["keyframe_index"][:], arrays["keyframes"][:]):
            writer.append_keyframe(int(index), frame)
    return writer.commit(attrs)
