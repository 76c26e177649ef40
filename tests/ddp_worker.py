"""Run under ``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py CHECK OUT_DIR [STORE]``
(gloo, CPU): each rank runs CHECK and writes what it measured to OUT_DIR/<CHECK>_<rank>.json for
tests/test_ddp.py to judge. References are computed in one process on the gathered global batch."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainer.batchnorm import SyncBatchNorm, convert_sync_batchnorm, shuffled
from trainer.distributed import gather, rank_mismatches
from trainer.losses import batch_nce


def primitives() -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    # Shuffle-BN: a rank encodes rows of the whole global batch and each row comes back to its owner, unchanged.
    torch.manual_seed(0)
    b = 8
    x = (rank * b + torch.arange(b, dtype=torch.float32))[:, None].repeat(1, 3)  # row value = its global index
    seen = []

    def encode(v):
        seen.extend(v[:, 0].long().tolist())
        return v * 2, torch.full((len(v), 1), float(rank))

    doubled, where = shuffled(encode, x)
    out["shuffle"] = {"restored": torch.equal(doubled, 2 * x), "seen": seen, "encoded_on": where[:, 0].tolist()}

    # Cross-rank negatives with gradients: the gradient equals one process's on the global batch (times world,
    # the DDP average divides it back).
    g = torch.Generator().manual_seed(rank)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1).requires_grad_()
    k = F.normalize(torch.randn(4, 8, generator=g), dim=1).requires_grad_()
    batch_nce(q, k, 0.1).backward()
    q_all, k_all = gather(q.detach()).requires_grad_(), gather(k.detach()).requires_grad_()
    F.cross_entropy(q_all @ k_all.T / 0.1, torch.arange(len(q_all))).backward()
    out["gather_grad"] = {
        "k": (gather(k.grad) / world - k_all.grad).abs().max().item(),
        "q": (gather(q.grad) / world - q_all.grad).abs().max().item()}

    # SyncBatchNorm against BatchNorm3d on the global batch: output, input and weight gradients, running stats.
    torch.manual_seed(1)
    reference = torch.nn.BatchNorm3d(3)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    sync = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm3d(3)))
    sync.load_state_dict({f"0.{k}": v.clone() for k, v in reference.state_dict().items()})
    g = torch.Generator().manual_seed(10 + rank)
    xs = (torch.randn(2 + rank, 3, 2, 3, 3, generator=g) * 3 + rank).requires_grad_()  # ranks of unequal size
    weights = torch.randn(xs.shape, generator=g)
    y = sync(xs)
    (y * weights).sum().backward()
    sizes = [2 + r for r in range(world)]
    x_all = torch.cat(_gather_unequal(xs.detach(), sizes)).requires_grad_()
    y_all = reference(x_all)
    (y_all * torch.cat(_gather_unequal(weights, sizes))).sum().backward()
    mine = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
    weight_grad = sync[0].weight.grad.clone()
    dist.all_reduce(weight_grad)  # DDP would average; the sum is the single-process gradient
    out["sync_bn"] = {
        "is_sync": isinstance(sync[0], SyncBatchNorm),
        "y": (y.detach() - y_all.detach()[mine]).abs().max().item(),
        "x_grad": (xs.grad - x_all.grad[mine]).abs().max().item(),
        "weight_grad": (weight_grad - reference.weight.grad).abs().max().item(),
        "running_mean": (sync[0].running_mean - reference.running_mean).abs().max().item(),
        "running_var": (sync[0].running_var - reference.running_var).abs().max().item()}

    # The rank check names what differs, on every rank.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    same = rank_mismatches(net)
    with torch.no_grad():
        if rank == 1:
            net[0].bias[2] += 1e-3
            net[1].running_mean[0] += 1.0
    out["mismatches"] = {"same": same, "changed": rank_mismatches(net),
                         "skipping_stats": rank_mismatches(net, skip=("running_mean",))}
    return out


def _gather_unequal(x, sizes):
    """Every rank's ``x`` when ranks hold ``sizes`` rows (all_gather needs equal shapes: pad, then trim)."""
    padded = torch.zeros(max(sizes), *x.shape[1:])
    padded[:len(x)] = x
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded)
    return [c[:n] for c, n in zip(chunks, sizes)]


#: (run name, method, method_args overrides): every method with small queues (so they are exercised), MCL without
#: its order term (its head must not be built: DDP refuses unused parameters), and two methods that let the
#: ranks drift apart (the loop's check must stop them).
RUNS = [("rgb", "rgb", {"queue": 16}), ("mcd", "mcd", {}), ("maclr", "maclr", {"queue": 16}),
        ("mcl", "mcl", {"queue": 24}), ("mcl_no_order", "mcl", {"queue": 24, "order_weight": 0.0}),
        ("fima", "fima", {"queue": 16, "motion_queue": 16}), ("hcml", "hcml", {"instance": 0.5, "queue": 16}),
        ("drifting_weights", "drifting_weights", {"queue": 16}), ("drifting_queue", "drifting_queue", {"queue": 16}),
        # fine-tuning and the linear-SGD protocol run through the same loop
        ("supervised", "supervised", {"classes": 2}), ("linear_sgd", "supervised", {"classes": 2, "freeze": True}),
        # masked modelling on vit_tiny: tube, motion-guided and warped masks (each rank draws its own samples' masks)
        ("videomae", "videomae", {}), ("mgm", "mgm", {}), ("mgmae", "videomae", {"mask": "warped"})]


def methods(store: str, out_dir: str) -> dict:
    from trainer.loop import TrainConfig, train
    from trainer.methods import REGISTRY
    from trainer.methods.rgb import RGB

    class DriftingWeights(RGB):
        name = "drifting_weights"

        def after_step(self):
            super().after_step()
            with torch.no_grad():
                self.visual.head[0].bias.add_(1e-3 * dist.get_rank())

    class DriftingQueue(RGB):
        name = "drifting_queue"

        def after_step(self):
            super().after_step()
            self.queue.keys[0, 0] = float(dist.get_rank())

    REGISTRY.update({"drifting_weights": DriftingWeights, "drifting_queue": DriftingQueue})
    recipes = Path(__file__).resolve().parents[1] / "pipelines" / "train"
    results = {}
    for run, method, args in RUNS:
        recipe = recipes / f"{method}_tiny.yaml"
        base = dict(method=method, store=store, out=f"{out_dir}/{run}", steps=3, batch_size=2, clip_len=4, size=32,
                    workers=0, checkpoint_every=3, warmup_steps=1)
        config = TrainConfig.from_yaml(recipe, **base) if recipe.exists() else TrainConfig(**base)
        config.method_args.update(args)
        try:
            summary = train(config, progress=False)
            results[run] = {"ok": True, "bn": summary["bn"], "world_size": summary["world_size"]}
        except Exception as e:
            results[run] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return results


CHECKS = {"primitives": primitives, "methods": methods}

if __name__ == "__main__":
    check, out_dir = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    try:
        result = CHECKS[check](*sys.argv[3:], *([str(out_dir)] if check == "methods" else []))
    except Exception:
        result = {"error": traceback.format_exc()}
    (out_dir / f"{check}_{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()
