"""A small labelled H.264 dataset whose classes differ only by motion.

Every video shows the same kind of random texture (new per video); its class is the motion applied to
it: a translation direction, a rotation sense or a zoom. Appearance carries no label information, so
a model that classifies these videos must have learned motion.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

#: class -> (vx, vy px/frame, rotation deg/frame, zoom factor/frame), applied to the camera.
MOTIONS = {
    "left": (-2.0, 0.0, 0.0, 1.0),
    "right": (2.0, 0.0, 0.0, 1.0),
    "up": (0.0, -2.0, 0.0, 1.0),
    "down": (0.0, 2.0, 0.0, 1.0),
    "rotate_cw": (0.0, 0.0, 1.5, 1.0),
    "rotate_ccw": (0.0, 0.0, -1.5, 1.0),
    "zoom_in": (0.0, 0.0, 0.0, 1.012),
    "zoom_out": (0.0, 0.0, 0.0, 1 / 1.012),
}


#: libx264 settings that give the same bytes for the same frames. One thread is not enough: x264's macroblock-tree
#: rate control (mbtree, on by default) gives different bytes from run to run with its SIMD code, even on one
#: thread (measured: 2-4 distinct files in 4 encodes of the same frames; with ``mbtree=0``, or ``asm=0`` at 3.7x
#: the time, always one). SIMD paths may still differ between CPUs: reproducible per machine, not across them.
X264_DETERMINISTIC = {"threads": "1", "x264-params": "mbtree=0"}


def encode_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 25,
    codec: str = "libx264",
    bframes: int = 2,
    gop: int = 32,
    crf: int = 23,
    faststart: bool = False,
    refs: int | None = None,
    rotation: int = 0,
    pts: Iterable[int] | None = None,
    preset: str = "fast",
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) to a video file with PyAV; byte-reproducible on one machine and FFmpeg
    build (``X264_DETERMINISTIC``).

    refs: reference frames per P-frame for libx264 (its preset's default when None).
    rotation: display rotation written into the container (degrees).
    pts: per-frame timestamps in milliseconds, for variable frame rate (the stream's time base is 1/1000).
    """
    pts = iter(pts) if pts is not None else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.thread_count = 1
                stream.codec_context.gop_size = gop
                stream.codec_context.max_b_frames = bframes
                if rotation:
                    stream.set_display_rotation(rotation)
                if pts is not None:
                    stream.codec_context.time_base = Fraction(1, 1000)
                if codec == "libx264":
                    stream.options = {"crf": str(crf), "preset": preset, **X264_DETERMINISTIC}
                    if refs:
                        stream.options = {**stream.options, "refs": str(refs)}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = next(pts), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        if stream is not None:
            container.mux(stream.encode())
    return path


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random, smooth-but-detailed RGB texture (size, size, 3) uint8 that block matching can lock on."""
    out = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((8, 0.5), (32, 0.3), (size // 2, 0.2)):
        noise = rng.random((cells, cells, 3), dtype=np.float32)
        out += weight * cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in rng.random(3))
        cv2.circle(out, centre, int(rng.integers(size // 40, size // 10)), colour, -1)
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def render(
    motion_name: str, rng: np.random.Generator, *, num_frames: int = 48, width: int = 192, height: int = 128
) -> Iterable[np.ndarray]:
    """Frames of a camera moving over a random texture with the class's motion (speed jittered +-25%)."""
    vx, vy, rot, zoom = MOTIONS[motion_name]
    jitter = rng.uniform(0.75, 1.25)
    canvas = texture(rng, 2 * max(width, height) + 4 * num_frames)
    cx, cy = canvas.shape[1] / 2, canvas.shape[0] / 2
    for t in range(num_frames):
        scale = zoom ** (t * jitter)
        m = cv2.getRotationMatrix2D((cx, cy), rot * t * jitter, scale)
        # The camera moves by (vx, vy) t, so the scene moves the other way in the image.
        m[0, 2] += width / 2 - cx - vx * t * jitter
        m[1, 2] += height / 2 - cy - vy * t * jitter
        yield cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)


def make_dataset(
    out_dir: str | os.PathLike, *, videos: int = 16, seed: int = 0, num_frames: int = 48,
    width: int = 192, height: int = 128, classes: Iterable[str] | None = None,
) -> list[Path]:
    """Write ``videos`` H.264 (B-frame) clips as OUT/<class>/<class>_<i>.mp4, classes taken in turn; the same
    ``seed`` gives the same bytes (``encode_video``), so reruns of ``extract`` on a regenerated set skip it."""
    names = list(classes or MOTIONS)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(videos):
        name = names[i % len(names)]
        frames = render(name, np.random.default_rng(rng.integers(2**63)), num_frames=num_frames,
                        width=width, height=height)
        paths.append(encode_video(Path(out_dir) / name / f"{name}_{i:04d}.mp4", frames))
    return paths


def camera_matrices(
    canvas_size: int, width: int, height: int, num_frames: int, *,
    shift: tuple[float, float] = (0.0, 0.0), rotation: float = 0.0, zoom: float = 1.0,
) -> list[np.ndarray]:
    """2x3 affine maps canvas -> image (cv2.warpAffine's M) for frames t = 0..num_frames-1, where the
    scene moves by ``shift`` px per frame, turns ``rotation`` degrees per frame (counter-clockwise on
    screen) and scales by ``zoom`` per frame, both about the image centre:

        p_t = c_image + shift t + zoom^t R(rotation t) (c - c_canvas)

    ``mvtools.flow.affine_flow`` gives the exact flow between any two of these frames.
    """
    c_canvas = np.array([canvas_size / 2, canvas_size / 2])
    c_image = np.array([width / 2, height / 2])
    out = []
    for t in range(num_frames):
        a = np.deg2rad(rotation * t)
        rot = zoom ** t * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        out.append(np.hstack([rot, (c_image + np.asarray(shift) * t - rot @ c_canvas)[:, None]]))
    return out


def render_views(canvas: np.ndarray, matrices: Iterable[np.ndarray], width: int, height: int) -> Iterable[np.ndarray]:
    """The frames a camera sees of ``canvas`` through each map (bilinear, borders reflected)."""
    for m in matrices:
        yield cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
