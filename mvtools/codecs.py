"""``mvtools.jpeg``: a zarr v3 array->bytes codec storing each frame of a (t, h, w, c) chunk as a JPEG.

Installed mvtools registers it under the ``zarr.codecs`` entry point, so plain ``zarr.open`` decodes it
without importing mvtools. The chunk format is simple enough to read by hand:

    uint32 n | n x uint32 byte lengths | n JPEG images (little-endian header)

uint8 data is coded as is; int8 data (residuals) is offset by +128 first. Channels are RGB in the array;
each image is a standard 3-channel (or 1-channel) JPEG.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer

NAME = "mvtools.jpeg"
# OpenCV >= 4.11 decodes straight to RGB (libjpeg's own colour conversion: the same pixels, one pass less).
RGB_DECODE = getattr(cv2, "IMREAD_COLOR_RGB", None)


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Lossy JPEG per frame along axis 0; quality in 1..100."""

    is_fixed_size = False
    quality: int = 90

    def __post_init__(self):
        if not 1 <= int(self.quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.quality}")

    @classmethod
    def from_dict(cls, data):
        return cls(**(data.get("configuration") or {}))

    def to_dict(self):
        return {"name": NAME, "configuration": {"quality": int(self.quality)}}

    def validate(self, *, shape, dtype, chunk_grid):
        native = dtype.to_native_dtype()
        if native not in (np.uint8, np.int8) or len(shape) != 4 or shape[-1] not in (1, 3):
            raise ValueError(f"{NAME} codes (t, h, w, 1|3) uint8 or int8 arrays, not {shape} {native}")

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec) -> Buffer:
        return chunk_spec.prototype.buffer.from_bytes(encode(chunk_array.as_numpy_array(), self.quality))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        dtype = chunk_spec.dtype.to_native_dtype()
        array = decode(chunk_bytes.to_bytes(), chunk_spec.shape, dtype)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(array)

    async def _encode_single(self, chunk_array, chunk_spec):
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return self._decode_sync(chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length, chunk_spec):
        raise NotImplementedError(f"{NAME} output size depends on the content")


def encode(frames: np.ndarray, quality: int) -> bytes:
    """(t, h, w, c) uint8/int8 -> header + t JPEG images."""
    frames = np.ascontiguousarray(frames)
    if frames.dtype == np.int8:
        frames = frames.view(np.uint8) ^ np.uint8(0x80)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    images = []
    for frame in frames:
        # A contiguous BGR copy encodes ~2x faster than a reversed-stride view.
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.shape[-1] == 3 else frame,
                                params)
        if not ok:
            raise ValueError("JPEG encoding failed")
        images.append(data.tobytes())
    header = np.array([len(images), *map(len, images)], "<u4").tobytes()
    return header + b"".join(images)


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Inverse of ``encode``: bytes -> (t, h, w, c) array of ``dtype``."""
    n = int(np.frombuffer(data, "<u4", count=1)[0])
    lengths = np.frombuffer(data, "<u4", count=n, offset=4)
    out = np.empty(shape, np.uint8)
    offset = 4 * (n + 1)
    flag = (RGB_DECODE or cv2.IMREAD_COLOR) if shape[-1] == 3 else cv2.IMREAD_GRAYSCALE
    for i, length in enumerate(lengths):
        image = cv2.imdecode(np.frombuffer(data, np.uint8, count=int(length), offset=offset), flag)
        if shape[-1] == 3 and not RGB_DECODE:
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out[i])
        else:
            out[i] = image.reshape(out.shape[1:])
        offset += int(length)
    if np.dtype(dtype) == np.int8:
        return (out ^ np.uint8(0x80)).view(np.int8)
    return out
