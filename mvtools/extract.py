"""Extraction of a folder of videos into a store, one video at a time in this process.

Data flows: discover -> (per video) decode -> features -> store writer. The Ray pipeline schedules the
same ``extract_video`` function across workers.
"""

from __future__ import annotations

import fnmatch
import gc
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .config import DEFAULT_MODALITIES, MODALITIES, ExtractConfig, read_yaml  # noqa: F401 (re-exported)
from .decode import ENCODERS, check_file, iter_keyframes, iter_motion, probe
from .decode import transcode as transcode_video
from .errors import StoreError, VideoError
from .features import FRAME_TYPE_CODES, iter_features, stored_size
from .flow import Estimator, check_raft_available, with_flow
from .index import RowBuffer, VideoIndex
from .store import Store, create_store, open_store, storage_errors

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts",
    ".mts", ".m2ts", ".ogv",
})

@dataclass(frozen=True)
class Job:
    """One video for a task. ``expect_sha256``: the digest of the copy already complete in the store (the
    task hashes the source and, if it still has that digest, only refreshes the copy's attributes)."""

    rel: str
    key: str
    path: str
    label: str | None = None
    split: str | None = None
    expect_sha256: str | None = None
    fresh: bool = False  # no group of this key in the store (nothing to remove before writing)
    size: int = 0  # source bytes, as the plan saw them


@dataclass
class Outcome:
    """What a task returns to the driver: small, never arrays. ``row``: the video's index row when it is
    complete in the store; ``removed``: the task removed the video's earlier copy (it failed after that)."""

    rel: str
    key: str
    frames: int = 0
    seconds: float = 0.0
    skipped: bool = False
    transcoded: bool = False
    error: str | None = None
    row: dict | None = None
    removed: bool = False
    store_error: bool = False  # the error is the store's (unreachable after its retries), not the video's


@dataclass
class Plan:
    jobs: list[Job]  # videos a task must look at: new, incomplete, or changed since their copy was written
    orphans: list[str]  # incomplete groups no job will rewrite: removed before the run
    unchanged: list[str] = field(default_factory=list)  # complete, same size and mtime: skipped unopened
    index: VideoIndex = field(default_factory=lambda: VideoIndex.from_rows([]))  # the store's, before the run


@dataclass
class Report:
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # relative path -> reason
    transcoded: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0  # wall time of the extraction itself
    startup_seconds: float = 0.0  # Ray start-up, when the run started Ray
    rows: RowBuffer = field(default_factory=RowBuffer)  # index rows of videos this run wrote or refreshed
    removed: list[str] = field(default_factory=list)  # keys whose copy this run removed
    not_started: int = 0  # jobs left undone because the store stopped answering

    def add(self, outcome: Outcome) -> None:
        if outcome.row is not None:
            self.rows.append(outcome.row)
        if outcome.removed:
            self.removed.append(outcome.key)
        if outcome.error is not None:
            self.failed[outcome.rel] = outcome.error
        elif outcome.skipped:
            self.skipped.append(outcome.key)
        else:
            self.extracted.append(outcome.key)
            self.frames += outcome.frames
            if outcome.transcoded:
                self.transcoded.append(outcome.key)


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
    attrs: dict | None = None, sha256: str | None = None, transcode: str = "auto", flow: Estimator | None = None,
    fresh: bool = False,
) -> dict:
    """Extract one video into ``videos/<key>``; returns its index row (``mvtools.index``: num_frames,
    bytes per array, ...). On any error the partial group is removed and the error re-raised
    (``VideoError`` for a bad file).

    attrs: extra attributes (``source``, ``label``...); ``source_bytes`` and ``source_mtime_ns`` default to
        the file's, which is what a rerun's quick check compares.
    sha256: the source's digest, when the caller has already computed it.
    transcode: "auto" re-encodes codecs whose vectors FFmpeg cannot export (HEVC, VP9, AV1...) to H.264
        in a temporary file first and records ``transcoded: true``; "never" makes them a ``VideoError``.
    flow: the estimator of ``config.flow`` (e.g. a loaded RAFT, or one calling a GPU actor); made from
        the config when None.
    fresh: no group ``key`` exists yet (``Store.begin_video``).
    """
    if config.flow != "none" and flow is None:
        flow = config.flow_estimator()
    path = os.fspath(path)
    stat = os.stat(path)
    attrs = {"source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns, **(attrs or {})}
    sha = sha256 or sha256_of(path)
    info = probe(path, rotation=False)
    if config.reencode != "none" or not info.exports_motion_vectors:
        if config.reencode == "none" and transcode != "auto":
            raise VideoError(path, f"codec {info.codec} carries no motion vectors FFmpeg can export "
                                   "(--transcode auto re-encodes it to H.264)")
        codec = config.reencode if config.reencode != "none" else "h264"
        with tempfile.TemporaryDirectory(prefix="mvtools-") as tmp:
            copy = os.path.join(tmp, "transcoded" + ENCODERS[codec][1])
            transcode_video(path, copy, codec=codec, gop=config.gop, bframes=config.bframes)
            rotation = probe(path).rotation  # the original's: the copy carries no display matrix
            attrs = {**attrs, "codec": info.codec, "transcoded": True, "rotation": rotation}
            return _extract_decodable(copy, store, key, config, attrs, sha, flow, fresh=fresh)
    attrs = {**attrs, "codec": info.codec, "transcoded": False}  # rotation: from the first decoded frame
    return _extract_decodable(path, store, key, config, attrs, sha, flow, info, fresh)


#: Frame pairs per flow call: RAFT batches them on the GPU; OpenCV's flows take one pair at a time.
FLOW_BATCH = {"dis": 1, "farneback": 1, "raft": 16}


def _extract_decodable(path, store, key, config, attrs, sha, flow=None, info=None, fresh=False) -> dict:
    info = info or probe(path, rotation=False)
    if info.width < 16 or info.height < 16:
        raise VideoError(path, f"frame size {info.width}x{info.height} is too small")
    w, h = stored_size(info.width, info.height, config.size)
    mods = set(config.modalities)
    pixels = bool(mods & {"frames", "residual", "accumulated"}) or flow is not None
    video_attrs = {
        **attrs, "fps": info.fps, "width": info.width, "height": info.height,
        "sha256": sha, "stored_width": w, "stored_height": h,
    }
    writer = store.begin_video(key, h, w, video_attrs, expected_frames=info.num_frames, fresh=fresh)
    garbage = FrameGarbage()
    try:
        records = garbage.collecting(_first_rotation(iter_motion(path, decode_frames=pixels, frame_size=(w, h)),
                                                     video_attrs))
        features = iter_features(records, (info.width, info.height), (w, h),
                                 residuals="residual" in mods, accumulate="accumulated" in mods)
        if flow is not None:  # flow t -> t+1 needs frame t+1: features come out one frame (or batch) late
            paired = with_flow(features, flow, frame=lambda f: f.frame, batch=FLOW_BATCH[config.flow])
        else:
            paired = ((f, None) for f in features)
        intra_pts = {}
        for f, flow_t in paired:
            values = {"frame_type": f.frame_type, "pts": f.pts}
            if flow_t is not None:
                values["flow"] = flow_t
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
        for pts, frame in iter_keyframes(path, frame_size=(w, h)) if intra_pts else ():
            if round(pts, 6) in intra_pts:
                writer.append_keyframe(intra_pts[round(pts, 6)], frame)
        row = writer.commit(video_attrs)
    except BaseException:
        store.remove_video(key)
        raise
    finally:
        garbage.close()
    return row


def _first_rotation(records, attrs: dict):
    """Pass records through, setting ``attrs["rotation"]`` (unless given) from the first one."""
    for record in records:
        if record.rotation is not None:
            attrs.setdefault("rotation", record.rotation)
        yield record


class FrameGarbage:
    """Keeps a long decode's memory flat.

    Reading a PyAV frame's side data ties the frame and its side-data container in a reference cycle,
    so each decoded frame (1.4 MB at 720p) waits for the cyclic GC, which runs by object count, not
    bytes: peak memory then grows with the video (~800 MB at 1,500 frames of 720p). This collects every
    ``every`` frames, and freezes the objects that existed before (gc.freeze) so that each collection
    scans only what the decode created: measured at no cost in frames/s.
    """

    def __init__(self, every: int = 16):
        self.every = every
        gc.freeze()

    def collecting(self, records: Iterable):
        for n, record in enumerate(records, 1):
            yield record
            if n % self.every == 0:
                gc.collect()

    def close(self) -> None:
        gc.unfreeze()


def select(relpaths: Iterable[str], include: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[str]:
    """Relative paths matching any ``include`` glob (all when none) and no ``exclude`` glob."""
    include, exclude = list(include), list(exclude)
    return [
        p for p in relpaths
        if (not include or any(fnmatch.fnmatch(p, g) for g in include))
        and not any(fnmatch.fnmatch(p, g) for g in exclude)
    ]


def plan(
    src_dir: str | os.PathLike, store: Store | None, config: ExtractConfig, *,
    include: Iterable[str] = (), exclude: Iterable[str] = (), annotations: Mapping[str, tuple] | None = None,
    verify: bool = False,
) -> Plan:
    """The jobs of a run, from one listing of the store (its index) and one ``stat`` per source.

    A video complete in the store whose source has the recorded size and mtime (ns), source path, label
    and split is skipped without opening it (rsync's quick check; ``verify`` turns it off). Any other
    complete video becomes a job with the copy's sha256: the task hashes the source and re-extracts only
    if the content changed. Orphans are incomplete groups (an interrupted run's) that no job rewrites.

    annotations: file stem -> (label, split) from a dataset recipe (``mvtools.recipes``); only the videos
        it lists are extracted, with its labels instead of folder names.
    """
    src_dir = Path(src_dir)
    relpaths = select(discover(src_dir), include, exclude)
    if annotations is not None:
        annotations = {rel: annotations[Path(rel).stem] for rel in relpaths if Path(rel).stem in annotations}
        relpaths = [p for p in relpaths if p in annotations]
    keys = video_keys(relpaths)
    index, incomplete = (store.index(), []) if store is not None else (VideoIndex.from_rows([]), [])
    if index is None:  # stale (an interrupted run) or never written: rebuild it from the groups
        index, incomplete = store.scan()
    columns, leftovers = index.columns, set(incomplete)
    jobs, unchanged = [], []
    for rel in relpaths:
        label, split = annotations[rel] if annotations is not None else (label_of(rel, config.labels), None)
        key, path = keys[rel], str(src_dir / rel)
        row = index.find(key)
        size, mtime = _size_and_mtime(path)
        expect = None
        if row is not None:
            expect = str(columns["sha256"][row])
            recorded = (str(columns["source"][row]), str(columns["label"][row]), str(columns["split"][row]),
                        int(columns["source_bytes"][row]), int(columns["source_mtime_ns"][row]))
            if not verify and recorded == (rel, label or "", split or "", size, mtime):
                unchanged.append(key)
                continue
        jobs.append(Job(rel=rel, key=key, path=path, label=label, split=split, expect_sha256=expect,
                        fresh=row is None and key not in leftovers, size=max(size, 0)))
    scheduled = {j.key for j in jobs}
    orphans = [k for k in incomplete if k not in scheduled]
    return Plan(jobs=jobs, orphans=orphans, unchanged=unchanged, index=index)


def _size_and_mtime(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -2  # matches nothing recorded: the task reports why the file cannot be read
    return st.st_size, st.st_mtime_ns


def run_jobs(jobs: list[Job], store_path: str, config: ExtractConfig, transcode: str = "auto",
             flow: Estimator | None = None, storage_options: Mapping[str, str] | None = None) -> list[Outcome]:
    """Several jobs in one task (small videos: a Ray task's own cost is then paid once for all), the store
    opened once for them."""
    try:
        with storage_errors(store_path):
            store = open_store(store_path, mode="r+", storage_options=storage_options)
    except StoreError as e:
        return [Outcome(j.rel, j.key, error=f"store {e.path}: {e.reason}", store_error=True) for j in jobs]
    return [run_job(job, store_path, config, transcode, flow, storage_options, store=store) for job in jobs]


def run_job(job: Job, store_path: str, config: ExtractConfig, transcode: str = "auto",
            flow: Estimator | None = None, storage_options: Mapping[str, str] | None = None,
            store: Store | None = None) -> Outcome:
    """Extract one job's video into the store; a bad video comes back as an ``Outcome`` with its
    reason, never as an exception. Runs in a Ray task or in the driver. flow: see ``extract_video``.

    A job whose complete copy has the source's sha256 only gets its quick-check attributes (size, mtime,
    label, split) refreshed, so that the next run skips it unopened."""
    start = time.perf_counter()
    opened = store
    try:
        check_file(job.path)
        stat = os.stat(job.path)  # before hashing: a change during the hash shows at the next quick check
        attrs = {"source": job.rel, "label": job.label, "source_bytes": stat.st_size,
                 "source_mtime_ns": stat.st_mtime_ns}
        if job.split is not None:
            attrs["split"] = job.split
        sha = sha256_of(job.path)
        with storage_errors(store_path):
            store = opened if opened is not None else open_store(store_path, mode="r+",
                                                                 storage_options=storage_options)
            store.touched.discard(job.key)
            if job.expect_sha256 == sha:
                return Outcome(job.rel, job.key, skipped=True, row=store.update_video(job.key, attrs))
            row = extract_video(job.path, store, job.key, config, attrs=attrs, sha256=sha, transcode=transcode,
                                flow=flow, fresh=job.fresh)
        return Outcome(job.rel, job.key, frames=row["num_frames"], seconds=time.perf_counter() - start,
                       transcoded=row["transcoded"], row=row)
    except (VideoError, OSError) as e:  # OSError: unreadable, vanished between discovery and extraction...
        reason = e.reason if isinstance(e, VideoError) else f"{e.strerror or e}"
        return Outcome(job.rel, job.key, error=reason, removed=store is not None and job.key in store.touched)
    except StoreError as e:  # the store went away (network, credentials): this video is not written
        return Outcome(job.rel, job.key, error=f"store {e.path}: {e.reason}",
                       removed=store is not None and job.key in store.touched, store_error=True)


def extract(
    src_dir: str | os.PathLike, store_path: str | os.PathLike, config: ExtractConfig | None = None,
    *, progress: bool = True, include: Iterable[str] = (), exclude: Iterable[str] = (),
    transcode: str = "auto", annotations: Mapping[str, tuple] | None = None, verify: bool = False,
    storage_options: Mapping[str, str] | None = None,
) -> Report:
    """Extract every video under src_dir into the store at store_path (a folder or an object-store URL,
    created if absent), in this process (``mvtools.pipeline.extract_parallel`` runs the same jobs on Ray).

    Videos already complete with an unchanged source are skipped (``plan``; ``verify`` re-hashes them all);
    failures are recorded in the store's ``failures`` attribute and in the returned report, and the job
    goes on. A store that stays unreachable through a video's retries ends the run (``stop_if_unreachable``):
    every further video would wait as long, for nothing.
    """
    config = config or ExtractConfig()
    if config.flow == "raft":
        check_raft_available()  # before anything is written or decoded
    store, work = open_run(src_dir, store_path, config, include=include, exclude=exclude,
                           annotations=annotations, verify=verify, storage_options=storage_options)
    report = begin_run(store, work)
    flow = config.flow_estimator() if config.flow != "none" and work.jobs else None  # RAFT loads once
    start = time.perf_counter()
    with Progress(len(work.jobs) + len(work.unchanged), progress) as bar:
        bar.skip(len(work.unchanged))
        for done, job in enumerate(work.jobs, 1):
            outcome = run_job(job, store.path, config, transcode, flow, store.storage_options)
            report.add(outcome)
            bar.done(outcome)
            if outcome.store_error:
                report.not_started = len(work.jobs) - done
                break
    report.seconds = time.perf_counter() - start
    finish(store, report, work)
    stop_if_unreachable(store, report)
    return report


def stop_if_unreachable(store: Store, report: Report) -> None:
    """A ``StoreError`` when the run stopped because the store could not be reached (after ``finish`` wrote what
    it could): the videos done stay committed, the rest were not started; the same command completes them."""
    if report.not_started:
        reason = next(r for r in reversed(report.failed.values()) if r.startswith("store ")).split(": ", 1)[-1]
        raise StoreError(store.path, f"{reason}; {report.not_started} videos not started: rerun the same command "
                                     f"once the store answers again")


def open_run(src_dir, store_path, config: ExtractConfig, storage_options=None, **selection) -> tuple[Store, Plan]:
    """Open (or create) the store and plan the run; no video is changed yet."""
    store = create_store(store_path, config.settings(), storage_options)
    with storage_errors(store.path):
        return store, plan(src_dir, store, config, **selection)


def begin_run(store: Store, work: Plan) -> Report:
    """Mark the index stale (before any video changes) and remove the orphans."""
    with storage_errors(store.path):
        store.invalidate_index()
        return Report(orphans=remove_orphans(store, work.orphans), skipped=list(work.unchanged))


def remove_orphans(store: Store, keys: Iterable[str]) -> list[str]:
    removed = []
    for key in keys:
        store.remove_video(key)
        removed.append(key)
    return removed


class Progress:
    """tqdm over videos, showing frames/s and failures so far."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = tqdm(total=total, desc="extract", unit="video", disable=not enabled, dynamic_ncols=True)
        self.frames = 0
        self.failures = 0
        self.enabled = enabled

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def skip(self, count: int) -> None:
        """Count videos done without a task (unchanged since the last run)."""
        if count:
            self.bar.update(count)

    def done(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.failures += 1
            if self.enabled:
                tqdm.write(f"failed {outcome.rel}: {outcome.error}")
        self.frames += outcome.frames
        elapsed = self.bar.format_dict.get("elapsed") or 1e-9
        self.bar.update(1)
        self.bar.set_postfix(frames_per_s=f"{self.frames / max(elapsed, 1e-9):.0f}", failed=self.failures)


def finish(store: Store, report: Report, work: Plan) -> None:
    """Root metadata, written once by the driver: the index (the plan's, with this run's rows), then the
    label set, this run's failures and the index token in one write."""
    removed = [*report.removed, *report.orphans]
    index = work.index.merged(report.rows.index(), removed=removed)
    with storage_errors(store.path):
        for key in report.removed:  # a task that failed mid-write may not have managed to remove its group
            store.remove_video(key)
        store.write_index(index, labels=sorted(index.labels()), failures=dict(sorted(report.failed.items())))


__all__ = ["DEFAULT_MODALITIES", "ExtractConfig", "Job", "MODALITIES", "Outcome", "Plan", "Report", "StoreError",
           "discover", "extract", "extract_video", "label_of", "plan", "run_job", "sanitize", "select", "video_keys"]
