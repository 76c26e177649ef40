"""Integrity of a store: every chunk of every complete video read back and checked against what was recorded when
the video was committed (``mvtools verify STORE [--repair]``).

Per video (``check_video``):

- the arrays its settings call for exist, with the shapes its attributes give (``num_frames``, the stored size;
  keyframes as many as ``keyframe_index``);
- every shard they need exists: one listing of the video's objects (a deleted shard reads as fill values through
  zarr, so it is looked for, never read);
- each array takes the bytes recorded at commit (the group's ``bytes`` attribute, the index's ``bytes_<array>``
  columns; videos committed before sizes were recorded skip this);
- every shard decodes: its index checksum, each chunk's CRC-32C (stores written since chunks carry one; before,
  only decodability and sizes can tell), its codecs.

``verify`` runs it over every complete video, as Ray tasks like ``extract`` (a batch of videos per task) or in
this process; ``repair`` marks the damaged videos incomplete (the index goes stale, readers skip them), so that
the next ``extract`` of the same sources redoes exactly them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from zarr.core.sync import sync

from .errors import MvtoolsError, StoreError
from .store import Store, VideoWriter, _tail, array_specs, object_sizes, open_store, storage_errors

#: videos per Ray task: a task's own cost (scheduling, opening the store) paid once for several
TASK_VIDEOS = 8


@dataclass(frozen=True)
class Problem:
    """What is wrong with one array of a video (``frames``: [first, last + 1) when it concerns some frames)."""

    array: str
    frames: tuple[int, int] | None
    reason: str

    def __str__(self) -> str:
        where = f", frames {self.frames[0]}-{self.frames[1] - 1}" if self.frames else ""
        return f"array {self.array!r}{where}: {self.reason}"


@dataclass
class Report:
    store: str
    videos: int = 0  # complete videos checked
    damaged: dict[str, list[Problem]] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)  # marked incomplete (``repair``)
    seconds: float = 0.0

    def as_json(self) -> dict:
        return {"store": self.store, "videos": self.videos, "damaged": {
            key: [{"array": p.array, "frames": list(p.frames) if p.frames else None, "reason": p.reason}
                  for p in problems] for key, problems in self.damaged.items()},
            "repaired": self.repaired, "seconds": round(self.seconds, 3)}


def check_video(store: Store, key: str) -> list[Problem]:
    """Everything wrong with complete video ``key`` (see the module docstring); [] when intact."""
    try:
        group = store.root["videos"][key]
        attrs = group.attrs.asdict()
        arrays = dict(group.arrays())
    except (OSError, MvtoolsError):
        raise
    except Exception as e:  # a damaged zarr.json
        return [Problem("(group)", None, f"metadata does not read ({_first_line(e)})")]
    objects = sync(object_sizes(store.root.store, group.path))
    recorded = attrs.get("bytes") or {}
    height, width = int(attrs.get("stored_height", 0)), int(attrs.get("stored_width", 0))
    keyframes = arrays["keyframe_index"].shape[0] if "keyframe_index" in arrays else None
    problems = []
    settings = store.settings
    specs = array_specs(settings) if "modalities" in settings else {}  # hand-written stores: what is there
    for name, array in arrays.items():
        if name not in specs:
            problems += check_shards(array, f"{group.path}/{name}/", objects)
    for name, spec in specs.items():
        array = arrays.get(name)
        if array is None:
            problems.append(Problem(name, None, "missing (no metadata)"))
            continue
        length = keyframes if name in VideoWriter.KEYFRAMES else int(attrs.get("num_frames", 0))
        expected = (length if length is not None else array.shape[0], *_tail(spec, height, width))
        if tuple(array.shape) != expected:
            problems.append(Problem(name, None, f"shape {tuple(array.shape)}, expected {expected} (from the "
                                                f"video's num_frames, stored size and keyframes)"))
            continue
        prefix = f"{group.path}/{name}/"
        size = sum(n for k, n in objects.items() if k.startswith(prefix))
        if name in recorded and size != int(recorded[name]):
            problems.append(Problem(name, None, f"{size} bytes on storage, {int(recorded[name])} recorded at commit"))
        problems += check_shards(array, prefix, objects)
    return problems


def check_shards(array, prefix: str, objects: Mapping[str, int]) -> list[Problem]:
    """Each shard of ``array`` (objects under ``prefix``) exists and decodes, read one shard at a time."""
    block = tuple(array.shards or array.chunks)
    problems = []
    for index in itertools.product(*(range(math.ceil(n / b)) for n, b in zip(array.shape, block))):
        region = tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(index, block, array.shape))
        frames = (region[0].start, region[0].stop) if region else None
        key = prefix + array.metadata.encode_chunk_key(index)
        if key not in objects:
            problems.append(Problem(array.basename, frames, f"shard {key[len(prefix):]} missing"))
            continue
        try:
            array[region]
        except (OSError, MvtoolsError, MemoryError):
            raise
        except Exception as e:  # a checksum that does not match, a chunk its codecs cannot read
            problems.append(Problem(array.basename, frames, f"does not decode ({_first_line(e)})"))
    return problems


def check_videos(store_path: str, keys: list[str], storage_options: Mapping[str, str] | None = None
                 ) -> list[tuple[str, list[Problem]]]:
    """``check_video`` for several videos, the store opened once (a Ray task, or a batch in this process)."""
    with storage_errors(store_path):
        store = open_store(store_path, storage_options=storage_options)
        return [(key, check_video(store, key)) for key in keys]


def verify(store_path: str, *, workers: int | None = None, address: str | None = None,
           storage_options: Mapping[str, str] | None = None, repair: bool = False, progress: bool = True) -> Report:
    """Check every complete video of the store (``workers=0``: in this process; else Ray, as ``extract``);
    with ``repair``, mark the damaged ones incomplete for the next ``extract``."""
    store = open_store(store_path, storage_options=storage_options)
    with storage_errors(store.path):
        keys = store.keys()
    report = Report(store.path, videos=len(keys))
    start = time.perf_counter()
    batches = [keys[i:i + TASK_VIDEOS] for i in range(0, len(keys), TASK_VIDEOS)]
    with _progress(len(keys), progress) as bar:
        for results in _run(batches, store.path, store.storage_options, workers, address):
            for key, problems in results:
                if problems:
                    report.damaged[key] = problems
            bar.update(len(results))
            bar.set_postfix(damaged=len(report.damaged))
    report.damaged = dict(sorted(report.damaged.items()))
    if repair and report.damaged:
        report.repaired = mark_incomplete(store.path, list(report.damaged), store.storage_options)
    report.seconds = time.perf_counter() - start
    return report


def mark_incomplete(store_path: str, keys: Iterable[str], storage_options: Mapping[str, str] | None = None
                    ) -> list[str]:
    """Set ``complete: false`` on each video (the index is marked stale first): readers no longer list them, and
    the next ``extract`` of their sources removes and rewrites them."""
    store = open_store(store_path, mode="r+", storage_options=storage_options)
    done = []
    with storage_errors(store.path):
        for key in keys:
            store.update_video(key, {"complete": False})
            done.append(key)
    return done


def _run(batches: list[list[str]], store_path: str, storage_options, workers: int | None, address: str | None):
    """Results of ``check_videos`` per batch, in this process (``workers=0`` without ``address``) or as Ray tasks
    with a bounded window in flight."""
    if not batches:
        return
    if workers == 0 and not address:
        for keys in batches:
            yield check_videos(store_path, keys, storage_options)
        return
    import ray

    from .pipeline import WINDOW_PER_CPU, as_completed, start_ray

    started = start_ray(workers, address)
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(check_videos)
        window = WINDOW_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))
        for keys, result in as_completed(lambda i, keys: task.remote(store_path, keys, storage_options), batches,
                                         window):
            if isinstance(result, ray.exceptions.RayError):
                cause = getattr(result, "cause", None)
                if isinstance(cause, StoreError):
                    raise StoreError(cause.path, cause.reason) from None
                raise MvtoolsError(f"verifying {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} failed: "
                                   f"{_first_line(result)}") from None
            yield result
    finally:
        if started:
            ray.shutdown()


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="verify", unit="video", disable=not enabled, dynamic_ncols=True)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)[:300]
