"""PyAV -> per-frame records: motion vectors, picture types, timestamps and (optionally) pixels.

Decoding is single-stream and deterministic: motion vectors are exported with slice threading only,
because FFmpeg's frame threading changes a few B-frame vectors from run to run. Parallelism belongs
across videos, not inside one decoder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from .errors import VideoError

#: Decoders that can export motion vectors (FFmpeg's H.264 and mpegvideo-based decoders).
MV_CODECS = frozenset({
    "h264", "mpeg4", "mpeg1video", "mpeg2video", "h263", "h263p", "flv", "msmpeg4", "msmpeg4v1", "msmpeg4v2",
    "wmv1", "wmv2",
})

# FFmpeg's AVMotionVector, as laid out in memory (libavutil/motion_vector.h).
AV_MOTION_VECTOR = np.dtype(
    {
        "names": ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags",
                  "motion_x", "motion_y", "motion_scale"],
        "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
        "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32],
        "itemsize": 40,
    }
)
#: Columns of ``MotionRecord.motion_vectors``, exactly as mvextractor orders them.
MV_COLUMNS = ("source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "motion_x", "motion_y", "motion_scale")
_NO_VECTORS = np.zeros((0, len(MV_COLUMNS)), dtype=np.int32)
_PICT_TYPES = {1: "I", 2: "P", 3: "B", 4: "P", 5: "I", 6: "P", 7: "B"}  # S->P, SI->I, SP->P, BI->B

# Loop filter, IDCT and chroma only touch pixels; skipping them leaves the vectors bit-identical.
_PIXEL_FREE_OPTIONS = {"skip_loop_filter": "all", "skip_idct": "all", "flags": "+gray"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: str
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int  # from the container; 0 when it does not say
    duration: float  # seconds; 0.0 when unknown
    rotation: int = 0  # display-matrix rotation in degrees, as FFmpeg reports it; arrays stay as coded

    @property
    def exports_motion_vectors(self) -> bool:
        return self.codec in MV_CODECS


@dataclass
class MotionRecord:
    """One decoded frame, in display order.

    ``motion_vectors`` is (N, 10) int32 with columns ``MV_COLUMNS``; N = 0 on I-frames.
    ``motion_x / motion_scale`` is the displacement in pixels, reference position minus current position.
    """

    index: int
    pts: float
    pict_type: str
    is_keyframe: bool
    motion_vectors: np.ndarray
    frame: np.ndarray | None = None
    rotation: int | None = None  # display rotation (degrees), read on the first frame only (None after)


def motion_vectors_from_side_data(side_data) -> np.ndarray:
    """FFmpeg MOTION_VECTORS side data -> (N, 10) int32 array in mvextractor's column order."""
    if side_data is None:
        return _NO_VECTORS
    raw = np.frombuffer(side_data, dtype=AV_MOTION_VECTOR)
    out = np.empty((raw.shape[0], len(MV_COLUMNS)), dtype=np.int32)
    for j, name in enumerate(MV_COLUMNS):
        out[:, j] = raw[name]
    return out


def check_file(path: str | os.PathLike) -> None:
    """Raise ``VideoError`` unless path is a readable, non-empty regular file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(path, "file not found" if not os.path.islink(path) else "broken symlink")
    if os.path.isdir(path):
        raise VideoError(path, "is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "permission denied")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "empty file (0 bytes)")


def _open(path: str | os.PathLike):
    path = os.fspath(path)
    check_file(path)
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        reason = f"cannot open: not a video container, or truncated/corrupt ({_reason(e)})"
        raise VideoError(path, reason) from None
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream (audio-only or data file)")
    return container


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _info(path: str, stream) -> VideoInfo:
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or Fraction(0)
    duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
    return VideoInfo(
        path=path,
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        fps=float(rate),
        num_frames=int(stream.frames or 0),
        duration=duration,
    )


def _rotation(container, stream) -> int:
    """Degrees of the display matrix (FFmpeg's av_display_rotation_get, via the first decoded frame)."""
    try:
        for frame in container.decode(stream):
            return int(round(frame.rotation or 0))
    except (av.FFmpegError, AttributeError):
        return 0
    return 0


def probe(path: str | os.PathLike, *, rotation: bool = True) -> VideoInfo:
    """Read the container header (codec, size, frame rate, frame count) and, with ``rotation``, the first
    frame's display rotation (which needs a decode; ``iter_motion`` also gives it on its first record)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        info = _info(os.fspath(path), stream)
        if not rotation:
            return info
        stream.codec_context.options = dict(_PIXEL_FREE_OPTIONS)
        return dataclasses.replace(info, rotation=_rotation(container, stream))


def iter_motion(
    path: str | os.PathLike,
    *,
    decode_frames: bool = True,
    frame_size: tuple[int, int] | None = None,
) -> Iterator[MotionRecord]:
    """Yield one ``MotionRecord`` per decoded frame of the first video stream, in display order.

    decode_frames: also return ``frame`` as (H, W, 3) uint8 RGB; when False, the decoder skips the loop
        filter and the IDCT, which the vectors do not depend on.
    frame_size: (width, height) to which frames are scaled during colour conversion (one swscale pass).

    Raises ``VideoError`` (naming the file) if it cannot be opened, has no video stream, or its data is
    corrupt or truncated.
    """
    path = os.fspath(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        options = {"flags2": "+export_mvs"}
        if not decode_frames:
            options.update(_PIXEL_FREE_OPTIONS)
        stream.codec_context.options = options
        expected = int(stream.frames or 0)
        width, height = frame_size if frame_size else (None, None)
        reformatter = VideoReformatter()
        index = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    yield _record(frame, index, decode_frames, width, height, reformatter)
                    index += 1
        except av.FFmpegError as e:
            raise VideoError(
                path, f"truncated or corrupt after {index} of {expected or '?'} frames ({_reason(e)})"
            ) from None
        if index == 0:
            raise VideoError(path, "no decodable video frames (corrupt or truncated)")
        if container.format.name.startswith("mov") and expected and index < expected:
            raise VideoError(path, f"truncated: decoded {index} of {expected} frames")
    finally:
        container.close()


#: Encoders ``transcode`` offers: (PyAV codec name, container suffix).
ENCODERS = {"h264": ("libx264", ".mp4"), "mpeg4": ("mpeg4", ".avi")}


def transcode(src: str | os.PathLike, dst: str | os.PathLike, *, codec: str = "h264", gop: int = 0,
              bframes: int = -1, crf: int = 18) -> None:
    """Re-encode src's first video stream at dst (one thread), keeping its timestamps.

    codec: "h264" (libx264, crf ``crf``) or "mpeg4" (MPEG-4 Part 2, qscale 3). gop > 0: an I-frame exactly
    every ``gop`` frames (no scene-cut I-frames); bframes >= 0: at most that many consecutive B-frames (0: every
    P-frame's vectors point to the previous frame, as the compressed-video papers preprocessed); -1 and 0 leave
    the encoder's defaults. Used for codecs whose vectors FFmpeg cannot export (HEVC, VP9, AV1...) and for
    ``--reencode``. Odd sizes lose a pixel."""
    src = os.fspath(src)
    encoder, _ = ENCODERS[codec]
    with _open(src) as inp:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        width, height = ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
        try:
            with av.open(os.fspath(dst), "w") as out:
                enc = out.add_stream(encoder, rate=stream.average_rate or stream.guessed_rate or 25)
                enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
                enc.codec_context.time_base = stream.time_base
                if codec == "h264":
                    params = ["scenecut=0"] if gop > 0 else []
                    enc.options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
                                   **({"x264-params": ":".join(params)} if params else {})}
                else:
                    enc.options = {"qscale": "3", "threads": "1", **({"sc_threshold": "1000000000"} if gop > 0 else {})}
                    enc.codec_context.qscale = 3
                if gop > 0:
                    enc.codec_context.gop_size = gop
                if bframes >= 0:
                    enc.codec_context.max_b_frames = bframes
                for frame in inp.decode(stream):
                    out_frame = frame.reformat(width=width, height=height, format="yuv420p")
                    out_frame.pts, out_frame.time_base = frame.pts, stream.time_base
                    out_frame.pict_type = PictureType.NONE  # else the encoder copies the source's frame types
                    out.mux(enc.encode(out_frame))
                out.mux(enc.encode())
        except av.FFmpegError as e:
            raise VideoError(src, f"transcoding to {codec} failed ({_reason(e)})") from None


def transcode_h264(src: str | os.PathLike, dst: str | os.PathLike, *, crf: int = 18) -> None:
    """Re-encode to H.264 with the encoder's defaults (``transcode``)."""
    transcode(src, dst, codec="h264", crf=crf)


def iter_keyframes(path: str | os.PathLike, *, frame_size: tuple[int, int] | None = None):
    """Yield (pts seconds, RGB frame) of the keyframes only; the decoder skips every other frame."""
    path = os.fspath(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.skip_frame = "NONKEY"
        width, height = frame_size if frame_size else (None, None)
        reformatter = VideoReformatter()
        try:
            for frame in container.decode(stream):
                yield float(frame.time), to_rgb(frame, width, height, reformatter)
        except av.FFmpegError as e:
            raise VideoError(path, f"truncated or corrupt ({_reason(e)})") from None


def _record(frame, index: int, decode_frames: bool, width, height, reformatter=None) -> MotionRecord:
    record = MotionRecord(
        index=index,
        pts=float(frame.time) if frame.pts is not None else float("nan"),
        pict_type=_PICT_TYPES.get(int(frame.pict_type), "?"),
        is_keyframe=bool(frame.key_frame),
        motion_vectors=motion_vectors_from_side_data(frame.side_data.get("MOTION_VECTORS")),
    )
    if decode_frames:
        record.frame = to_rgb(frame, width, height, reformatter)
    if index == 0:
        record.rotation = int(round(frame.rotation or 0))
    return record


def to_rgb(frame, width: int | None = None, height: int | None = None, reformatter=None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, scaled with an area filter when a size is given.

    Scaling is done in YUV 4:2:0 and the colour conversion at the small size (BT.601, as swscale's
    default): ~2x cheaper than scaling RGB, and the chroma it halves is what JPEG's 4:2:0 drops anyway.
    reformatter: a ``VideoReformatter`` reused across a video's frames: it keeps swscale's context, which
    ``frame.to_ndarray(width=...)`` builds anew for every frame (~1-3 ms, more than a small frame's decode).
    """
    reformatter = reformatter or VideoReformatter()
    if width is None or width % 2 or height % 2:
        return reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                    interpolation="AREA").to_ndarray()
    yuv = reformatter.reformat(frame, width=width, height=height, format="yuv420p", interpolation="AREA")
    return cv2.cvtColor(yuv.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
