"""Ray execution of an extraction plan: one task per video, each writing only its own video group.

The driver plans, schedules, collects small outcomes, reports and writes the store's root metadata;
the tasks decode and write. Bad videos come back as outcomes with a reason; unexpected task errors and
worker deaths are retried ``max_retries`` times, then recorded as failures.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping

from .errors import MvtoolsError
from .extract import (
    ExtractConfig,
    Outcome,
    Progress,
    Report,
    begin_run,
    finish,
    open_run,
    run_jobs,
    stop_if_unreachable,
)
from .flow import RaftFlow, check_raft_available
from .store import storage_errors


class ClusterError(MvtoolsError):
    """The Ray cluster at ``address`` cannot be joined; the message says what to set."""

    def __init__(self, address: str, reason: str):
        self.address = address
        super().__init__(f"Ray cluster {address}: {reason}")


#: Seconds ray.init tries to reach a cluster's GCS before giving up (Ray's own default: 20 s, retried by
#: its callers for about a minute); RAY_gcs_server_port_wait_time_s, when set, takes precedence.
CONNECT_SECONDS = 5
TOKEN_HELP = ("set RAY_AUTH_TOKEN (the token), RAY_AUTH_TOKEN_PATH (a file holding it) or copy it to "
              "~/.ray/auth_token; `ray get-auth-token` on the head node prints it")


def auth_token_available(env: Mapping[str, str] = os.environ) -> bool:
    """Whether a Ray token is where Ray looks: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = env.get("RAY_AUTH_TOKEN_PATH")
    return os.path.isfile(os.path.expanduser(path)) if path else os.path.isfile(os.path.expanduser(
        "~/.ray/auth_token"))


def _enable_token_auth() -> None:
    """Token mode for this process, as Ray does itself for ``address="auto"`` (Ray reads the mode from its
    config, which it caches at import: refresh it the way Ray does)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):  # another Ray: the environment variable is what it documents
        pass


def start_ray(workers: int | None = None, address: str | None = None) -> bool:
    """Connect to a cluster (``address``: ``host:port`` as ``ray start`` prints it, ``auto``, or
    ``ray://...``), or start a private local Ray with ``workers`` CPUs (default: all), even when a
    ``ray start`` cluster runs on this machine. Returns True when this call started or joined Ray (and so
    should shut it down). ``ClusterError`` within ~10 s when a cluster cannot be joined.

    Ray >= 2.59 clusters use token authentication; Ray enables it in a client only for ``address="auto"``,
    so for an explicit address the token is looked for here, where Ray documents it.
    """
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    if address:
        _check_reachable(address)  # before importing Ray, which takes seconds
    import ray

    common = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if not address:
        ray.init(address="local", num_cpus=workers or os.cpu_count(), **common)
        return True
    token = auth_token_available()
    if "RAY_AUTH_MODE" not in os.environ and token:
        _enable_token_auth()
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(CONNECT_SECONDS))
    try:
        ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as e:
        ray.shutdown()
        cause = f"{e} {e.__cause__ or ''}"
        if "InvalidAuthToken" in cause or "authentication token" in cause.lower():
            reason = ("it uses token authentication and " + ("the token found here was refused"
                      if token else "no token was found") + f": {TOKEN_HELP}")
        else:
            reason = (f"cannot connect within {CONNECT_SECONDS} s (is it running? `ray status` on the head "
                      "node; the address is the one `ray start --head` printed, e.g. 10.0.0.1:6379)")
        raise ClusterError(address, reason) from None
    return True


def _check_reachable(address: str) -> None:
    """A TCP connect to ``host:port`` first: Ray's own client waits ~40 s per attempt for a silent address."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto" or a ray:// client address: Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        raise ClusterError(address, f"nothing answers there ({e.strerror or e}); is the cluster running "
                                    "(`ray status` on the head node) and is this the address `ray start --head` "
                                    "printed?") from None


def extract_parallel(
    src_dir: str | os.PathLike, store_path: str | os.PathLike, config: ExtractConfig | None = None, *,
    workers: int | None = None, address: str | None = None, include: Iterable[str] = (),
    exclude: Iterable[str] = (), transcode: str = "auto", annotations: Mapping[str, tuple] | None = None,
    max_retries: int = 2, progress: bool = True, verify: bool = False, window: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> Report:
    """Extract every selected video under src_dir into the store, one Ray task per video.

    At most ``window`` tasks are in flight (default ``WINDOW_PER_CPU`` x the cluster's CPUs); results are
    handled as they complete, so the driver's cost per task and its memory do not grow with the number
    of videos. On a cluster (``address``), src_dir and store_path must be paths every node sees.
    """
    import ray

    config = config or ExtractConfig()
    if config.flow == "raft" and not address:
        check_raft_available()  # the local Ray's GPUs are this machine's: fail before decoding anything
    store, work = open_run(src_dir, store_path, config, include=include, exclude=exclude,
                           annotations=annotations, verify=verify, storage_options=storage_options)
    if not work.jobs:  # every video unchanged since the last run: nothing for Ray to do
        report = begin_run(store, work)
        finish(store, report, work)
        return report
    t0 = time.perf_counter()
    started = start_ray(workers, address)
    startup = time.perf_counter() - t0 if started else 0.0
    try:
        report = begin_run(store, work)
        report.startup_seconds = startup
        flows = raft_actors(config) if config.flow == "raft" else [None]
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=True)(run_jobs)
        config_ref = ray.put(config)
        window = window or WINDOW_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))
        t1 = time.perf_counter()

        def submit(i, jobs):
            return task.remote(jobs, store.path, config_ref, transcode, flows[i % len(flows)], store.storage_options)

        def failed(job):
            with storage_errors(store.path):
                store.remove_video(job.key)  # a killed worker can leave half a group

        with Progress(len(work.jobs) + len(work.unchanged), progress) as bar:
            bar.skip(len(work.unchanged))
            handled, unreachable = 0, False
            for outcome in outcomes(submit, work.jobs, window, max_retries, failed):
                handled += 1
                unreachable |= outcome.store_error  # the tasks in flight end on their own; no more start
                report.add(outcome)
                bar.done(outcome)
            report.not_started = len(work.jobs) - handled if unreachable else 0
        report.seconds = time.perf_counter() - t1
    finally:
        if started:
            ray.shutdown()
    finish(store, report, work)
    stop_if_unreachable(store, report)
    return report


#: Tasks in flight per cluster CPU: enough to keep every worker busy while the driver handles results.
WINDOW_PER_CPU = 4
#: Videos per task, up to this many and this many source bytes: a task's own cost (scheduling, store
#: opening, a cold worker) is paid once for several small videos; a large video gets a task of its own.
TASK_VIDEOS, TASK_BYTES = 8, 8 << 20


def batches(jobs: Iterable, videos: int = TASK_VIDEOS, size: int = TASK_BYTES):
    """Consecutive jobs grouped into lists of at most ``videos`` jobs and ``size`` source bytes (a job larger
    than ``size`` alone)."""
    batch, total = [], 0
    for job in jobs:
        if batch and (len(batch) == videos or total + job.size > size):
            yield batch
            batch, total = [], 0
        batch.append(job)
        total += job.size
    if batch:
        yield batch


def outcomes(submit, jobs: Iterable, window: int, max_retries: int, failed) -> Iterator[Outcome]:
    """Every job's ``Outcome``, running ``batches`` of them as tasks (``submit(i, batch)``) with at most
    ``window`` in flight. A batch whose task fails after its retries is run again one job per task, so that a
    video that kills its worker fails alone; such a job's outcome is a failure, after ``failed(job)``. Once an
    outcome says the store is unreachable, no further batch is started (their jobs get no outcome)."""
    import ray

    pending = collections.deque(batches(jobs))
    for batch, result in as_completed(submit, pending, window):
        if not isinstance(result, ray.exceptions.RayError):
            if any(outcome.store_error for outcome in result):  # unreachable after its retries: start no more
                pending.clear()
            yield from result
        elif len(batch) > 1:
            pending.extend([job] for job in batch)
        else:
            failed(batch[0])
            reason = f"task failed after {max_retries} retries ({type(result).__name__}: {_first_line(result)})"
            yield Outcome(batch[0].rel, batch[0].key, error=reason, removed=True)


def as_completed(submit, work, window: int):
    """Yield (item, result or RayError) as tasks finish, with at most ``window`` in flight.

    submit(i, item) -> ObjectRef. ``work``: an iterable of items, or a deque that the caller may extend
    while iterating (items to retry). Each wait looks at the in-flight refs only (at most ``window``), so
    the cost per task is flat in the number of items."""
    import ray

    inflight: dict = {}
    items = work if isinstance(work, collections.deque) else collections.deque(work)
    counter = iter(range(1 << 62))

    def fill():
        while items and len(inflight) < window:
            item = items.popleft()
            inflight[submit(next(counter), item)] = item

    fill()
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        more, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
        for ref in {*ready, *more}:
            job = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                result = e
            yield job, result
        fill()


class RaftActor:
    """Holds one RAFT model on one GPU (a Ray actor with ``num_gpus=1``); decoding tasks send it frames."""

    def __init__(self, model: str, weights: str | None, device: str = "cuda"):
        self.raft = RaftFlow(model, weights, device=device)

    def estimate(self, prev, nxt):
        return self.raft(prev, nxt)


class ActorFlow:
    """A batch estimator that runs on a ``RaftActor``: what a CPU decoding task calls for each batch."""

    def __init__(self, actor):
        self.actor = actor

    def __call__(self, prev, nxt):
        import ray

        return ray.get(self.actor.estimate.remote(prev, nxt))


def raft_actors(config: ExtractConfig) -> list[ActorFlow]:
    """One RAFT actor per GPU of the cluster; ``MvtoolsError`` when it has none."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus < 1:
        raise MvtoolsError("--flow raft needs a GPU and the Ray cluster has none; use --flow dis or farneback")
    actor = ray.remote(num_gpus=1, num_cpus=0, max_restarts=2)(RaftActor)
    return [ActorFlow(actor.remote(config.raft_model, config.raft_weights or "DEFAULT")) for _ in range(gpus)]


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
