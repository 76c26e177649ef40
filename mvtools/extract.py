"""Extraction of a folder of videos into a store, one video at a time in this process.

Data flows: discover -> (per video) decode -> features -> store writer. The Ray pipeline schedules the
same ``extract_video`` function across workers.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from .decode import iter_keyframes, iter_motion, probe
from .errors import StoreError, VideoError
from .features import FRAME_TYPE_CODES, iter_features, stored_size
from .store import Store, create_store

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts",
    ".mts", ".m2ts", ".ogv",
})
MODALITIES = ("frames", "mv", "residual", "keyframes", "accumulated")
DEFAULT_MODALITIES = ("frames", "mv", "residual", "keyframes")


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract and how to store it. Everything but ``labels`` is recorded in the store."""

    size: int = 128  # short side of stored frames, pixels
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    labels: str = "folder"  # "folder": parent folder name; "none"
    frame_quality: int = 90  # JPEG quality of frames and keyframes
    residual_quality: int = 95  # JPEG quality of residuals
    lossless: bool = False  # zstd frames and int16 residuals instead of JPEG
    chunk_frames: int = 16
    shard_frames: int = 128

    def __post_init__(self):
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {', '.join(MODALITIES)}")
        if self.size < 8 or self.size % 2:
            raise ValueError(f"--size must be an even number >= 8, got {self.size}")
        if self.labels not in ("folder", "none"):
            raise ValueError(f"--labels must be 'folder' or 'none', got {self.labels!r}")
        if self.shard_frames % self.chunk_frames:
            raise ValueError("shard_frames must be a multiple of chunk_frames")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides) -> ExtractConfig:
        """A recipe from pipelines/ (YAML keys = field names), with explicit overrides on top."""
        import yaml

        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
        unknown = set(recipe) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        merged = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
        if "modalities" in merged:
            merged["modalities"] = tuple(merged["modalities"])
        return cls(**merged)

    def settings(self) -> dict:
        s = asdict(self)
        s.pop("labels")
        s["modalities"] = sorted(self.modalities)
        return s


@dataclass
class Report:
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # relative path -> reason
    frames: int = 0


def discover(src_dir: str | os.PathLike) -> list[str]:
    """Video files under src_dir (recursive, following symlinks once), as sorted relative POSIX paths.

    Broken symlinks with a video extension are kept, so that they are reported as failures.
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir}: not a directory")
    found, seen = [], set()
    for root, dirs, files in os.walk(src_dir, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop: walk each real folder once
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in files:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(Path(root, name).relative_to(src_dir).as_posix())
    return sorted(found)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize(relpath: str) -> str:
    """A store key from a relative path: folders joined by '__', unsafe characters -> '_', no extension."""
    parts = Path(relpath).with_suffix("").parts
    key = "__".join(_UNSAFE.sub("_", p).strip("._") or "_" for p in parts)
    return ("v" + key if key[:1] in "._" or not key else key)[:180]


def video_keys(relpaths: Iterable[str]) -> dict[str, str]:
    """Unique keys for relative paths; paths whose sanitized keys collide all get a hash suffix."""
    relpaths = list(relpaths)
    base = {p: sanitize(p) for p in relpaths}
    counts: dict[str, int] = {}
    for key in base.values():
        counts[key] = counts.get(key, 0) + 1
    return {
        p: k if counts[k] == 1 else f"{k}-{hashlib.sha1(p.encode()).hexdigest()[:8]}"
        for p, k in base.items()
    }


def label_of(relpath: str, mode: str) -> str | None:
    parent = Path(relpath).parent.name
    return parent if mode == "folder" and parent else None


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def extract_video(
    path: str | os.PathLike, store: Store, key: str, config: ExtractConfig, *,
    attrs: dict | None = None, sha256: str | None = None, on_frame: Callable[[], None] | None = None,
) -> int:
    """Extract one video into ``videos/<key>``; returns its frame count. On any error the partial
    group is removed and the error re-raised (``VideoError`` for a bad file).

    sha256: the source's digest, when the caller has already computed it."""
    path = os.fspath(path)
    info = probe(path)
    if info.width < 16 or info.height < 16:
        raise VideoError(path, f"frame size {info.width}x{info.height} is too small")
    w, h = stored_size(info.width, info.height, config.size)
    mods = set(config.modalities)
    pixels = bool(mods & {"frames", "residual", "accumulated"})
    sha = sha256 or sha256_of(path)
    video_attrs = {
        **(attrs or {}), "fps": info.fps, "width": info.width, "height": info.height,
        "codec": info.codec, "sha256": sha, "source_bytes": os.path.getsize(path),
        "stored_width": w, "stored_height": h,
    }
    writer = store.begin_video(key, h, w, video_attrs, expected_frames=info.num_frames)
    try:
        records = iter_motion(path, decode_frames=pixels, frame_size=(w, h))
        features = iter_features(records, (info.width, info.height), (w, h),
                                 residuals="residual" in mods, accumulate="accumulated" in mods)
        intra_pts = {}
        for f in features:
            values = {"frame_type": f.frame_type, "pts": f.pts}
            if "frames" in mods:
                values["frames"] = f.frame
            if "mv" in mods:
                values["mv"], values["mv_mask"] = f.mv, f.mv_mask
            if "residual" in mods:
                values["residual"] = f.residual
            if "accumulated" in mods:
                values["mv_acc"], values["residual_acc"] = f.mv_acc, f.residual_acc
            writer.append(values)
            if f.frame_type == FRAME_TYPE_CODES["I"] and "keyframes" in mods:
                if f.frame is not None:
                    writer.append_keyframe(f.index, f.frame)
                else:
                    intra_pts[round(f.pts, 6)] = f.index
            if on_frame:
                on_frame()
        for pts, frame in iter_keyframes(path, frame_size=(w, h)) if intra_pts else ():
            if round(pts, 6) in intra_pts:
                writer.append_keyframe(intra_pts[round(pts, 6)], frame)
        writer.commit(video_attrs)
    except BaseException:
        store.remove_video(key)
        raise
    return writer.num_frames


def extract(
    src_dir: str | os.PathLike, store_path: str | os.PathLike, config: ExtractConfig = ExtractConfig(),
    *, progress: bool = True,
) -> Report:
    """Extract every video under src_dir into the store at store_path (created if absent).

    Videos already complete with the same source sha256 are skipped; failures are recorded in the
    store's ``failures`` attribute and in the returned report, and the job goes on.
    """
    src_dir = Path(src_dir)
    relpaths = discover(src_dir)
    keys = video_keys(relpaths)
    store = create_store(store_path, config.settings())
    report = Report()
    bar = tqdm(relpaths, desc="extract", unit="video", disable=not progress, dynamic_ncols=True)
    frames_bar = {"n": 0}

    def tick():
        frames_bar["n"] += 1

    for rel in bar:
        key, path = keys[rel], src_dir / rel
        try:
            sha = sha256_of(path) if key in store else None
            if sha and store[key].attrs.get("sha256") == sha:
                report.skipped.append(key)
                continue
            attrs = {"source": rel, "label": label_of(rel, config.labels)}
            report.frames += extract_video(path, store, key, config, attrs=attrs, sha256=sha, on_frame=tick)
            report.extracted.append(key)
        except (VideoError, OSError) as e:
            reason = e.reason if isinstance(e, VideoError) else (e.strerror or str(e))
            report.failed[rel] = reason
            tqdm.write(f"skipped {path}: {reason}") if progress else None
        rate = frames_bar["n"] / max(bar.format_dict.get("elapsed") or 1e-9, 1e-9)
        bar.set_postfix(frames_per_s=f"{rate:.0f}", failed=len(report.failed))
    _finish(store, report)
    return report


def _finish(store: Store, report: Report) -> None:
    """Root metadata, written once by the driver: the label set and the failures of this run."""
    labels = {store[k].attrs.get("label") for k in store} - {None}
    store.root.attrs.update({"labels": sorted(labels), "failures": report.failed})


__all__ = ["DEFAULT_MODALITIES", "ExtractConfig", "MODALITIES", "Report", "StoreError", "discover", "extract",
           "extract_video", "label_of", "sanitize", "video_keys"]
