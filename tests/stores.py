"""Stores built by hand, array by array, through the documented layout (README "Store layout"): tests whose
answer is known in advance read them. Values are chosen so the answer can be read off the tensors."""

from __future__ import annotations

import os

import numpy as np
import zarr


def write_store(path: str | os.PathLike, videos: dict[str, dict], settings: dict | None = None) -> str:
    """``videos``: key -> {"label", "split", "fps" (attrs; optional), array name -> ndarray}. Every video needs
    ``frames`` or ``mv`` to give its size; ``frame_type`` defaults to an I-frame then P-frames."""
    from mvtools.store import SCHEMA

    root = zarr.open_group(os.fspath(path), mode="w")
    root.attrs.update({"mvtools_schema": SCHEMA, "settings": settings or {},
                       "frame_type_codes": {"I": 0, "P": 1, "B": 2, "?": 3}})
    group = root.create_group("videos")
    for key, spec in videos.items():
        arrays = {k: np.asarray(v) for k, v in spec.items() if k not in ("label", "split", "fps")}
        if "frames" in arrays:
            t, h, w = arrays["frames"].shape[:3]
        else:
            t, h, w = arrays["mv"].shape[0], arrays["mv"].shape[1] * 4, arrays["mv"].shape[2] * 4
        arrays.setdefault("frame_type", np.array([0] + [1] * (t - 1), np.uint8))
        video = group.create_group(key)
        for name, data in arrays.items():
            video.create_array(name, data=data, chunks=(16,) + data.shape[1:])
        video.attrs.update({"num_frames": t, "stored_height": h, "stored_width": w, "width": w, "height": h,
                            "fps": spec.get("fps", 25.0), "label": spec.get("label"), "split": spec.get("split"),
                            "complete": True})
    return os.fspath(path)


def shard_index(entries: np.ndarray) -> bytes:
    """A zarr shard index as mvtools writes it: (offset, nbytes) uint64 little-endian per chunk, then crc32c."""
    import google_crc32c

    body = np.asarray(entries, "<u8").tobytes()
    return body + google_crc32c.value(body).to_bytes(4, "little")


def index_frames(t: int, h: int = 32, w: int = 32, step: int = 4) -> np.ndarray:
    """(t, h, w, 3) uint8 frames whose every pixel is ``step`` x their frame index: the index is readable from
    any crop (uniform images survive resampling exactly)."""
    return np.broadcast_to((np.arange(t) * step).astype(np.uint8)[:, None, None, None], (t, h, w, 3)).copy()


def decode_index(rgb, step: int = 4) -> np.ndarray:
    """Frame indices back from a normalised clip (3, T, S, S) or image (3, S, S) of ``index_frames``
    read without colour jitter."""
    from trainer.data import MEAN, STD

    x = np.asarray(rgb, np.float64)
    value = (x.reshape(3, -1, x.shape[-2] * x.shape[-1]).mean(-1)[0] * STD + MEAN) * 255
    return np.rint(value / step).astype(int)


def moving_textures(videos: int = 16, t: int = 24, size: int = 32, seed: int = 0) -> dict:
    """``videos`` videos for ``write_store``: a static random texture with a square of another texture crossing it
    at the video's own whole-pixel velocity (wrapping around), the exact vectors (``mv``: past dx, dy = -velocity on
    the square's cells, 0 elsewhere; a square edge on 4-pixel cells), I-frames at 0 and t/2, labels by horizontal
    direction. Every method's inputs, no encoder involved."""
    from mvtools.synth import texture

    rng = np.random.default_rng(seed)
    out, side = {}, size // 2
    for i in range(videos):
        background, patch = texture(rng, size), texture(rng, side)
        vx, vy = 0, 0
        while vx == 0:
            vx, vy = (int(v) for v in rng.integers(-2, 3, 2))
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        frames = np.repeat(background[None], t, 0)
        mv = np.zeros((t, size // 4, size // 4, 4), np.float16)
        for k in range(t):
            ys = (y0 + vy * k + np.arange(side)) % size
            xs = (x0 + vx * k + np.arange(side)) % size
            frames[k][np.ix_(ys, xs)] = patch
            if k:
                cells = np.zeros((size, size), bool)
                cells[np.ix_(ys, xs)] = True
                on = cells.reshape(size // 4, 4, size // 4, 4).mean((1, 3)) >= 0.5
                mv[k][on, 0], mv[k][on, 1] = -vx, -vy
        keys = np.array([0, t // 2], np.int32)
        types = np.ones(t, np.uint8)
        types[keys] = 0
        out[f"v{i:02d}"] = {"frames": frames, "mv": mv, "frame_type": types, "keyframes": frames[keys],
                            "keyframe_index": keys, "label": "right" if vx > 0 else "left"}
    return out


def shard_path(store: str | os.PathLike, key: str, array: str, shard: int = 0) -> str:
    """The file of shard ``shard`` (along time) of a video's array in a local store (zarr's default key encoding)."""
    group = zarr.open_group(os.fspath(store), mode="r")["videos"][key][array]
    return os.path.join(os.fspath(store), "videos", key, array, "c", str(shard), *["0"] * (group.ndim - 1))


def damage(store: str | os.PathLike, key: str, array: str, how: str, shard: int = 0) -> str:
    """Damage one shard file as storage does: "truncate" (the last third cut off), "overwrite" (64 bytes in the
    middle flipped, size unchanged: a chunk's payload, not the index at the end) or "delete". Returns its path."""
    path = shard_path(store, key, array, shard)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if how == "delete":
        os.remove(path)
    elif how == "truncate":
        with open(path, "wb") as f:
            f.write(data[: len(data) * 2 // 3])
    elif how == "overwrite":
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
        with open(path, "wb") as f:
            f.write(data)
    else:
        raise ValueError(how)
    return path
