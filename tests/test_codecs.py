import subprocess
import sys

import numpy as np
import pytest
import zarr

from mvtools.codecs import JpegCodec, decode, encode


def smooth_frames(n=5, h=48, w=64, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h)) for _ in range(n)])


def test_roundtrip_uint8_and_int8():
    frames = smooth_frames()
    back = decode(encode(frames, 95), frames.shape, np.uint8)
    assert back.dtype == np.uint8 and np.abs(back.astype(int) - frames).mean() < 3
    signed = (frames.astype(np.int16) - 128).astype(np.int8)
    back = decode(encode(signed, 95), signed.shape, np.int8)
    assert back.dtype == np.int8 and np.abs(back.astype(int) - signed).mean() < 3
    assert len(encode(frames, 50)) < len(encode(frames, 95))


def test_rejects_bad_quality_and_shape(tmp_path):
    with pytest.raises(ValueError):
        JpegCodec(quality=0)
    with pytest.raises(ValueError):
        zarr.create_array(tmp_path / "a.zarr", shape=(4, 8), dtype="uint8", serializer=JpegCodec(),
                          compressors=None)


def test_plain_zarr_reads_the_codec_without_importing_mvtools(tmp_path):
    frames = smooth_frames()
    arr = zarr.create_array(tmp_path / "f.zarr", shape=frames.shape, dtype="uint8", chunks=(2, 48, 64, 3),
                            serializer=JpegCodec(quality=90), compressors=None)
    arr[:] = frames
    script = (
        "import sys, zarr, numpy as np\n"
        f"a = zarr.open_array({str(tmp_path / 'f.zarr')!r}, mode='r')\n"
        "x = a[1:4]\n"
        "print(x.shape, x.dtype, int(x.mean()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == f"(3, 48, 64, 3) uint8 {int(arr[1:4].mean())}"
