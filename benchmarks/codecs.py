"""Frame codec and chunk layout: what schema 2 chose, against the alternatives, side by side in one run.

1. One JPEG per frame, the ``imagecodecs_jpeg`` format: mvtools' OpenCV implementation against imagecodecs'
   own libjpeg-turbo encoder/decoder (what ``pip install imagecodecs-zarr`` uses), ms per frame and bytes,
   on the real H.264 clip's frames at the stored size (short side 128).
2. Reading a training clip (16 frames at stride 2) from a video's ``frames`` array, chunk layouts compared:
   one frame per chunk in shards of 128 (schema 2), 16 frames per chunk (schema 1's layout, same JPEGs), and
   4 frames per chunk; JPEG images decoded and ms per clip, reading the clip as a strided slice (what
   trainer.data does), one process.

Usage: python benchmarks/codecs.py [VIDEO] [--clips 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from mvtools.codecs import ImageJpegCodec, JpegCodec, decode_image, encode_image
from mvtools.decode import iter_motion, probe
from mvtools.features import stored_size

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "vid_h264.mp4"


def frames_of(path: str, size: int = 128) -> np.ndarray:
    info = probe(path, rotation=False)
    w, h = stored_size(info.width, info.height, size)
    return np.stack([r.frame for r in iter_motion(path, frame_size=(w, h))])


def per_frame_codecs(frames: np.ndarray, quality: int = 90) -> list[tuple[str, float, float, float]]:
    """(name, encode ms, decode ms, bytes) per frame, best of 3 passes over every frame."""
    import imagecodecs

    rows = []
    for name, enc, dec in (
        ("mvtools (OpenCV)", lambda f: encode_image(f, quality),
         lambda b, shape: decode_image(np.frombuffer(b, np.uint8), shape)),
        ("imagecodecs jpeg8", lambda f: imagecodecs.jpeg8_encode(f, level=quality), lambda b, shape:
         imagecodecs.jpeg8_decode(b)),
    ):
        best_enc = best_dec = 1e9
        for _ in range(3):
            t = time.perf_counter()
            blobs = [enc(f) for f in frames]
            best_enc = min(best_enc, (time.perf_counter() - t) / len(frames))
            t = time.perf_counter()
            for b in blobs:
                dec(b, frames.shape[1:])
            best_dec = min(best_dec, (time.perf_counter() - t) / len(frames))
        rows.append((name, best_enc * 1e3, best_dec * 1e3, float(np.mean([len(b) for b in blobs]))))
    return rows


def clip_reads(frames: np.ndarray, clips: int, quality: int = 90) -> list[tuple[str, float, float, int]]:
    """(layout, ms per clip, JPEG images decoded per clip, bytes on disk) reading 16 frames at stride 2."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(frames) - 31, clips)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        layouts = (("1 frame per chunk, shards of 128 (schema 2)", 1, ImageJpegCodec(level=quality)),
                   ("4 frames per chunk, shards of 128", 4, JpegCodec(quality=quality)),
                   ("16 frames per chunk, shards of 128 (schema 1)", 16, JpegCodec(quality=quality)))
        for name, chunk, serializer in layouts:
            array = zarr.create_array(f"{tmp}/{chunk}.zarr", shape=frames.shape, dtype="uint8",
                                      chunks=(chunk, *frames.shape[1:]), shards=(128, *frames.shape[1:]),
                                      serializer=serializer, compressors=None)
            array[:] = frames
            size = sum(p.stat().st_size for p in Path(f"{tmp}/{chunk}.zarr").rglob("*") if p.is_file())
            array = zarr.open_array(f"{tmp}/{chunk}.zarr", mode="r")
            best = 1e9
            for _ in range(2):
                t = time.perf_counter()
                for s in starts:
                    array[s:s + 31:2]  # a strided slice: zarr reads only the chunks it touches
                best = min(best, (time.perf_counter() - t) / clips)
            decoded = float(np.mean([len({(s + 2 * k) // chunk for k in range(16)}) * chunk for s in starts]))
            rows.append((name, best * 1e3, decoded, size))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=str(REAL))
    parser.add_argument("--clips", type=int, default=60)
    args = parser.parse_args()
    frames = frames_of(args.video)
    print(f"{args.video}: {len(frames)} frames at {frames.shape[2]}x{frames.shape[1]}, JPEG quality 90\n")
    print("| per frame | encode ms | decode ms | bytes |")
    print("|---|---|---|---|")
    rows = per_frame_codecs(frames)
    for name, enc, dec, size in rows:
        print(f"| {name} | {enc:.3f} | {dec:.3f} | {size:,.0f} |")
    print(f"\nOpenCV / imagecodecs: encode {rows[1][1] / rows[0][1]:.2f}x, decode {rows[1][2] / rows[0][2]:.2f}x "
          f"as fast, {rows[0][3] / rows[1][3]:.3f}x the bytes\n")
    print("| frames array layout | ms per 16-frame clip (stride 2) | JPEGs decoded per clip | bytes |")
    print("|---|---|---|---|")
    for name, ms, decoded, size in clip_reads(frames, args.clips):
        print(f"| {name} | {ms:.2f} | {decoded:.0f} | {size:,} |")


if __name__ == "__main__":
    main()
