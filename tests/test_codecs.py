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


def test_image_jpeg_codec_is_one_standard_jpeg_per_chunk(tmp_path):
    import cv2

    from mvtools.codecs import ImageJpegCodec, decode_image, encode_image

    frames = smooth_frames(3)
    arr = zarr.create_array(tmp_path / "i.zarr", shape=frames.shape, dtype="uint8", chunks=(1, 48, 64, 3),
                            serializer=ImageJpegCodec(level=92), compressors=None)
    arr[:] = frames
    assert np.abs(arr[:].astype(int) - frames).mean() < 3
    chunk = (tmp_path / "i.zarr" / "c" / "1" / "0" / "0" / "0").read_bytes()  # one chunk, one image
    assert chunk[:2] == b"\xff\xd8" and chunk[-2:] == b"\xff\xd9"
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imdecode(np.frombuffer(chunk, np.uint8), cv2.IMREAD_COLOR),
                                               cv2.COLOR_BGR2RGB), arr[1])
    gray = frames[0, :, :, 0]
    assert np.abs(decode_image(np.frombuffer(encode_image(gray, 95), np.uint8), gray.shape).astype(int)
                  - gray).mean() < 2
    assert ImageJpegCodec.from_dict({"name": "imagecodecs_jpeg", "configuration": {"level": 75}}).level == 75
    with pytest.raises(ValueError, match="imagecodecs-zarr"):
        ImageJpegCodec.from_dict({"name": "imagecodecs_jpeg", "configuration": {"tables": "AAA="}})
    with pytest.raises(ValueError):
        ImageJpegCodec(level=101)
    with pytest.raises(ValueError, match="one uint8 image per chunk"):
        zarr.create_array(tmp_path / "bad.zarr", shape=(4, 8, 8, 3), dtype="int8", chunks=(1, 8, 8, 3),
                          serializer=ImageJpegCodec(), compressors=None)
