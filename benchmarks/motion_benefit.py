"""Does motion-aware pretraining learn motion? Pretrain each method on synthetic datasets whose classes differ
only by motion, with the same backbone, steps and seed, then evaluate by linear probe and retrieval. Two sets:

    camera    ``mvtools synth``: a camera moving over random textures (8 classes: 4 directions, zoom in/out,
              rotate cw/ccw); one global motion, constant in time
    objects   ``benchmarks/synth_objects.py``: 3-5 objects moving independently over a textured, slightly drifting
              background, their motion changing within a clip (8 laws: swings along 4 axes, orbits cw/ccw,
              stop-and-go, spinning); what MCD's negatives, MCL's boundaries and FIMA's foreground assume

Prints a markdown table per set (mean +- std over seeds, and every seed), and what each method's motion input
costs to prepare: extraction time per frame with and without it, measured in the same run (camera set).

    python benchmarks/motion_benefit.py [--sets camera,objects] [--methods rgb,mcd,...] [--seeds 0,1,2]

Each method trains from its tiny recipe ``pipelines/train/<method>_tiny.yaml`` (same backbone and clip spec
for all); ``--steps``, ``--batch-size`` and ``--augment`` override every recipe alike. The default augmentation
here has no flips (a mirrored clip turns "left" into "right" and "rotate_cw" into "rotate_ccw": here the
direction is the label) and light colour jitter (at this CPU budget, with the recipes' jitter of 0.4 even a
supervised tiny 3D CNN learns these motions or not depending on the seed: 9% to 90% top-1 after 150 steps).
``--keep DIR`` keeps the videos and stores (reused on the next run); ``--json FILE`` records every run as it
finishes and reuses the runs already recorded there with the same settings (rerun a subset, print the whole).
``--finetune-steps N`` then fine-tunes every pretrained checkpoint (``trainer.finetune``, the
``pipelines/finetune/ucf101_tiny.yaml`` recipe at N steps, ``ucf101_vit_tiny.yaml`` for the ViT of ``videomae`` and
``mgm``, the same augmentation) and, as the baseline, the same network from random weights (``--from-scratch``) at
the same steps, and tests each with 10 clips x 3 crops per video (softmax averaged): a second table of fine-tuned
top-1 per method. An ``hcml`` checkpoint is fine-tuned whole (its motion modules with it), and compared with the
same network from random weights.
``--variant NAME:METHOD:JSON`` adds a row trained like METHOD with its ``method_args`` updated by JSON (a loss-term
ablation, e.g. ``mcl_no_mal:mcl:{"mal_weight": 0}``); the checkpoints stay in DIR/runs for
``benchmarks/motion_probe.py`` when ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synth_objects import make_object_dataset  # noqa: E402
from mvtools.extract import ExtractConfig, extract  # noqa: E402
from mvtools.synth import make_dataset  # noqa: E402
from trainer.evaluate import evaluate  # noqa: E402
from trainer.loop import TrainConfig, train  # noqa: E402
from trainer.methods import REGISTRY  # noqa: E402

MODALITIES = ("frames", "mv", "residual", "keyframes")
#: method -> (its motion input, how it is obtained)
MOTION_INPUT = {
    "rgb": ("none", ""),
    "mcd": ("motion vectors + I-frames", "mv"),
    "maclr": ("motion vectors (default; residual or flow selectable)", "mv"),
    "mcl": ("motion vectors (flow when the store has it)", "mv"),
    "fima": ("frame differences", "derived on read"),
    "hcml": ("frame differences", "in the network"),
    "videomae": ("none (random tube masks)", ""),
    "mgm": ("motion vectors (where the mask goes)", "mv"),
}
#: what is timed per frame: extraction settings -> label
PREPROCESSING = [
    ("decode frames + keyframes", dict(modalities=("frames", "keyframes"))),
    ("+ motion vectors", dict(modalities=("frames", "keyframes", "mv"))),
    ("+ motion vectors + residuals (default)", dict(modalities=MODALITIES)),
    ("+ DIS flow (fast)", dict(modalities=MODALITIES, flow="dis", flow_preset="fast")),
    ("+ DIS flow (medium)", dict(modalities=MODALITIES, flow="dis", flow_preset="medium")),
    ("+ Farneback flow", dict(modalities=MODALITIES, flow="farneback")),
]


def recipe(method: str) -> Path:
    return ROOT / "pipelines" / "train" / f"{method}_tiny.yaml"


def network_of(method: str) -> tuple[str, dict]:
    """What a method's checkpoint fine-tunes: (the backbone of its tiny recipe: tiny, or vit_tiny for masked
    modelling; the classifier's encoder arguments: HCML's motion modules, {} for the others)."""
    from trainer.loop import build_method

    config = TrainConfig.from_yaml(recipe(method))
    return config.backbone, build_method(config).encoder_args()


def scratch_row(method: str) -> str:
    """The from-scratch baseline a method's fine-tuned row is compared with: the same network, random weights."""
    backbone, encoder_args = network_of(method)
    return "scratch_hcml" if encoder_args else ("scratch_vit" if backbone.startswith("vit") else "scratch")


def finetune_recipe(backbone: str) -> Path:
    """ucf101_vit_tiny.yaml (VideoMAE's fine-tuning knobs) for a ViT, ucf101_tiny.yaml otherwise."""
    name = "ucf101_vit_tiny.yaml" if backbone.startswith("vit") else "ucf101_tiny.yaml"
    return ROOT / "pipelines" / "finetune" / name


#: the from-scratch baselines: the tiny CNN, vit_tiny, and the tiny CNN with HCML's motion modules
SCRATCH = {"scratch": "rgb", "scratch_vit": "videomae", "scratch_hcml": "hcml"}  # row -> a method of that network


#: set -> (how its videos are made, what it is)
SETS = {"camera": (make_dataset, "camera motion over random textures (mvtools synth)"),
        "objects": (make_object_dataset, "objects moving independently over a drifting texture "
                                         "(benchmarks/synth_objects.py)")}


def build_store(name: str, videos_dir: Path, store: Path, videos: int, frames: int) -> Path:
    if not (store / "zarr.json").exists():
        SETS[name][0](videos_dir, videos=videos, seed=1234, num_frames=frames)
        report = extract(videos_dir, store, ExtractConfig(modalities=MODALITIES), progress=False)
        assert not report.failed, report.failed
    return store


def preprocessing_costs(videos_dir: Path, work: Path, sample: int) -> list[tuple[str, float]]:
    """Milliseconds per frame of in-process (one core) extraction of ``sample`` videos, per setting."""
    subset = work / "subset"
    if not subset.exists():
        for path in sorted(videos_dir.rglob("*.mp4"))[:sample]:
            target = subset / path.relative_to(videos_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    costs = []
    for i, (label, settings) in enumerate(PREPROCESSING):
        t0 = time.perf_counter()
        report = extract(subset, work / f"cost_{i}.zarr", ExtractConfig(**settings), progress=False)
        seconds = time.perf_counter() - t0
        costs.append((label, 1000 * seconds / report.frames))
    return costs


def run(name: str, seed: int, store: Path, work: Path, args) -> dict:
    method, overrides = variants(args).get(name, (name, {}))
    out = work / "runs" / f"{store.stem}_{name}_{seed}"
    config = TrainConfig.from_yaml(recipe(method), store=str(store), out=str(out), seed=seed, steps=args.steps,
                                   batch_size=args.batch_size, workers=args.workers,
                                   augment=json.loads(args.augment))
    config.method_args.update(overrides)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    train(config, progress=False)
    seconds = time.perf_counter() - t0
    result = evaluate(out / "checkpoint.pt", store, workers=args.workers)
    return {**result, "train_s": seconds}


def finetuned(checkpoint: Path | None, seed: int, store: Path, out: Path, args, network: tuple[str, dict]) -> dict:
    """Fine-tune a pretrained checkpoint (None: random weights of ``network``, (backbone, encoder arguments)) and
    test it multi-view (10 x 3), with the tiny fine-tuning recipe of its backbone."""
    from trainer.finetune import finetune, read_recipe

    if out.exists():
        shutil.rmtree(out)
    backbone, encoder_args = network
    ft_recipe = finetune_recipe(backbone)
    method_args = {**read_recipe(ft_recipe)[0].get("method_args", {}), **encoder_args}
    t0 = time.perf_counter()
    result = finetune(store, out, checkpoint=checkpoint, from_scratch=checkpoint is None, recipe=ft_recipe,
                      progress=False,
                      overrides={"steps": args.finetune_steps, "seed": seed, "workers": args.workers,
                                 "batch_size": args.batch_size, "augment": json.loads(args.augment),
                                 **({"backbone": backbone, "method_args": method_args} if checkpoint is None else {})})
    return {k: result[k] for k in ("top1", "top5", "mean_class_accuracy", "views")} | {
        "train_s": time.perf_counter() - t0}


def supervised(seed: int, store: Path, args) -> dict:
    """The reference of what labels teach the same network at the same budget: the tiny backbone and a linear
    head trained with cross-entropy on the train split (same clips, steps, batch, augmentation, AdamW at the
    tiny recipes' lr), tested with 4 centre clips per video (softmax averaged): top-1 on the test split."""
    import torch
    import torch.nn.functional as F

    from trainer.data import ClipDataset, ClipSpec, StepBatches, list_videos, split_keys
    from trainer.models import build

    config = TrainConfig.from_yaml(recipe("rgb"), seed=seed, augment=json.loads(args.augment))
    torch.manual_seed(seed)
    train_keys, test_keys, _ = split_keys(list_videos(store))
    spec = ClipSpec(config.clip_len, config.stride, config.size, **config.augment)
    data = ClipDataset(store, keys=train_keys, views=1, spec=spec, seed=seed)
    net = build(config.backbone, 3)
    head = torch.nn.Linear(net.out_dim, len(data.classes))
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    batches = StepBatches(len(data), args.batch_size, seed=seed, steps=args.steps)
    t0 = time.perf_counter()
    for batch in torch.utils.data.DataLoader(data, batch_sampler=batches, num_workers=args.workers):
        loss = F.cross_entropy(head(net(batch["views"][0]["rgb"])), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - t0
    net.eval()
    test = ClipDataset(store, keys=test_keys, train=False, clips_per_video=4, spec=spec)
    scores: dict[int, list] = {}
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(test, batch_size=16, num_workers=args.workers):
            for p, video, label in zip(F.softmax(head(net(batch["views"][0]["rgb"])), 1), batch["video"].tolist(),
                                       batch["label"].tolist()):
                scores.setdefault(video, [0, label])[0] += p
    top1 = statistics.mean(float(int(s.argmax()) == label) for s, label in scores.values())
    return {"top1": top1, "train_s": seconds}


def variants(args) -> dict[str, tuple[str, dict]]:
    """--variant NAME:METHOD:JSON -> {NAME: (METHOD, method_args overrides)}."""
    out = {}
    for text in args.variant:
        name, method, overrides = text.split(":", 2)
        out[name] = (method, json.loads(overrides))
    return out


def settings(args) -> dict:
    """What a recorded run must share with this one to be reused."""
    return {k: getattr(args, k) for k in ("steps", "augment", "batch_size", "videos", "frames")}


def finetune_table(name: str, results: dict, args) -> None:
    print(f"\n{name}, fine-tuned: every pretrained checkpoint above and random weights of each network, "
          f"{args.finetune_steps} steps of pipelines/finetune/ucf101_tiny.yaml (tiny CNN: SGD, dropout 0.5, step "
          f"decay) or ucf101_vit_tiny.yaml (vit_tiny: AdamW, layer decay, drop path, label smoothing, mixup/cutmix), "
          f"augment {args.augment}; test: 10 clips x 3 crops per video, softmax averaged; each row against random "
          f"weights of the network it fine-tunes\n")
    print("| initialisation | fine-tuned top-1 (%) | vs scratch | per seed | top-5 (%) | mean class (%) | s/run |")
    print("|---|---|---|---|---|---|---|")
    bases = {s: statistics.mean(r["top1"] for r in results[s]) for s in SCRATCH if s in results}
    labels = {"scratch": "random (--from-scratch, tiny)", "scratch_vit": "random (--from-scratch, vit_tiny)",
              "scratch_hcml": "random (--from-scratch, tiny + HCML's motion modules)"}
    for m, rs in results.items():
        top1 = [r["top1"] for r in rs]
        base = None if m in labels else bases.get(scratch_row(variants(args).get(m, (m,))[0]))
        gain = f"{(statistics.mean(top1) - base) * 100:+.1f}" if base is not None else ""
        print(f"| {labels.get(m, m)} | {cell(top1)} | {gain} | "
              f"{', '.join(f'{v * 100:.1f}' for v in top1)} | {cell([r['top5'] for r in rs])} | "
              f"{cell([r['mean_class_accuracy'] for r in rs])} | {statistics.mean(r['train_s'] for r in rs):.0f} |")


def cell(values) -> str:
    mean = statistics.mean(values) * 100
    return f"{mean:.1f} +- {statistics.stdev(values) * 100:.1f}" if len(values) > 1 else f"{mean:.1f}"


def table(name: str, results: dict, args) -> None:
    first = next(rs for m, rs in results.items() if m != "supervised")[0]
    print(f"\n{name}: {args.videos} videos, {SETS[name][1]}, {first['classes']} classes, {first['train_videos']} "
          f"train / {first['test_videos']} test; the tiny recipes' backbones (tiny 3D CNN; vit_tiny for videomae and "
          f"mgm), {args.steps} steps x batch {args.batch_size}; "
          f"augment {args.augment}; seeds {args.seeds}\n")
    print("| method | motion input | linear top-1 (%) | vs rgb | per seed | kNN top-1 (%) | recall@5 (%) | "
          "train s/run |")
    print("|---|---|---|---|---|---|---|---|")
    base = statistics.mean(r["linear_top1"] for r in results["rgb"]) if "rgb" in results else None
    for m, rs in results.items():
        if m == "supervised":
            continue
        top1 = [r["linear_top1"] for r in rs]
        gain = f"{(statistics.mean(top1) - base) * 100:+.1f}" if base is not None else ""
        per_seed = ", ".join(f"{v * 100:.1f}" for v in top1)
        motion = MOTION_INPUT.get(variants(args).get(m, (m,))[0], ("?", ""))[0]
        print(f"| {m} | {motion} | {cell(top1)} | {gain} | {per_seed} | "
              f"{cell([r['knn_top1'] for r in rs])} | {cell([r['recall@5'] for r in rs])} | "
              f"{statistics.mean(r['train_s'] for r in rs):.0f} |")
    if "supervised" in results:
        top1 = [r["top1"] for r in results["supervised"]]
        print(f"| *supervised reference* | labels, RGB | {cell(top1)} (own classifier) | | "
              f"{', '.join(f'{v * 100:.1f}' for v in top1)} | | | "
              f"{statistics.mean(r['train_s'] for r in results['supervised']):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="camera,objects", help=f"from {', '.join(SETS)}")
    parser.add_argument("--methods", default=",".join(m for m in REGISTRY if recipe(m).exists()))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--augment", default='{"flip": false, "jitter": 0.1, "grayscale": 0.0}',
                        help="ClipSpec overrides (JSON) for every method alike")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--videos", type=int, default=128, help="8 motion classes, videos / 8 each")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cost-videos", type=int, default=16, help="videos timed for the preprocessing table "
                                                                     "(0: no table)")
    parser.add_argument("--keep", metavar="DIR", help="keep the videos and stores here (reused when they exist)")
    parser.add_argument("--json", metavar="FILE", help="record every run here; runs recorded with the same "
                                                       "settings are reused")
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised reference row")
    parser.add_argument("--finetune-steps", type=int, default=0, help="fine-tune every checkpoint and random "
                                                                      "weights this many steps (0: no)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:METHOD:JSON",
                        help="also train METHOD with these method_args as row NAME (repeatable)")
    args = parser.parse_args()
    sets, methods = args.sets.split(","), args.methods.split(",") + list(variants(args))
    seeds = [int(s) for s in args.seeds.split(",")]
    record = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    if record.get("settings", settings(args)) != settings(args):
        record = {}  # other settings: nothing to reuse
    record.update(settings=settings(args))
    runs = record.setdefault("runs", {})
    costs, tuned = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        results = {}
        for name in sets:
            store = build_store(name, work / f"{name}_videos", work / f"{name}.zarr", args.videos, args.frames)
            if name == "camera" and args.cost_videos:
                costs = preprocessing_costs(work / f"{name}_videos", Path(tmp), args.cost_videos)
            results[name] = {}
            for seed in seeds if not args.no_supervised else []:
                key = f"{name}/supervised/{seed}"
                if key not in runs:
                    runs[key] = supervised(seed, store, args)
                    if args.json:
                        Path(args.json).write_text(json.dumps(record, indent=1))
                results[name].setdefault("supervised", []).append(runs[key])
            for m in methods:
                for seed in seeds:
                    key = f"{name}/{m}/{seed}"
                    if m in variants(args):
                        key += "/" + json.dumps(variants(args)[m], sort_keys=True)
                    if key not in runs:
                        runs[key] = run(m, seed, store, work, args)
                        if args.json:
                            Path(args.json).write_text(json.dumps(record, indent=1))
                    results[name].setdefault(m, []).append(runs[key])
            tuned[name] = {}
            baselines = [s for s in SCRATCH if s in {scratch_row(variants(args).get(m, (m,))[0]) for m in methods}]
            for m in (baselines + methods) if args.finetune_steps else []:
                like = SCRATCH.get(m, variants(args).get(m, (m,))[0])  # a method of the network fine-tuned
                for seed in seeds:
                    key = f"{name}/{m}/{seed}/finetune/{args.finetune_steps}"
                    if key not in runs:
                        checkpoint = None if m in SCRATCH else work / "runs" / f"{store.stem}_{m}_{seed}" / \
                            "checkpoint.pt"
                        runs[key] = finetuned(checkpoint, seed, store, work / "runs" / f"ft_{name}_{m}_{seed}", args,
                                              network_of(like))
                        if args.json:
                            Path(args.json).write_text(json.dumps(record, indent=1))
                    tuned[name].setdefault(m, []).append(runs[key])
    for name in sets:
        table(name, results[name], args)
        if tuned.get(name):
            finetune_table(name, tuned[name], args)
    if costs:
        print(f"\nPreparing the motion input: extraction of {args.cost_videos} camera-set videos in one process "
              f"(one core), same run\n")
        print("| extraction | ms per frame | added by the step |")
        print("|---|---|---|")
        for i, (label, ms) in enumerate(costs):
            added = "" if i == 0 else f"{ms - costs[2 if i > 2 else i - 1][1]:+.2f}"
            print(f"| {label} | {ms:.2f} | {added} |")
        print("| RAFT flow | needs a GPU | |")


if __name__ == "__main__":
    main()
