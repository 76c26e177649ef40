"""JPEG codecs for zarr v3 (array -> bytes), registered under the ``zarr.codecs`` entry point so that plain
``zarr.open`` decodes them with mvtools installed but never imported.

``imagecodecs_jpeg`` (schema 2): one standard JPEG per chunk, the format and name of imagecodecs' zarr
codec, so a store is also readable with ``pip install zarr imagecodecs-zarr`` and no mvtools.

``mvtools.jpeg`` (schema 1 stores, read only by ``mvtools migrate``): each frame of a (t, h, w, c) chunk as
a JPEG, behind a little-endian header: ``uint32 n | n x uint32 byte lengths | n JPEG images``; int8 data
offset by +128 first.
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


IMAGE_JPEG = "imagecodecs_jpeg"


@dataclass(frozen=True)
class ImageJpegCodec(ArrayBytesCodec):
    """``imagecodecs_jpeg``: one baseline JPEG image per chunk, the format of imagecodecs' zarr codec
    (``pip install imagecodecs-zarr`` reads it too); here implemented with OpenCV.

    A chunk is one image: (1, h, w, 3) or (h, w, 3) RGB, or one channel, uint8 only (int8 residuals pass
    through zarr's ``numcodecs.fixedscaleoffset`` first). Configuration ``level`` = JPEG quality.
    """

    is_fixed_size = False
    level: int = 90

    def __post_init__(self):
        if not 1 <= int(self.level) <= 100:
            raise ValueError(f"JPEG level (quality) must be in 1..100, got {self.level}")

    @classmethod
    def from_dict(cls, data):
        config = dict(data.get("configuration") or {})
        unsupported = {k for k in config if k != "level"} & {"tables", "header", "lossless", "bitspersample",
                                                               "colorspace_data", "colorspace_jpeg"}
        if unsupported:
            raise ValueError(f"{IMAGE_JPEG} with {sorted(unsupported)} needs imagecodecs' own codec "
                             "(pip install imagecodecs-zarr); mvtools reads plain 8-bit JPEG chunks")
        return cls(level=int(config.get("level", 90)))

    def to_dict(self):
        return {"name": IMAGE_JPEG, "configuration": {"level": int(self.level)}}

    def validate(self, *, shape, dtype, chunk_grid):
        native = dtype.to_native_dtype()
        chunk = tuple(getattr(chunk_grid, "chunk_shape", shape))
        ok = len(chunk) in (2, 3) or (len(chunk) == 4 and chunk[0] == 1)
        if native != np.uint8 or not ok or (len(chunk) >= 3 and chunk[-1] not in (1, 3)):
            raise ValueError(f"{IMAGE_JPEG} codes one uint8 image per chunk ((1, h, w, 1|3)), not chunks of "
                             f"{chunk} {native}")

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec) -> Buffer:
        image = chunk_array.as_numpy_array().reshape(_image_shape(chunk_spec.shape))
        return chunk_spec.prototype.buffer.from_bytes(encode_image(image, self.level))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        image = decode_image(chunk_bytes.as_numpy_array(), _image_shape(chunk_spec.shape))
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array, chunk_spec):
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        return self._decode_sync(chunk_bytes, chunk_spec)

    # A shard holds one chunk per frame: a plain loop over the batch, not one asyncio task per image.
    async def encode(self, chunks_and_specs):
        return [None if c is None else self._encode_sync(c, s) for c, s in chunks_and_specs]

    async def decode(self, chunks_and_specs):
        return [None if c is None else self._decode_sync(c, s) for c, s in chunks_and_specs]

    def compute_encoded_size(self, input_byte_length, chunk_spec):
        raise NotImplementedError(f"{IMAGE_JPEG} output size depends on the content")


def _image_shape(chunk_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(1, h, w, c) -> (h, w, c); (h, w, 1) -> (h, w)."""
    shape = tuple(chunk_shape[1:]) if len(chunk_shape) == 4 else tuple(chunk_shape)
    return shape[:2] if len(shape) == 3 and shape[2] == 1 else shape


def encode_image(image: np.ndarray, quality: int) -> bytes:
    """(h, w, 3) RGB or (h, w) uint8 -> JPEG bytes."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def decode_image(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """JPEG bytes -> (h, w, 3) RGB or (h, w) uint8 of ``shape``; ``ValueError`` for bytes that are not such an
    image."""
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if len(shape) == 2 else RGB_DECODE or cv2.IMREAD_COLOR)
    if image is None or image.shape[:2] != tuple(shape[:2]):
        got = "no JPEG image" if image is None else f"a {image.shape[1]}x{image.shape[0]} image"
        raise ValueError(f"a chunk holds {got}, not the {shape[1]}x{shape[0]} image its array expects")
    return image if RGB_DECODE or len(shape) == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
