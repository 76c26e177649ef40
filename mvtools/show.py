"""Seeing the motion: what a store (or a video) holds, as per-frame panels, written to .png, .mp4 or .gif.

A sample is one frame's dict ``{index, frame_type, frames, mv, mv_mask, residual, framediff, flow}`` (the
modalities it has); both sources (a store's video, a video file decoded on the fly) produce the same
samples, so rendering is shared.

Direction colours: a motion (dx, dy) in image coordinates (x right, y *down*) has the angle
atan2(dy, dx) in [0, 360): hue 0 (red) = motion to the right (+x), 90 (yellow-green) = down, 180 (cyan)
= left, 270 (violet) = up; value (brightness) = magnitude / max_magnitude. Motion vectors are shown as
the motion of the content forward in time: FFmpeg's past vector points from a block back to where it
came from (reference - current), so it is negated; a future vector already points where the block goes.

With a mask (``apply_mask``: ``tube``, ``mgm`` or ``warped``, ``mvtools.masking``), the frames panel shows the tokens
a masked-video model would hide as grey blocks over the frame: the shown frames are the clip (consecutive tubelets
of ``tubelet`` shown frames, ``patch`` px tokens over the whole stored frame), so a user can see that MGM's hidden
region follows the moving objects and a warped mask's visible tokens follow the content.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .errors import MvtoolsError, StoreError, VideoError
from .features import FRAME_TYPE_CODES

MODALITIES = ("frames", "mv", "flow", "residual", "framediff")  # the default order: flow next to mv
FRAME_TYPES = {code: name for name, code in FRAME_TYPE_CODES.items()}
OUTPUTS = (".png", ".mp4", ".gif")
MAX_FRAMES = {".png": 32, ".mp4": 300, ".gif": 300}  # rows of a .png; frames of a movie
DEFAULT_FRAMES = {".png": 8, ".mp4": 300, ".gif": 300}
HINTS = {  # how to get a modality a store lacks
    "frames": "extract with --modalities frames,...",
    "framediff": "it is derived from frames: extract with --modalities frames,...",
    "mv": "extract with --modalities mv,...",
    "residual": "extract with --modalities residual,...",
    "flow": "extract with --flow dis",
}


# Colours ------------------------------------------------------------------------------------------------
def flow_to_hsv(field: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(h, w, 2) motion (dx, dy) -> (h, w, 3) uint8 RGB: hue = direction (0 = +x, 90 = +y, down), saturation
    1, value = |motion| / max_magnitude clipped to 1 (max_magnitude: the field's largest, when None)."""
    dx = np.ascontiguousarray(field[..., 0], np.float32)
    dy = np.ascontiguousarray(field[..., 1], np.float32)
    magnitude, angle = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    top = float(magnitude.max()) if max_magnitude is None else float(max_magnitude)
    value = np.clip(magnitude / top, 0, 1) if top > 0 else np.zeros_like(magnitude)
    hsv = np.stack([(angle % 360) / 2, np.full_like(angle, 255), value * 255], axis=-1)
    return cv2.cvtColor(np.rint(hsv).astype(np.uint8), cv2.COLOR_HSV2RGB)


def direction_colours(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N,) motions -> (N, 3) float RGB in [0, 1]: the hue of flow_to_hsv at full brightness."""
    vectors = np.stack([u, v], axis=-1).reshape(1, -1, 2)
    return flow_to_hsv(vectors, max_magnitude=1e-6)[0] / 255.0


def colour_wheel(size: int) -> np.ndarray:
    """The legend of flow_to_hsv: (size, size, 4) uint8 RGBA, a disc whose pixel (x, y) shows the colour of
    the motion from the centre to it (brightest at the rim); transparent outside the disc."""
    r = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    field = np.stack([(x - r) / r, (y - r) / r], axis=-1)
    rgb = flow_to_hsv(field, max_magnitude=1.0)
    alpha = np.where(np.hypot(field[..., 0], field[..., 1]) <= 1.0, 255, 0).astype(np.uint8)
    return np.dstack([rgb, alpha])


def diverging(values: np.ndarray, limit: float, cmap: str = "RdBu_r") -> np.ndarray:
    """(h, w[, c]) signed values -> (h, w, 3) uint8 RGB, mean over channels, centred at 0: -limit blue,
    0 white, +limit red (clipped beyond)."""
    values = np.asarray(values, np.float32)
    mean = values.mean(axis=-1) if values.ndim == 3 else values
    t = np.clip(mean / max(float(limit), 1e-6), -1, 1) * 0.5 + 0.5
    return (colormaps[cmap](t)[..., :3] * 255).round().astype(np.uint8)


def hide(image: np.ndarray, mask: np.ndarray, grey: int = 128, strength: float = 0.75) -> np.ndarray:
    """(h, w, 3) uint8 with the pixels of ``mask`` (h, w) pulled ``strength`` of the way to ``grey``: hidden tokens
    as grey blocks through which the frame still shows."""
    out = np.asarray(image, np.float32).copy()
    out[mask] = (1 - strength) * out[mask] + strength * grey
    return np.rint(out).astype(np.uint8)


def apply_mask(clip: Clip, kind: str, ratio: float | None = None, patch: int = 16, tubelet: int = 2,
               seed: int = 0) -> np.ndarray:
    """Add to every sample its pixel mask (``mask``, (h, w) bool, True where hidden) and a note; returns the token
    mask (T', H', W'). The shown frames are the clip (``tubelet`` consecutive shown frames per step); ``mgm`` and
    ``warped`` take the samples' stored vectors (``mv``: past dx, dy, as stored)."""
    from . import masking

    ratio = masking.RATIOS[kind] if ratio is None else ratio
    h, w = _frame_shape(clip.samples[0])
    grid = (-(-len(clip.samples) // tubelet), -(-h // patch), -(-w // patch))
    rng = np.random.default_rng(seed)
    if kind == "tube":
        tokens = masking.make_mask(kind, grid, ratio, rng)
    else:
        field = np.stack([np.asarray(s["mv"], np.float32)[..., :2] for s in clip.samples])
        step = clip.samples[1]["index"] - clip.samples[0]["index"] if len(clip.samples) > 1 else 1
        tokens = masking.make_mask(kind, grid, ratio, rng, energy=masking.token_energy(field, tubelet, patch),
                                   displacement=masking.token_displacement(field, tubelet, patch,
                                                                           frames_per_step=tubelet * step))
    for i, sample in enumerate(clip.samples):
        pixels = np.repeat(np.repeat(tokens[i // tubelet], patch, 0), patch, 1)[:h, :w]
        sample["mask"], sample["mask_note"] = pixels, f"{kind} mask {ratio:.0%}"
    return tokens


# Motion as shown -----------------------------------------------------------------------------------------
def forward_motion(mv: np.ndarray, mv_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stored field (h, w, 4) and mask (h, w, 2) -> the content's motion forward in time (h, w, 2) and
    where it is known (h, w): -past where a past vector exists, else +future, else 0."""
    mv = np.asarray(mv, np.float32)
    past, future = mv_mask[..., 0], mv_mask[..., 1]
    motion = np.where(past[..., None], -mv[..., 0:2], np.where(future[..., None], mv[..., 2:4], 0))
    return motion.astype(np.float32), past | future


def arrow_samples(
    motion: np.ndarray, mask: np.ndarray, cell: int = 4, spacing: int = 16, min_motion: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrows for a cell field: the mean motion of each spacing x spacing pixel block that has known
    cells, at the block's centre in pixels. Returns x, y, u, v (N,), leaving out motions < min_motion px."""
    k = max(1, spacing // cell)
    gh, gw = mask.shape
    bh, bw = -(-gh // k), -(-gw // k)
    pad = ((0, bh * k - gh), (0, bw * k - gw))
    m = np.pad(mask, pad).reshape(bh, k, bw, k).astype(np.float32)
    count = m.sum(axis=(1, 3))
    sums = [np.pad(motion[..., i] * mask, pad).reshape(bh, k, bw, k).sum(axis=(1, 3)) for i in (0, 1)]
    u, v = (s / np.maximum(count, 1) for s in sums)
    y, x = (np.mgrid[0:bh, 0:bw] * k + k / 2) * cell
    keep = (count > 0) & (np.hypot(u, v) >= min_motion)
    return x[keep], y[keep], u[keep], v[keep]


def scales(samples: Sequence[dict]) -> dict[str, float]:
    """Shared colour limits over a whole clip (the 99th percentile, so one outlier does not wash it out):
    "motion" (px) for mv and flow alike, "residual" and "framediff" (intensity)."""
    magnitudes, out = [], {}
    for s in samples:
        if "mv" in s:
            motion, known = forward_motion(s["mv"], s["mv_mask"])
            magnitudes.append(np.hypot(motion[..., 0], motion[..., 1])[known])
        if "flow" in s:
            magnitudes.append(np.hypot(*np.moveaxis(np.asarray(s["flow"], np.float32), -1, 0)).ravel())
    out["motion"] = max(_percentile(magnitudes), 0.5)
    for name in ("residual", "framediff"):
        out[name] = max(_percentile([np.abs(np.asarray(s[name], np.float32).mean(-1)).ravel()
                                     for s in samples if name in s]), 1.0)
    return out


def _percentile(parts: list[np.ndarray], q: float = 99) -> float:
    values = np.concatenate(parts) if parts else np.zeros(0)
    return float(np.percentile(values, q)) if values.size else 0.0


# Panels and their layout ---------------------------------------------------------------------------------
@dataclass
class Panel:
    """One image of the grid, with its title, a note in its corner and what is drawn over it."""

    title: str
    image: np.ndarray  # (h, w, 3) uint8, shown stretched to the frame's extent
    extent: tuple[int, int]  # (w, h) of the frame, pixels: the coordinates of arrows
    note: str = ""
    arrows: tuple | None = None  # x, y, u, v, gain
    wheel: bool = False  # draw the colour-wheel legend
    smooth: bool = True  # interpolate (frames) or show cells as blocks (fields)


def frame_panels(sample: dict, modalities: Sequence[str], limits: dict[str, float]) -> list[Panel]:
    """One panel per modality, in the given order, titled "frame 12 · P · mv"."""
    h, w = _frame_shape(sample)
    head = f"frame {sample['index']} · {FRAME_TYPES.get(int(sample['frame_type']), '?')} · "
    top = limits["motion"]
    panels = []
    for name in modalities:
        if name == "frames":
            panel = Panel(head + name, np.asarray(sample["frames"]), (w, h))
            if "mv" in modalities:
                x, y, u, v = arrow_samples(*forward_motion(sample["mv"], sample["mv_mask"]))
                gain = 16 / top  # the clip's 99th-percentile motion spans one arrow spacing
                panel.arrows, panel.note = (x, y, u, v, gain), f"arrows x{gain:.3g}"
            if "mask" in sample:
                panel.image = hide(panel.image, sample["mask"])
                panel.note = " · ".join(n for n in (sample["mask_note"], panel.note) if n)
        elif name in ("mv", "flow"):
            if name == "mv":
                motion, _ = forward_motion(sample["mv"], sample["mv_mask"])
            else:
                motion = np.asarray(sample["flow"], np.float32)
            panel = Panel(head + name, flow_to_hsv(motion, top), (w, h), f"max {top:.3g} px", wheel=True,
                          smooth=name == "flow")
        elif name in ("residual", "framediff"):
            panel = Panel(head + name, diverging(sample[name], limits[name]), (w, h), f"±{limits[name]:.3g}")
        else:
            raise ValueError(f"unknown modality {name!r}; choose from {', '.join(MODALITIES)}")
        panels.append(panel)
    return panels


def _frame_shape(sample: dict) -> tuple[int, int]:
    for name in ("frames", "residual", "framediff", "flow"):
        if name in sample:
            return tuple(np.shape(sample[name])[:2])
    gh, gw = np.shape(sample["mv"])[:2]
    return gh * 4, gw * 4


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a grid of panels: rows x cols, each panel_w x (panel_h + title_h) pixels."""

    rows: int
    cols: int
    panel_w: int
    panel_h: int
    title_h: int = 20

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image, pixels (both even, as yuv420p video needs)."""
        return self.cols * self.panel_w, self.rows * (self.panel_h + self.title_h)

    def boxes(self) -> list[tuple[float, float, float, float]]:
        """Each panel's image area as (left, bottom, width, height) figure fractions, row by row."""
        width, height = self.size
        return [(c * self.panel_w / width, (height - (r + 1) * (self.panel_h + self.title_h)) / height,
                 self.panel_w / width, self.panel_h / height) for r in range(self.rows) for c in range(self.cols)]


def layout(rows: int, cols: int, frame_hw: tuple[int, int], panel_height: int = 192) -> Layout:
    """Panels panel_height pixels tall (even), as wide as the frame's aspect ratio makes them (even)."""
    h, w = frame_hw
    return Layout(rows, cols, max(2, 2 * round(panel_height * w / h / 2)), panel_height)


class Canvas:
    """A matplotlib Agg figure laid out for rows x cols panels. Drawing again updates the same artists, so
    the frames of a movie cost only the drawing (building axes is most of a figure's cost)."""

    def __init__(self, grid: Layout, dpi: int = 100):
        width, height = grid.size
        self.figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
        self.canvas = FigureCanvasAgg(self.figure)
        self.boxes = grid.boxes()
        self.axes: list = []
        self.arrows: list = []

    def _build(self, panels: Sequence[Panel]) -> None:
        wheel = colour_wheel(65)
        for panel, box in zip(panels, self.boxes):
            w, h = panel.extent
            ax = self.figure.add_axes(box)
            ax.imshow(panel.image, extent=(0, w, h, 0), interpolation="antialiased" if panel.smooth else "nearest")
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_axis_off()
            ax.set_title("", fontsize=8, pad=3)
            ax.text(0.02, 0.03, "", transform=ax.transAxes, fontsize=6, color="black",
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
            if panel.wheel:
                side = 0.3 * h / w  # a square 0.3 of the panel's height, in the lower right corner
                inset = ax.inset_axes((0.99 - side, 0.02, side, 0.3))
                inset.imshow(wheel)
                inset.set_axis_off()
            self.axes.append(ax)
            self.arrows.append(None)

    def draw(self, rows: Sequence[Sequence[Panel]]) -> np.ndarray:
        """Panels (rows = frames, cols = modalities) -> (H, W, 3) uint8."""
        panels = [p for row in rows for p in row]
        if not self.axes:
            self._build(panels)
        for i, (panel, ax) in enumerate(zip(panels, self.axes)):
            ax.images[0].set_data(panel.image)
            ax.title.set_text(panel.title)
            ax.texts[0].set_text(panel.note)
            ax.texts[0].set_visible(bool(panel.note))
            if self.arrows[i] is not None:
                self.arrows[i].remove()
                self.arrows[i] = None
            if panel.arrows is not None and len(panel.arrows[0]):
                x, y, u, v, gain = panel.arrows
                self.arrows[i] = ax.quiver(
                    x, y, u, v, color=direction_colours(u, v), angles="xy", scale_units="xy", scale=1 / gain,
                    width=0.006, headwidth=3.5, headlength=4, edgecolor="black", linewidth=0.4)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def render_grid(rows: Sequence[Sequence[Panel]], panel_height: int = 192) -> np.ndarray:
    """Panels (rows = frames, cols = modalities) -> (H, W, 3) uint8, drawn with matplotlib's Agg."""
    return Canvas(layout(len(rows), len(rows[0]), rows[0][0].extent[::-1], panel_height)).draw(rows)


# Sources ------------------------------------------------------------------------------------------------
@dataclass
class Clip:
    """The samples to show and where they come from."""

    name: str  # what names the default output file
    samples: list[dict]
    modalities: tuple[str, ...]
    fps: float
    truncated: int = 0  # frames requested beyond the cap


def frame_range(frames: slice, length: int, limit: int) -> tuple[range, int]:
    """The frame indices of a python slice over ``length`` frames, at most ``limit``; and how many more
    the slice asked for."""
    indices = range(*frames.indices(length))
    return indices[:limit], max(0, len(indices) - limit)


def store_modalities(view) -> tuple[str, ...]:
    """The modalities a store's video can show (framediff is derived from frames)."""
    arrays, source = set(view.arrays()), {"framediff": "frames"}
    return tuple(m for m in MODALITIES if source.get(m, m) in arrays)


def from_store(path: str | os.PathLike, key: str, frames: slice, modalities: Sequence[str] | None,
               limit: int, storage_options: dict | None = None, also: Sequence[str] = ()) -> Clip:
    """Read video ``key``'s requested frames and modalities (default: every one it holds), and the modalities
    ``also`` needed beyond those shown (``mv`` for a motion-guided mask)."""
    from .store import open_store

    path = os.fspath(path)
    store = open_store(path, storage_options=storage_options)
    if key not in store:
        keys = store.keys()
        some = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
        raise StoreError(path, f"no video {key!r} in the store (it has {some or 'no complete videos'})")
    view = store[key]
    have = store_modalities(view)
    error = lambda m: StoreError(path, f"video {key!r} has no {m!r} array ({HINTS[m]})")  # noqa: E731
    mods = _check_modalities(modalities, have, error)
    _check_modalities(also, have, error)
    indices, truncated = frame_range(frames, len(view), limit)
    if not indices:
        raise StoreError(path, f"no frames in {_slice_text(frames)}: video {key!r} has {len(view)}")
    frames = np.asarray(indices)
    wanted = {"frame_type": frames, **{name: frames for name in (set(mods) | set(also)) - {"framediff"}}}
    if "mv" in wanted:
        wanted["mv_mask"] = frames
    if "framediff" in mods:  # x_t - x_{t-1}: the frames before too
        wanted["frames"] = np.union1d(frames, np.maximum(frames - 1, 0))
    columns = view.read_many(wanted)  # only the chunks of these frames, every array at once
    if "framediff" in mods:
        previous = columns["frames"][np.searchsorted(wanted["frames"], np.maximum(frames - 1, 0))].astype(np.int16)
        current = columns["frames"][np.searchsorted(wanted["frames"], frames)].astype(np.int16)
        columns["framediff"] = np.where((frames > 0)[:, None, None, None], current - previous, 0).astype(np.int16)
        if "frames" in (*mods, *also):
            columns["frames"] = columns["frames"][np.searchsorted(wanted["frames"], frames)]
        else:
            del columns["frames"]
    samples = [{"index": i, **{k: v[n] for k, v in columns.items()}} for n, i in enumerate(indices)]
    return Clip(key, samples, mods, float(view.attrs.get("fps") or 25.0), truncated)


def from_video(path: str | os.PathLike, frames: slice, modalities: Sequence[str] | None, limit: int,
               size: int = 128, also: Sequence[str] = ()) -> Clip:
    """Decode a video file and compute, at the stored resolution (short side ``size``), what extraction
    would store for the requested frames only (decoding stops after the last)."""
    from .decode import iter_motion, probe
    from .features import iter_features, stored_size
    from .motion import frame_difference

    path = os.fspath(path)
    info = probe(path)
    if not info.exports_motion_vectors:
        raise VideoError(path, f"codec {info.codec} carries no motion vectors FFmpeg can export: extract it "
                               "(which transcodes it to H.264) and show the store")
    mods = _check_modalities(modalities, ("frames", "mv", "residual", "framediff"), lambda m: VideoError(
        path, f"{m!r} is not computed on the fly from a video ({HINTS.get(m, '')}, then show the store)"))
    known = info.num_frames or sys.maxsize
    if not info.num_frames and any(v is not None and v < 0 for v in (frames.start, frames.stop)):
        raise VideoError(path, "the container gives no frame count: use non-negative --frames")
    indices, truncated = frame_range(frames, known, limit)
    wanted, last = set(indices), indices[-1] if indices else -1
    w, h = stored_size(info.width, info.height, size)
    samples, previous = [], None
    features = iter_features(iter_motion(path, frame_size=(w, h)), (info.width, info.height), (w, h))
    try:
        for f in features:
            if f.index in wanted:
                computed = {"frames": f.frame, "mv": f.mv, "residual": f.residual,
                            "framediff": frame_difference(f.frame[None], previous)[0]}
                sample = {"index": f.index, "frame_type": f.frame_type,
                          **{m: computed[m] for m in (*mods, *also)}}
                if "mv" in sample:
                    sample["mv_mask"] = f.mv_mask
                samples.append(sample)
            previous = f.frame
            if f.index >= last:
                break
    finally:
        features.close()
    if not samples:
        count = f": it has {info.num_frames}" if info.num_frames else ""
        raise VideoError(path, f"no frames in {_slice_text(frames)}{count}")
    if info.num_frames == 0:
        truncated = 0
    name = os.path.splitext(os.path.basename(path))[0]
    return Clip(name, samples, mods, info.fps or 25.0, truncated)


def _check_modalities(requested, have, error) -> tuple[str, ...]:
    if requested is None:
        return tuple(have)
    for m in requested:
        if m not in have:
            raise error(m)
    return tuple(requested)


def _slice_text(s: slice) -> str:
    return ":".join("" if v is None else str(v) for v in (s.start, s.stop)) + (f":{s.step}" if s.step else "")


def parse_frames(text: str) -> slice:
    """"a:b" (or "a:b:step", or "a" for one frame) with python's slice semantics; step > 0."""
    parts = text.split(":")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"--frames {text!r}: expected a:b, e.g. 0:16") from None
    if len(values) == 1 and values[0] is not None:
        start = values[0]
        return slice(start, start + 1 if start != -1 else None)
    if len(values) not in (2, 3) or (len(values) == 3 and values[2] is not None and values[2] <= 0):
        raise ValueError(f"--frames {text!r}: expected a:b or a:b:step with step > 0")
    return slice(*values)


# Output -------------------------------------------------------------------------------------------------
def default_output(name: str) -> str:
    """``<name>.png`` in the working directory; characters outside [A-Za-z0-9._-] (e.g. '/') become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".png"


def output_kind(path: str | os.PathLike) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in OUTPUTS:
        raise MvtoolsError(f"{path}: output must end in {', '.join(OUTPUTS)}")
    return ext


def write(path: str | os.PathLike, clip: Clip, panel_height: int = 192) -> tuple[int, int]:
    """Render the clip to path: a .png grid (rows = frames), or one grid row per frame of an .mp4 (H.264,
    yuv420p) or .gif at the video's frame rate. Returns the image size (width, height)."""
    path = os.fspath(path)
    kind = output_kind(path)
    limits = scales(clip.samples)
    rows = (frame_panels(s, clip.modalities, limits) for s in clip.samples)
    if kind == ".png":
        from PIL import Image

        image = render_grid(list(rows), panel_height)
        Image.fromarray(image).save(path, optimize=True)
        return image.shape[1], image.shape[0]
    canvas = Canvas(layout(1, len(clip.modalities), _frame_shape(clip.samples[0]), panel_height))
    images = (canvas.draw([row]) for row in rows)
    return (_write_mp4 if kind == ".mp4" else _write_gif)(path, images, clip.fps)


def _write_mp4(path: str, images, fps: float) -> tuple[int, int]:
    from fractions import Fraction

    import av

    size = (0, 0)
    with av.open(path, "w") as container:
        stream = None
        for image in images:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "20", "preset": "fast"}
                size = image.shape[1], image.shape[0]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        if stream is not None:
            container.mux(stream.encode())
    return size


def _write_gif(path: str, images, fps: float) -> tuple[int, int]:
    from PIL import Image

    frames = [Image.fromarray(image) for image in images]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / (fps or 25)), loop=0)
    return frames[0].size
