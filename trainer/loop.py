"""The training loop: the same for every method (it knows them only through ``REGISTRY``).

AdamW or SGD, linear warm-up then cosine decay, mixed precision on GPU, gradient clipping, DDP under
``torchrun``. Every ``checkpoint_every`` steps it writes ``RUN_DIR/checkpoint.pt`` atomically with the model,
optimiser, scheduler, scaler, RNG states and step; a resumed run replays the same batches (they depend only on
seed and step) and so continues with the same losses as an uninterrupted one. Logs go to
``RUN_DIR/metrics.csv`` (step, loss, one column per loss term, lr) and TensorBoard (``RUN_DIR/tb``).
"""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from mvtools.errors import MvtoolsError

from .batchnorm import BN_MODES, convert_sync_batchnorm
from .data import ClipDataset, ClipSpec, StepBatches, list_videos, worker_context
from .distributed import everywhere, rank_mismatches
from .losses import Queue
from .methods import REGISTRY, Method
from .supervised import Supervised

#: methods trained on labels after pretraining (``mvtools finetune``, ``eval --protocol linear-sgd``)
DOWNSTREAM: dict[str, type[Method]] = {Supervised.name: Supervised}

CHECKPOINT = "checkpoint.pt"
FORMAT = "mvtools-trainer/1"


class TrainError(MvtoolsError):
    """Training cannot start (bad settings, an existing run, ...); the message says why. Exit code 2."""


class TrainingFailed(TrainError):
    """Training started and failed (a NaN loss, non-finite weights); the message says what is kept. Exit code 1."""


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

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        from mvtools.extract import read_yaml

        recipe = read_yaml(path)
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
                           f"loss rises at first). Use pipelines/train/{config.method}_tiny.yaml (in-batch negatives, "
                           f"queue 0) or method_args with queues of at most {room} keys")
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


def _distributed_setup() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True, until: int | None = None,
          initialise: Callable[[Method], None] | None = None) -> dict:
    """Run (or resume) a training run; returns a summary (steps, last loss, data-wait fraction, steps/s, ...).

    Timings leave out the first step (worker start-up, kernel warm-up). ``initialise(method)`` sets the starting
    weights of a new run (fine-tuning loads a pretrained encoder); a resumed run takes them from its checkpoint.

    ``until``: stop after this step as if interrupted (a checkpoint is written there); the schedule is still
    that of ``config.steps``, so a later ``resume`` continues the same run.
    """
    config.validate()
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise TrainError(f"{ckpt_path} exists; pass --resume to continue it, or choose another --out")
    rank, world, device = _distributed_setup()
    torch.manual_seed(config.seed)
    method = build_method(config).to(device)
    split = config.split if config.split is not None else default_split(config.store, config.storage_options)
    spec = ClipSpec(config.clip_len, config.stride, config.size, mv_per_frame=config.mv_per_frame, **config.augment)
    try:
        method.encoder.check_input(spec.clip_len, spec.size)
    except ValueError as e:
        raise TrainError(f"{config.method} ({config.backbone}): {e}") from None
    dataset = ClipDataset(config.store, modalities=method.modalities, split=split, views=method.views,
                          seed=config.seed, spec=spec, sampler=method.sampler(), storage_options=config.storage_options)
    if rank == 0:
        for message in queue_warnings(method, config, len(dataset.videos), world):
            warnings.warn(message, QueueWarning, stacklevel=2)
    resuming = resume and ckpt_path.exists()
    if initialise is not None and not resuming:
        initialise(method)
    optimizer = _optimizer(method, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps, config.schedule, config.milestones,
                                       config.gamma))
    amp = config.amp and device.type == "cuda"
    start = 0
    if resuming:
        state = load_checkpoint(ckpt_path)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
    model = torch.nn.parallel.DistributedDataParallel(method) if world > 1 else method
    stop = min(config.steps, until) if until is not None else config.steps
    batches = StepBatches(len(dataset), config.batch_size, seed=config.seed, start=start, steps=stop,
                          rank=rank, world=world)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),  # leaves the global RNG alone: resume stays exact
        persistent_workers=False, multiprocessing_context=worker_context(config.store) if config.workers else None)
    main = rank == 0
    out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out / "metrics.csv", start) if main else None
    board = _tensorboard(out) if main else None
    wait = busy = 0.0
    last: dict[str, float] = {}
    bar = _progress(config.steps, start, progress and main)
    method.train()
    tick = time.perf_counter()
    try:
        for step, batch in enumerate(loader, start):
            got = time.perf_counter()
            batch = _to(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                terms = model(batch)
            loss = sum(terms.values())
            if not everywhere(bool(torch.isfinite(loss)), device):  # every rank stops, none waits for the others
                kept = f"the checkpoint of step {_saved_step(ckpt_path)} is kept" if ckpt_path.exists() else \
                    "no checkpoint was written"
                what = "loss is " + (f"{loss.item()} (" + ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                                     + ")" if not torch.isfinite(loss) else "not finite on another rank")
                raise TrainingFailed(f"step {step + 1}: {what}; lower --lr or check the inputs; {kept}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad:
                torch.nn.utils.clip_grad_norm_(method.parameters(), config.clip_grad)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            method.after_step()
            if world > 1 and ((step + 1) % config.checkpoint_every == 0 or step + 1 == stop):
                check_ranks_agree(method, step + 1)
            done = time.perf_counter()
            if step > start:  # the first step also starts the workers and warms the kernels: not timed
                wait, busy = wait + (got - tick), busy + (done - got)
            tick = done
            last = {"step": step + 1, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}, "lr": lr}
            if main:
                log.write(last)
                for k, v in last.items():
                    if k != "step":
                        board.add_scalar(f"train/{k}", v, step + 1)
                bar.set_postfix(loss=f"{last['loss']:.3f}")
                bar.update()
                if (step + 1) % config.checkpoint_every == 0 or step + 1 == stop:
                    save_checkpoint(ckpt_path, _state(config, method, optimizer, scheduler, step + 1, world))
    finally:
        bar.close()
        if main:
            log.close()
            board.close()
    return {"steps": stop, "resumed_from": start, "last": last,
            "data_wait_fraction": wait / max(wait + busy, 1e-9),
            "steps_per_s": (stop - start - 1) / (wait + busy) if wait + busy > 0 else float("nan"),
            "world_size": world, "rank": rank, "bn": method.bn,
            "device": str(device)}


def _state(config, method, optimizer, scheduler, step, world) -> dict:
    for name, p in method.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise TrainingFailed(f"step {step}: {name} holds non-finite values; checkpoint not written")
    return {"format": FORMAT, "config": {**asdict(config), "bn": method.bn}, "step": step, "world_size": world,
            "model": method.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": _rng_state()}


def _saved_step(path: Path) -> int:
    return int(load_checkpoint(path)["step"])


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def _progress(total: int, start: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", disable=not enabled, dynamic_ncols=True)
