"""The training loop: the same for every method (it knows them only through ``REGISTRY``).

AdamW or SGD, linear warm-up then cosine decay, mixed precision on GPU, gradient clipping, DDP under
``torchrun``. Every ``checkpoint_every`` steps it writes ``RUN_DIR/checkpoint.pt`` atomically with the model,
optimiser, scheduler, scaler, RNG states and step; a resumed run replays the same batches (they depend only on
seed and step) and so continues with the same losses as an uninterrupted one. Logs go to
``RUN_DIR/metrics.csv`` (step, loss, one column per loss term, lr, and with ``on_bad_clip: skip`` the damaged
clips replaced so far) and TensorBoard (``RUN_DIR/tb``).

What can end a run, and what it keeps: a stop signal (``trainer.signals``) finishes the step, checkpoints it
and raises ``Interrupted``; a NaN loss, data that stays unreachable or damaged, too many replaced clips or a
rank that stops answering raise ``TrainingFailed`` with one line and keep the last checkpoint. Every rank takes
these decisions from one all-reduce per step, so all stop at the same step.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from obstore.exceptions import BaseError as ObstoreError

from mvtools.errors import MvtoolsError
from mvtools.storage import describe

from .batchnorm import BN_MODES, convert_sync_batchnorm
from .data import BAD_CLIP_POLICIES, ClipDataset, ClipSpec, StepBatches, list_videos, worker_context
from .distributed import init_distributed, rank_mismatches, sum_over_ranks
from .losses import Queue
from .methods import REGISTRY, Method
from .signals import StopRequests, ignore_stop_signals
from .supervised import Supervised

#: methods trained on labels after pretraining (``mvtools finetune``, ``eval --protocol linear-sgd``)
DOWNSTREAM: dict[str, type[Method]] = {Supervised.name: Supervised}

CHECKPOINT = "checkpoint.pt"
FORMAT = "mvtools-trainer/1"


class TrainError(MvtoolsError):
    """Training cannot start (bad settings, an existing run, ...); the message says why. Exit code 2."""


class TrainingFailed(TrainError):
    """Training started and failed (a NaN loss, non-finite weights, data that stays unreachable or damaged, a rank
    that stops answering); the message says what is kept. Exit code 1."""


class Interrupted(MvtoolsError):
    """A stop signal ended the run after ``step``, whose checkpoint is written (``trainer.signals``)."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(f"stopped by {signal_name} after step {step}: checkpoint {checkpoint} (step {step})")


class RunNotice(UserWarning):
    """Something a user should know about how a run starts (a --resume with nothing to resume, ...)."""


@dataclass
class TrainConfig:
    """Everything a run depends on; recorded in its checkpoint. YAML recipes fill it, CLI flags override."""

    method: str = "rgb"
    store: str = ""
    out: str = ""
    backbone: str = "tiny"
    backbone_args: dict = field(default_factory=dict)
    method_args: dict = field(default_factory=dict)
    steps: int = 100
    batch_size: int = 8
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9, nesterov)
    lr: float = 1e-3
    schedule: str = "cosine"  # after warm-up: "cosine" to 0, or "step": x ``gamma`` at each of ``milestones``
    milestones: list = field(default_factory=list)  # fractions of ``steps`` (step schedule)
    gamma: float = 0.1
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # AdamW's
    warmup_steps: int = 10
    clip_grad: float = 5.0  # max gradient norm; 0 disables
    amp: bool = True  # bfloat16 autocast, GPU only
    checkpoint_every: int = 50
    seed: int = 0
    workers: int = 2
    clip_len: int = 16
    stride: int = 2
    size: int = 112
    split: str | None = None  # None: "train" when the store has splits, else every video
    mv_per_frame: bool = False  # motion vectors per frame of displacement (trainer.data.anchor_distances)
    augment: dict = field(default_factory=dict)  # ClipSpec overrides: scale, ratio, jitter, grayscale, flip, ...
    bn: str = ""  # "shuffle", "sync" or "local" (trainer.batchnorm); "" = the method's paper choice (Method.bn)
    storage_options: dict = field(default_factory=dict)  # for an object-store URL (mvtools.storage); no secrets
    on_bad_clip: str = "skip"  # a damaged clip: "skip" replaces it (counted, bounded by max_bad_clips); "fail" stops
    max_bad_clips: float = 0.001  # most replaced clips, as a fraction of the run's samples (steps x global batch)
    dist_timeout: float = 300.0  # seconds a rank waits for the others in a collective before the run fails

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        from mvtools.bundled import resolve_config
        from mvtools.extract import read_yaml

        recipe = read_yaml(resolve_config(path, "train"))  # a bundled name (rgb_tiny) or a file
        unknown = set(recipe) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**{**recipe, **{k: v for k, v in overrides.items() if v is not None}})

    def validate(self) -> None:
        if self.method not in REGISTRY and self.method not in DOWNSTREAM:
            raise TrainError(f"unknown method {self.method!r}; choose from {', '.join(sorted(REGISTRY))}")
        if self.schedule not in ("cosine", "step"):
            raise TrainError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise TrainError(f"milestones are fractions of the steps, between 0 and 1: got {self.milestones}")
        if self.optimizer not in ("adamw", "sgd"):
            raise TrainError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise TrainError("steps and batch_size must be positive")
        if self.bn and self.bn not in BN_MODES:
            raise TrainError(f"bn must be one of {', '.join(BN_MODES)} (or empty: the method's own), got {self.bn!r}")
        if self.on_bad_clip not in BAD_CLIP_POLICIES:
            raise TrainError(f"on_bad_clip must be one of {', '.join(BAD_CLIP_POLICIES)}, got {self.on_bad_clip!r}")
        if not 0 <= self.max_bad_clips <= 1:
            raise TrainError(f"max_bad_clips is a fraction of the run's samples, in [0, 1]: got {self.max_bad_clips}")
        if self.dist_timeout <= 0:
            raise TrainError(f"dist_timeout must be a positive number of seconds, got {self.dist_timeout}")


def lr_factor(step: int, warmup: int, total: int, schedule: str = "cosine", milestones=(), gamma: float = 0.1
              ) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at ``total``: 1/2 (1 + cos(pi p)); or with
    ``schedule="step"``, gamma^k where k is the number of ``milestones`` (fractions of ``total``) passed."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "step":
        return gamma ** sum(step >= m * total for m in milestones)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_method(config: TrainConfig | dict) -> Method:
    """The configured method, with its ``bn`` mode set (BN layers made ``SyncBatchNorm`` for "sync")."""
    c = config if isinstance(config, dict) else asdict(config)
    cls = REGISTRY.get(c["method"]) or DOWNSTREAM[c["method"]]
    try:
        method = cls(backbone=c["backbone"], backbone_args=dict(c["backbone_args"]), **dict(c["method_args"]))
    except (TypeError, ValueError) as e:  # settings that do not fit the method: a usage error
        raise TrainError(f"{c['method']}: {e}") from None
    method.bn = c.get("bn") or cls.bn
    if method.bn == "sync":
        convert_sync_batchnorm(method)
    return method


#: per-rank BatchNorm statistics: they differ across ranks unless bn is "sync"
BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def check_ranks_agree(method: Method, step: int) -> None:
    """Under DDP every rank must hold the same parameters, queues and EMA encoders (BN statistics too with
    ``bn: sync``); a method that lets them drift apart fails here instead of training a different model per rank."""
    skip = () if method.bn == "sync" else BN_STATISTICS
    differ = rank_mismatches(method, skip)
    if differ:
        raise TrainingFailed(f"step {step}: ranks hold different values of {', '.join(differ[:5])}"
                             f"{' ...' if len(differ) > 5 else ''} (a method's updates or randomness are not the "
                             f"same on every rank)")


class QueueWarning(UserWarning):
    """A key queue longer than the store can fill with other videos' keys."""


def queue_room(videos: int, global_batch: int, per_sample: int) -> int:
    """The most keys a queue can hold without keys of the current positives' own videos: one epoch's samples
    other than the current batch, (videos - global_batch) x keys per sample (a video recurs once per epoch)."""
    return max(videos - global_batch, 0) * per_sample


def queue_warnings(method: Method, config: TrainConfig, videos: int, world: int) -> list[str]:
    """One message per queue of ``method`` that exceeds ``queue_room``, saying what to use instead."""
    out = []
    for name, queue in method.named_modules():
        if isinstance(queue, Queue):
            room = queue_room(videos, config.batch_size * world, queue.per_sample)
            size = len(queue.keys)
            if size > room:
                out.append(f"{config.method}: queue {name!r} holds {size} keys ({queue.per_sample} per sample), but "
                           f"{videos} videos at a global batch of {config.batch_size * world} fill only {room} with "
                           f"other videos' keys: it holds keys of the positives' own videos (false negatives; the "
                           f"loss rises at first). Use --config {config.method}_tiny (in-batch negatives, queue 0) "
                           f"or queues of at most {room} keys (--set method_args.queue={room})")
    return out


def default_split(store: str, storage_options: dict | None = None) -> str | None:
    return "train" if any(v.split == "train" for v in list_videos(store, storage_options)) else None


def _optimizer(method: Method, config: TrainConfig) -> torch.optim.Optimizer:
    groups = method.param_groups(config.weight_decay)  # the method says what decays and what learns slower
    for group in groups:
        group["lr"] = config.lr * group.pop("lr_scale", 1.0)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to(v, device) for v in batch]
    return batch


class MetricsLog:
    """RUN_DIR/metrics.csv, one row per step; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, start: int):
        self.path = path
        self.columns: list[str] | None = None
        rows: list[dict] = []
        if start and path.exists():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = reader.fieldnames
                rows = [r for r in reader if int(r["step"]) <= start]
        self.file = open(path, "w", newline="")  # noqa: SIM115 (closed by close())
        if self.columns:
            self.writer = csv.DictWriter(self.file, self.columns)
            self.writer.writeheader()
            self.writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.writer = csv.DictWriter(self.file, self.columns)
            self.writer.writeheader()
        self.writer.writerow({k: row[k] for k in self.columns})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by ``train`` (loaded with ``weights_only=True``: no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"{path}: no checkpoint here") from None
    except Exception as e:
        raise TrainError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainError(f"{path}: not an mvtools trainer checkpoint")
    return state


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _distributed_setup(timeout: float) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        init_distributed("nccl" if device.type == "cuda" else "gloo", timeout)
    return rank, world, device


def elastic_restart() -> bool:
    """True in workers that torchrun restarted (``--max-restarts``): they run the same command line again."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def resumes(out: str | os.PathLike, resume: bool) -> bool:
    """Whether a run in ``out`` continues from its checkpoint: with ``resume``, or when torchrun restarted this
    worker and the checkpoint was written under the same rendezvous id (so this launch wrote it, unless the id is
    torchrun's default "none"). A ``TrainError`` when a checkpoint exists and neither holds."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        return resume
    if resume or (elastic_restart() and load_checkpoint(path).get("elastic_run") == os.environ.get(
            "TORCHELASTIC_RUN_ID")):
        return True
    raise TrainError(f"{path} exists; pass --resume to continue it, or choose another --out")


#: how gloo and NCCL word a collective that a rank never joined ("Timed out waiting 5000ms for send operation",
#: "Application timeout caused pair closure", "Connection closed by peer", ...)
_LOST_RANK = re.compile(r"timed out|timeout|connection (closed|reset|refused)|closed by peer|gloo|nccl", re.I)


def failure(error: BaseException, store: str, timeout: float) -> str:
    """One line for an error that ended a run: ours as they are (a DataLoader worker's unwrapped from the traceback
    text torch re-raises it with), a store's as ``mvtools.storage.describe`` says, a lost rank as such."""
    text = str(error)
    if isinstance(error, MvtoolsError):
        return text
    worker = re.search(r"Caught (\w+) in DataLoader worker process \d+", text)
    name = worker.group(1) if worker else type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = (lines[-1].split(": ", 1)[-1] if worker else lines[0]) if lines else name
    if worker and name in ("DamagedData", "StoreError", "DataError", "VideoError"):
        return message
    if isinstance(error, (ObstoreError, OSError)) or "obstore.exceptions." in text:
        return f"{store}: {describe(error)}"
    if isinstance(error, (dist.DistError, TimeoutError)) or isinstance(error, RuntimeError) and _LOST_RANK.search(text):
        return (f"lost contact with another rank: no answer within --dist-timeout {timeout:g} s (it froze, died or "
                f"ran out of memory; {name}: {message[:200]})")
    return f"{name}: {message[:300]}"


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True, until: int | None = None,
          initialise: Callable[[Method], None] | None = None) -> dict:
    """Run (or resume) a training run; returns a summary (steps, last loss, data-wait fraction, steps/s, ...).

    Timings leave out the first step (worker start-up, kernel warm-up). ``initialise(method)`` sets the starting
    weights of a new run (fine-tuning loads a pretrained encoder); a resumed run takes them from its checkpoint.
    ``resume`` with no checkpoint yet starts at step 0 (a ``RunNotice`` says so); torchrun's restarts resume
    (``resumes``).

    ``until``: stop after this step as if interrupted (a checkpoint is written there); the schedule is still
    that of ``config.steps``, so a later ``resume`` continues the same run.

    Raises ``Interrupted`` after a stop signal (checkpoint at the step it finished), ``TrainingFailed`` when the
    run cannot go on (the last checkpoint is kept), ``TrainError`` before anything is written.
    """
    config.validate()
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT
    resume = resumes(out, resume)
    rank, world, device = _distributed_setup(config.dist_timeout)
    torch.manual_seed(config.seed)
    method = build_method(config).to(device)
    split = config.split if config.split is not None else default_split(config.store, config.storage_options)
    spec = ClipSpec(config.clip_len, config.stride, config.size, mv_per_frame=config.mv_per_frame, **config.augment)
    try:
        method.encoder.check_input(spec.clip_len, spec.size)
    except ValueError as e:
        raise TrainError(f"{config.method} ({config.backbone}): {e}") from None
    dataset = ClipDataset(config.store, modalities=method.modalities, split=split, views=method.views,
                          seed=config.seed, spec=spec, sampler=method.sampler(), storage_options=config.storage_options,
                          on_bad_clip=config.on_bad_clip)
    if rank == 0:
        for message in queue_warnings(method, config, len(dataset.videos), world):
            warnings.warn(message, QueueWarning, stacklevel=2)
    resuming = resume and ckpt_path.exists()
    if resume and not resuming and rank == 0:
        warnings.warn(f"--resume: no checkpoint in {out} yet, starting at step 0", RunNotice, stacklevel=2)
    if initialise is not None and not resuming:
        initialise(method)
    optimizer = _optimizer(method, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps, config.schedule, config.milestones,
                                       config.gamma))
    amp = config.amp and device.type == "cuda"
    start, replaced = 0, 0
    if resuming:
        state = load_checkpoint(ckpt_path)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start, replaced = int(state["step"]), int(state.get("bad_clips", 0))
    model = torch.nn.parallel.DistributedDataParallel(method) if world > 1 else method
    stop = min(config.steps, until) if until is not None else config.steps
    batches = StepBatches(len(dataset), config.batch_size, seed=config.seed, start=start, steps=stop,
                          rank=rank, world=world)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),  # leaves the global RNG alone: resume stays exact
        worker_init_fn=ignore_stop_signals if config.workers else None,
        persistent_workers=False, multiprocessing_context=worker_context(config.store) if config.workers else None)
    main = rank == 0
    out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out / "metrics.csv", start) if main else None
    board = _tensorboard(out) if main else None
    wait = busy = 0.0
    last: dict[str, float] = {}
    most_replaced = config.max_bad_clips * config.steps * config.batch_size * world
    reported: set[str] = set()
    bar = _progress(config.steps, start, progress and main)
    method.train()
    tick = time.perf_counter()
    doing = start  # the step in progress (0-based)
    requests = StopRequests()
    batches_in = iter(loader)
    try:
        with requests:
            for step, batch in enumerate(batches_in, start):
                got = time.perf_counter()
                doing = step
                bad = _take_bad_clips(batch, reported if main else None, step + 1)
                batch = _to(batch, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    terms = model(batch)
                loss = sum(terms.values())
                # One all-reduce per step: every rank stops at the same step, none waits for the others.
                nonfinite, stopping, bad = sum_over_ranks(
                    [float(not torch.isfinite(loss)), float(requests.requested), float(bad)], device)
                if nonfinite:
                    what = "loss is " + (f"{loss.item()} (" + ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                                         + ")" if not torch.isfinite(loss) else "not finite on another rank")
                    raise TrainingFailed(f"step {step + 1}: {what}; lower --lr or check the inputs; "
                                         f"{_kept(ckpt_path)}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip_grad:
                    torch.nn.utils.clip_grad_norm_(method.parameters(), config.clip_grad)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                method.after_step()
                replaced += int(bad)
                ends = bool(stopping) or step + 1 == stop
                if world > 1 and ((step + 1) % config.checkpoint_every == 0 or ends):
                    check_ranks_agree(method, step + 1)
                done = time.perf_counter()
                if step > start:  # the first step also starts the workers and warms the kernels: not timed
                    wait, busy = wait + (got - tick), busy + (done - got)
                tick = done
                last = {"step": step + 1, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}, "lr": lr}
                if config.on_bad_clip == "skip":
                    last["bad_clips"] = replaced
                if main:
                    log.write(last)
                    for k, v in last.items():
                        if k != "step":
                            board.add_scalar(f"train/{k}", v, step + 1)
                    bar.set_postfix(loss=f"{last['loss']:.3f}")
                    bar.update()
                    if (step + 1) % config.checkpoint_every == 0 or ends:
                        save_checkpoint(ckpt_path, _state(config, method, optimizer, scheduler, step + 1, world,
                                                          replaced))
                if replaced > most_replaced:
                    samples = config.steps * config.batch_size * world
                    raise TrainingFailed(
                        f"step {step + 1}: {replaced} damaged clips replaced, more than max_bad_clips "
                        f"({config.max_bad_clips:.2%}) of the run's {samples} samples; "
                        f"run `mvtools verify {config.store} --repair`, then extract again; {_kept(ckpt_path)}")
                doing = step + 1
                if stopping and step + 1 < stop:
                    if world > 1:
                        dist.barrier()  # rank 0's checkpoint is on disk before any rank exits
                    raise Interrupted(requests.name, step + 1, ckpt_path)
    except (TrainError, Interrupted, KeyboardInterrupt):
        raise
    except Exception as e:  # data that stays unreachable or damaged, a rank lost, ...: one line, checkpoint kept
        why = failure(e, config.store, config.dist_timeout)
        raise TrainingFailed(f"step {doing + 1}: {why}; {_kept(ckpt_path)}") from e
    finally:
        stop_workers(batches_in)
        bar.close()
        if main:
            log.close()
            board.close()
    return {"steps": stop, "resumed_from": start, "last": last,
            "data_wait_fraction": wait / max(wait + busy, 1e-9),
            "steps_per_s": (stop - start - 1) / (wait + busy) if wait + busy > 0 else float("nan"),
            "world_size": world, "rank": rank, "bn": method.bn, "bad_clips": replaced,
            "device": str(device)}


def stop_workers(batches, grace: float = 2.0) -> None:
    """End a DataLoader iterator's workers now, whatever ended the loop. Waiting for garbage collection is not
    enough: an error's traceback keeps the iterator alive, and the workers ignore SIGTERM (``ignore_stop_signals``),
    so torch's ``terminate()`` at exit would not end one that is still inside a retried read. They only read,
    so a worker still alive after ``grace`` seconds is killed."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's multi-process iterator (private, long stable)
    if shutdown is None:
        return
    workers = list(getattr(batches, "_workers", []))
    shutdown()
    deadline = time.monotonic() + grace
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join(5)


def _take_bad_clips(batch: dict, reported: set[str] | None, step: int) -> int:
    """Remove the loader's record of replaced clips from ``batch`` and return their number; warn once per damaged
    video not yet in ``reported`` (None: do not warn, another rank does)."""
    if "bad_clips" not in batch:
        return 0
    count = int(batch.pop("bad_clips").sum())
    errors = batch.pop("bad_clip_errors")
    for lines in errors if reported is not None else ():
        for line in filter(None, lines.split("\n")):
            key, _, message = line.partition("\t")
            if key not in reported:
                reported.add(key)
                warnings.warn(f"step {step}: skipping a clip of damaged video {key!r} ({message})", RunNotice,
                              stacklevel=2)
    return count


def _kept(ckpt_path: Path) -> str:
    return f"the checkpoint of step {_saved_step(ckpt_path)} is kept" if ckpt_path.exists() else \
        "no checkpoint was written"


def _state(config, method, optimizer, scheduler, step, world, bad_clips: int = 0) -> dict:
    for name, p in method.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise TrainingFailed(f"step {step}: {name} holds non-finite values; checkpoint not written")
    return {"format": FORMAT, "config": {**asdict(config), "bn": method.bn}, "step": step, "world_size": world,
            "model": method.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": _rng_state(), "bad_clips": bad_clips,
            "elastic_run": os.environ.get("TORCHELASTIC_RUN_ID")}


def _saved_step(path: Path) -> int:
    return int(load_checkpoint(path)["step"])


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def _progress(total: int, start: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", disable=not enabled, dynamic_ncols=True)
