"""Ray execution of an extraction plan: one task per video, each writing only its own video group.

The driver plans, schedules, collects small outcomes, reports and writes the store's root metadata;
the tasks decode and write. Bad videos come back as outcomes with a reason; unexpected task errors and
worker deaths are retried ``max_retries`` times, then recorded as failures.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping

from .errors import MvtoolsError
from .extract import ExtractConfig, Outcome, Progress, Report, finish, plan, remove_orphans, run_job
from .flow import RaftFlow, check_raft_available
from .store import create_store


def start_ray(workers: int | None = None, address: str | None = None) -> bool:
    """Connect to a cluster (``address``), or start a local Ray with ``workers`` CPUs (default: all).
    Returns True when this call started or joined Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=workers or os.cpu_count(), **common)
    return True


def extract_parallel(
    src_dir: str | os.PathLike, store_path: str | os.PathLike, config: ExtractConfig | None = None, *,
    workers: int | None = None, address: str | None = None, include: Iterable[str] = (),
    exclude: Iterable[str] = (), transcode: str = "auto", annotations: Mapping[str, tuple] | None = None,
    max_retries: int = 2, progress: bool = True,
) -> Report:
    """Extract every selected video under src_dir into the store, one Ray task per video.

    On a cluster (``address``), src_dir and store_path must be paths every node sees.
    """
    import ray

    config = config or ExtractConfig()
    if config.flow == "raft" and not address:
        check_raft_available()  # the local Ray's GPUs are this machine's: fail before decoding anything
    store = create_store(store_path, config.settings())
    work = plan(src_dir, store, config, include=include, exclude=exclude, annotations=annotations)
    report = Report(orphans=remove_orphans(store, work.orphans))
    t0 = time.perf_counter()
    started = start_ray(workers, address)
    report.startup_seconds = time.perf_counter() - t0 if started else 0.0
    try:
        flows = raft_actors(config) if config.flow == "raft" else [None]
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=True)(run_job)
        store_abs = os.path.abspath(store.path)
        t1 = time.perf_counter()
        pending = {task.remote(job, store_abs, config, transcode, flows[i % len(flows)]): job
                   for i, job in enumerate(work.jobs)}
        with Progress(len(work.jobs), progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        reason = f"task failed after {max_retries} retries ({type(e).__name__}: {_first_line(e)})"
                        outcome = Outcome(job.rel, job.key, error=reason)
                    report.add(outcome)
                    bar.done(outcome)
        report.seconds = time.perf_counter() - t1
    finally:
        if started:
            ray.shutdown()
    finish(store, report)
    return report


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
