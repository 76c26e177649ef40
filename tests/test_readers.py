"""A store read without mvtools' reader: xarray, dask, plain zarr, and imagecodecs' JPEG decoder."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvtools import open_store


def test_xarray_opens_a_video_as_a_dataset(synth_store):
    xr = pytest.importorskip("xarray")
    store = open_store(synth_store)
    key = store.keys()[0]
    view = store[key]
    ds = xr.open_zarr(str(synth_store), group=f"videos/{key}", consolidated=False)
    assert ds["frames"].dims == ("time", "y", "x", "rgb") and ds["mv"].dims == ("time", "cell_y", "cell_x",
                                                                                  "mv_channel")
    assert ds["keyframes"].dims == ("keyframe", "y", "x", "rgb") and ds.sizes["time"] == len(view)
    assert ds.attrs["label"] == view.attrs["label"] and ds["frames"].dtype == np.uint8
    np.testing.assert_array_equal(ds["frames"][3:7].values, view.frames[3:7])
    np.testing.assert_array_equal(ds["residual"][5].values, view.residual[5])  # int8 through the offset codec
    np.testing.assert_array_equal(ds["mv"].values, view.mv[:])


def test_dask_reads_each_array(synth_store):
    da = pytest.importorskip("dask.array")
    store = open_store(synth_store)
    key = store.keys()[1]
    for name in store[key].arrays():
        lazy = da.from_zarr(str(synth_store), component=f"videos/{key}/{name}")
        np.testing.assert_array_equal(lazy.compute(), store[key][name][:])


def test_frame_chunks_are_plain_jpeg_images_imagecodecs_decodes(synth_store):
    imagecodecs = pytest.importorskip("imagecodecs")
    import google_crc32c  # zarr's own dependency (its crc32c codec)

    store = open_store(synth_store)
    key = store.keys()[0]
    frames = store[key].frames
    shard = Path(synth_store) / "videos" / key / "frames" / "c" / "0" / "0" / "0" / "0"
    data = shard.read_bytes()
    n = frames.shards[0] // frames.chunks[0]  # the shard's index: n x (offset, nbytes) u64, then a crc32c
    index = np.frombuffer(data[-(16 * n + 4):-4], "<u8").reshape(n, 2)
    for i, (offset, nbytes) in enumerate(index):  # each chunk: a JPEG, then its CRC-32C (zarr's crc32c codec)
        jpeg, crc = data[offset:offset + nbytes - 4], data[offset + nbytes - 4:offset + nbytes]
        assert int(np.frombuffer(crc, "<u4")[0]) == google_crc32c.value(jpeg)
        image = imagecodecs.jpeg8_decode(jpeg)
        np.testing.assert_array_equal(image, frames[i])


def test_plain_zarr_reads_a_schema_2_store_with_codecs_only(synth_store):
    """zarr finds the JPEG codec through its entry point; nothing of the extraction or training stack loads."""
    key = open_store(synth_store).keys()[0]
    script = (
        "import sys, zarr\n"
        f"video = zarr.open_group({str(synth_store)!r}, mode='r')['videos'][{key!r}]\n"
        "print(video['frames'][2:5].shape, video['residual'][2].dtype,\n"
        "      [m for m in ('torch', 'ray', 'av', 'mvtools.store', 'mvtools.extract') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(3, 128, 192, 3) int8 []", out.stdout
