"""Schema-1 stores: refused with a message naming the way out, and `mvtools migrate` converts them."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

from mvtools import StoreError, open_store
from mvtools.codecs import JpegCodec
from mvtools.config import ExtractConfig

MVTOOLS = str(Path(sys.executable).with_name("mvtools"))


def schema_1_store(path: Path) -> dict:
    """A store as mvtools 0.1 wrote it: 16-frame chunks, 128-frame shards, the ``mvtools.jpeg`` codec."""
    rng = np.random.default_rng(0)
    T, h, w = 20, 16, 24
    ramp = np.add.outer(np.arange(h), np.arange(w))[None, :, :, None] * 5
    values = {
        "frames": np.broadcast_to(ramp + np.arange(T)[:, None, None, None] * 2, (T, h, w, 3)).astype(np.uint8),
        "residual": (np.broadcast_to(ramp, (T, h, w, 3)) - 60).astype(np.int8),
        "mv": (np.round(rng.normal(0, 3, (T, h // 4, w // 4, 4)) * 8) / 8).astype(np.float16),
        "mv_mask": rng.random((T, h // 4, w // 4, 2)) > 0.3,
        "frame_type": np.array([0] + [1] * (T - 1), np.uint8),
        "pts": np.arange(T) / 25.0,
        "keyframe_index": np.array([0, 12], np.int32),
    }
    values["keyframes"] = values["frames"][[0, 12]]
    settings = ExtractConfig(size=h).settings()
    root = zarr.open_group(path, mode="w", attributes={"mvtools_schema": 1, "mvtools_version": "0.1.0",
                                                      "settings": settings, "labels": ["a"],
                                                      "failures": {"b/bad.mp4": "empty file (0 bytes)"}})
    videos = root.create_group("videos")
    attrs = {"source": "a/v.mp4", "label": "a", "fps": 25.0, "num_frames": T, "width": 48, "height": 32,
             "codec": "h264", "sha256": "0" * 64, "source_bytes": 1000, "stored_width": w, "stored_height": h,
             "transcoded": False, "rotation": 0, "complete": True}
    group = videos.create_group("a__v", attributes=attrs)
    for name, data in values.items():
        per_frame = name not in ("keyframes", "keyframe_index")
        if name in ("frames", "residual", "keyframes"):
            kw = {"serializer": JpegCodec(quality=95), "compressors": None}
        else:
            kw = {"compressors": ZstdCodec(level=3)}
        group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(16 if per_frame else 1, *data.shape[1:]),
                           shards=(128 if per_frame else 64, *data.shape[1:]), **kw)[:] = data
    return values


def test_schema_1_is_refused_and_migrate_converts_it(tmp_path):
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    values = schema_1_store(old)
    with pytest.raises(StoreError, match="re-extract it, or run `mvtools migrate"):
        open_store(old)
    out = subprocess.run([MVTOOLS, "info", old], capture_output=True, text=True)
    assert out.returncode == 2 and "migrate" in out.stderr and out.stderr.count("\n") == 1
    out = subprocess.run([MVTOOLS, "migrate", old, new, "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    store = open_store(new)
    assert store.keys() == ["a__v"] and store.attrs["failures"] == {"b/bad.mp4": "empty file (0 bytes)"}
    view = store["a__v"]
    assert view.attrs["source"] == "a/v.mp4" and view.attrs["label"] == "a" and view.frames.chunks[0] == 1
    for name in ("mv", "mv_mask", "frame_type", "pts", "keyframe_index"):
        np.testing.assert_array_equal(view[name][:], values[name], err_msg=name)
    for name in ("frames", "residual", "keyframes"):  # decoded and coded again
        assert np.abs(view[name][:].astype(int) - values[name]).max() <= 6, name
    out = subprocess.run([MVTOOLS, "migrate", old, new, "--quiet"], capture_output=True, text=True)
    assert out.returncode == 2 and "already holds videos" in out.stderr
