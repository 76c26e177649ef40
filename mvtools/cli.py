"""The ``mvtools`` command line: extract, info, show, migrate, synth, and the commands other packages register.

Commands beyond mvtools' own (``train``, ``eval``, ... from ``trainer``) come from the ``mvtools.commands``
entry point group: each entry point is a function ``register(subparsers) -> {command: handler}``. mvtools
never imports them by name, and their modules must import nothing heavy (torch) at parser-building time.
"""

from __future__ import annotations

import argparse
import sys

from .errors import MvtoolsError
from .strict_json import dumps

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2, 3
EXIT_CODES = """exit codes:
  0  every video was extracted (or was already complete)
  1  the job itself failed (store unwritable, interrupted, internal error)
  2  usage error (bad arguments, missing folder, store with other settings)
  3  some videos failed (each is reported with its reason; the others are written)"""


VERIFY_EXIT_CODES = """exit codes:
  0  every complete video is intact
  2  usage error (not a store, unreachable, bad arguments)
  3  damaged videos (each listed with the array, frames and reason); with --repair they are marked incomplete"""


def _modalities(text: str) -> tuple[str, ...]:
    from .config import MODALITIES

    mods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise argparse.ArgumentTypeError(f"unknown modality {bad}; choose from {','.join(MODALITIES)}")
    return mods


def _frames(text: str) -> slice:
    from .show import parse_frames

    try:
        return parse_frames(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _show_modalities(text: str) -> tuple[str, ...]:
    from .show import MODALITIES

    mods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise argparse.ArgumentTypeError(f"unknown modality {bad}; choose from {','.join(MODALITIES)}")
    return mods


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (repeatable): options of an object-store URL (see README, Storage)."""
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an object-store option, repeatable: endpoint=http://host:9000 (S3-compatible "
                             "servers), region=..., allow_http=true, ...; credentials come from the usual "
                             "environment variables and config files")


def storage_options(args) -> dict:
    from .storage import parse_storage_options

    try:
        return parse_storage_options(getattr(args, "storage_option", []) or [])
    except ValueError as e:
        raise MvtoolsError(str(e)) from None


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser, and the handlers of the commands registered through entry points."""
    from .config import DEFAULT_MODALITIES, MODALITIES

    parser = argparse.ArgumentParser(
        prog="mvtools",
        description="Compressed-domain motion (motion vectors, residuals, keyframes) from videos into zarr, "
                    "and self-supervised pretraining on it.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback as well as the one-line reason")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ex = sub.add_parser(
        "extract", help="extract a folder of videos into a store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decode every video under SRC_DIR (recursively) and write its frames, motion vectors,\n"
                    "residuals and keyframes into one zarr store. Labels default to the parent folder name.\n"
                    "Rerunning skips videos already complete with the same content; a video that fails is\n"
                    "reported with its reason, recorded in the store's `failures`, and the job goes on.",
        epilog=EXIT_CODES,
    )
    ex.add_argument("src_dir", metavar="SRC_DIR", help="folder of videos (mp4, avi, mkv, mov, webm, ...)")
    ex.add_argument("-o", "--output", required=True, metavar="STORE",
                    help="the store: a folder (x.zarr) or an object-store URL (s3://bucket/x.zarr, gs://..., az://...)")
    add_storage_option(ex)
    ex.add_argument("--config", metavar="NAME|YAML",
                    help="a bundled recipe by name (extract, mv_only, ucf101, ...: `mvtools recipes` lists them) "
                         "or a YAML file of yours; flags given here override it")
    ex.add_argument("--size", type=int, help="short side of stored frames, pixels (default 128)")
    ex.add_argument("--modalities", type=_modalities,
                    help=f"comma-separated, from {','.join(MODALITIES)} "
                         f"(default {','.join(DEFAULT_MODALITIES)}); 'accumulated' adds CoViAR-style mv_acc "
                         "and residual_acc")
    ex.add_argument("--labels", choices=("folder", "none"),
                    help="label each video by its parent folder name (default) or not at all")
    ex.add_argument("--frame-quality", type=int, help="JPEG quality of frames (default 90)")
    ex.add_argument("--residual-quality", type=int, help="JPEG quality of residuals (default 95)")
    ex.add_argument("--lossless", action="store_true", default=None,
                    help="store frames (zstd) and residuals (int16, zstd) losslessly: ~3x more bytes")
    ex.add_argument("--flow", choices=("none", "dis", "farneback", "raft"),
                    help="add a dense optical flow array `flow` (frame t -> t+1, px, stored resolution); "
                         "default none. Cost on one CPU core at 320x240: dis ultrafast ~1,150 pairs/s, fast ~550, "
                         "medium ~130; farneback ~70 (both in the decoding task). raft: torchvision's RAFT on "
                         "GPU actors (needs the `flow` extra and a CUDA GPU; ~3 pairs/s if it ran on a CPU)")
    ex.add_argument("--flow-preset", choices=("ultrafast", "fast", "medium"),
                    help="DIS preset (default medium)")
    ex.add_argument("--raft-model", choices=("raft_small", "raft_large"), help="RAFT variant (default raft_small)")
    ex.add_argument("--raft-weights", metavar="NAME|PATH",
                    help="torchvision weights name (DEFAULT, C_T_V2, ...; default DEFAULT) or a local checkpoint "
                         "(a state dict); on a cluster, a path every node sees")
    ex.add_argument("--reencode", choices=("none", "h264", "mpeg4"),
                    help="re-encode every video first (default none), as MCD and CoViAR preprocessed: with --gop 12 "
                         "--bframes 0 every clip has a nearby I-frame and every P-frame's vectors point to the "
                         "previous frame; recorded in the store's settings")
    ex.add_argument("--gop", type=int, help="with --reencode: an I-frame every N frames (default: the encoder's)")
    ex.add_argument("--bframes", type=int,
                    help="with --reencode: at most N consecutive B-frames (0: none; default: the encoder's)")
    ex.add_argument("--workers", type=int, default=None,
                    help="CPUs of the local Ray (default: all cores); 0 runs in this process without Ray")
    ex.add_argument("--address", metavar="ADDR",
                    help="run on an existing Ray cluster ('auto' or ray://host:port); SRC_DIR and STORE must be "
                         "paths every node sees")
    ex.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="only relative paths matching this glob (repeatable), e.g. 'Basketball*/*'")
    ex.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip matching paths (repeatable)")
    ex.add_argument("--transcode", choices=("auto", "never"), default="auto",
                    help="HEVC, VP9, AV1...: FFmpeg exports no vectors for them; 'auto' (default) re-encodes them to "
                         "H.264 on the fly and records transcoded=true, 'never' makes them failures")
    ex.add_argument("--recipe", choices=("ucf101", "hmdb51", "kinetics400", "ssv2", "diving48"),
                    help="labels and splits from the dataset's annotation files (only the videos they list)")
    ex.add_argument("--split", type=int, help="the recipe's split (UCF101, HMDB51: 1-3; default 1)")
    ex.add_argument("--annotations", metavar="DIR",
                    help="folder holding the recipe's annotation files (default: SRC_DIR), searched recursively")
    ex.add_argument("--verify", action="store_true",
                    help="re-hash every source (sha256) instead of trusting an unchanged size and mtime "
                         "(the default quick check skips complete videos without opening them)")
    ex.add_argument("--dry-run", action="store_true", help="list what would be done, write nothing")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")

    info = sub.add_parser(
        "info", help="summarise a store: videos, frames, bytes, settings; list its videos or failures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The store's summary from its index (one read per column): complete, failed and pending\n"
                    "videos, frames, files, bytes per array, labels, settings. --videos lists every complete\n"
                    "video (key, label, split, frames); --failures every source that failed, with its reason.",
        epilog="examples:\n  mvtools info ucf101.zarr\n  mvtools info ucf101.zarr --videos | grep Basketball\n"
               "  mvtools info ucf101.zarr --failures --json\n\nexit codes:\n  0  done\n  2  no store there, "
               "or a store this mvtools cannot read")
    info.add_argument("store", metavar="STORE", help="a store folder or URL")
    add_storage_option(info)
    info.add_argument("--json", action="store_true",
                      help="print one JSON object: the summary (failures under 'failed'), with --videos its "
                           "'video_list' too")
    info.add_argument("--videos", action="store_true",
                      help="list every complete video: key, label, split, frames (instead of the summary)")
    info.add_argument("--failures", action="store_true",
                      help="list every failed source with its reason (instead of the summary)")
    info.add_argument("--rebuild-index", action="store_true",
                      help="rebuild the store's video index from its video groups (one read per video) and "
                           "write it; needed only after an interrupted run, which the next extract also mends")

    ver = sub.add_parser(
        "verify", help="read every chunk of every complete video and check it against what was committed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check every complete video of STORE: its arrays and their shapes, that every shard object\n"
                    "exists, that each array takes the bytes recorded at commit, and that every chunk decodes\n"
                    "(with its CRC-32C, in stores written since chunks carry one). Runs on Ray like extract\n"
                    "(--workers, --address; --workers 0 in this process). Prints the damaged videos;\n"
                    "--repair marks them incomplete, so that rerunning the extract command redoes them.",
        epilog=VERIFY_EXIT_CODES)
    ver.add_argument("store", metavar="STORE", help="a store folder or URL")
    add_storage_option(ver)
    ver.add_argument("--repair", action="store_true",
                     help="mark the damaged videos incomplete (the next extract of the same sources redoes them)")
    ver.add_argument("--json", action="store_true", help="print one JSON object")
    ver.add_argument("--workers", type=int, help="CPUs for the local Ray (default: all cores); 0: no Ray")
    ver.add_argument("--address", help="a Ray cluster to run on, as for extract (the store must be reachable there)")
    ver.add_argument("--quiet", action="store_true", help="no progress bar")

    show = sub.add_parser(
        "show", help="draw what a store (or a video) holds: frames with MV arrows, fields, residuals",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One row of panels per frame: the frame with motion-vector arrows, the dense field as\n"
                    "colours (hue = direction: red right, yellow-green down, cyan left, violet up; brightness =\n"
                    "magnitude; the wheel is the legend), optical flow the same way when the store has it,\n"
                    "residual and frame difference (blue < 0 < red). Titles give the frame index and type.\n"
                    "SOURCE is a store (then KEY names the video) or a video file (computed on the fly).",
        epilog="examples:\n  mvtools show ucf101.zarr ApplyEyeMakeup__v_ApplyEyeMakeup_g01_c01 --frames 0:6\n"
               "  mvtools show clip.mp4 -o clip.gif --modalities frames,mv\n"
               "  mvtools show ucf101.zarr KEY --mask mgm --frames 0:32:2 -o mgm.gif --modalities frames,mv\n\n"
               "exit codes:\n  0  written\n  2  usage error (no such key or file, a modality the source lacks, "
               "--mask mgm/warped without mv, a ratio outside (0, 1))",
    )
    show.add_argument("source", metavar="SOURCE", help="a store (STORE.zarr or an object-store URL) or a video file")
    add_storage_option(show)
    show.add_argument("key", metavar="KEY", nargs="?",
                      help="the video's key: its group videos/KEY in the store (`mvtools show STORE` lists some)")
    show.add_argument("-o", "--output", metavar="OUT",
                      help="out.png (a grid: rows = frames), out.mp4 or out.gif (one row per frame); "
                           "default <KEY>.png in the working directory")
    show.add_argument("--frames", type=_frames, metavar="A:B",
                      help="frames as a python slice (a:b, a:b:step; --frames=-8: for the last 8); default 0:8 "
                           "for .png, every frame for .mp4/.gif; at most 32 rows in a .png and 300 frames in a movie")
    show.add_argument("--modalities", type=_show_modalities, metavar="LIST",
                      help="comma-separated panels, in order, from frames,mv,flow,residual,framediff "
                           "(default: every one the source has)")
    show.add_argument("--panel-height", type=int, default=192, metavar="PX",
                      help="height of each panel's image, pixels (default 192; rounded to even)")
    show.add_argument("--size", type=int, default=128,
                      help="short side, pixels, of what is computed from a VIDEO_FILE (default 128, as extract)")
    show.add_argument("--mask", choices=("tube", "mgm", "warped"),
                      help="draw the tokens a masked-video model hides over the frames (grey blocks): tube "
                           "(VideoMAE), mgm (MGM: where the stored vectors hold the most motion), warped (MGMAE: "
                           "carried along the vectors); the shown frames are the clip")
    show.add_argument("--mask-ratio", type=float, metavar="R",
                      help="share of tokens hidden, in (0, 1) (default: the paper's, 0.9 tube / 0.75 mgm / 0.9 warped)")
    show.add_argument("--patch", type=int, default=16, metavar="PX", help="token size in pixels (default 16)")
    show.add_argument("--tubelet", type=int, default=2, metavar="N", help="shown frames per token (default 2)")
    show.add_argument("--seed", type=int, default=0, help="seed of the mask's random choices (default 0)")

    mig = sub.add_parser(
        "migrate", help="rewrite a schema-1 store (mvtools 0.1) as schema 2",
        description="Copy every complete video of OLD into a new schema-2 store NEW: vectors, masks, frame types and\n"
                    "timestamps exactly; frames, residuals and keyframes decoded and JPEG-coded again (a second\n"
                    "lossy pass: re-extracting from the sources avoids it). OLD is left as it is.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mig.add_argument("old", metavar="OLD")
    mig.add_argument("new", metavar="NEW")
    add_storage_option(mig)
    mig.add_argument("--quiet", action="store_true", help="no progress bar")

    synth = sub.add_parser(
        "synth", help="write a small labelled H.264 dataset whose classes differ only by motion",
        description="Random textures moved by a class-specific camera motion (left/right/up/down, "
                    "rotation, zoom), encoded with libx264 and B-frames, as OUT_DIR/<class>/<class>_NNNN.mp4.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR")
    synth.add_argument("--videos", type=int, default=16, help="number of videos (default 16)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--frames", type=int, default=48, help="frames per video (default 48)")
    synth.add_argument("--width", type=int, default=192)
    synth.add_argument("--height", type=int, default=128)

    rec = sub.add_parser(
        "recipes", help="list the bundled recipes (--config NAME), or print one to copy and edit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The YAML recipes shipped with mvtools, one line each: name, the command that reads it, what it\n"
                    "is. `--config NAME` takes them by name (rgb_tiny for train, ucf101_tiny for finetune, mv_only\n"
                    "for extract), by their path here (finetune/ucf101_tiny, pipelines/train/rgb.yaml) or any file.",
        epilog="examples:\n  mvtools recipes\n  mvtools recipes show rgb_tiny > my_rgb.yaml   "
               "# then: mvtools train --config my_rgb.yaml ...")
    rec.add_argument("action", nargs="?", choices=("list", "show"), default="list",
                     help="list (default) or show NAME")
    rec.add_argument("name", nargs="?", metavar="NAME", help="with show: the recipe to print")
    rec.add_argument("--json", action="store_true", help="list: one JSON object per recipe, in a list")

    exa = sub.add_parser(
        "examples", help="list the bundled example notebooks, or copy them into a folder",
        description="Notebooks shipped with mvtools. `mvtools examples copy DIR` writes them into DIR (default .);\n"
                    "an existing file of the same name is left alone (exit 2).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    exa.add_argument("action", nargs="?", choices=("list", "copy"), default="list", help="list (default) or copy")
    exa.add_argument("folder", nargs="?", default=".", metavar="DIR", help="with copy: where to (default .)")

    return parser, _register_plugins(sub)


def _register_plugins(sub) -> dict:
    from importlib.metadata import entry_points

    handlers = {}
    for entry in sorted(entry_points(group="mvtools.commands"), key=lambda e: e.name):
        handlers.update(entry.load()(sub))
    return handlers


def _extract(args) -> int:
    from .config import ExtractConfig
    from .extract import extract

    flags = {
        "size": args.size, "modalities": args.modalities, "labels": args.labels,
        "frame_quality": args.frame_quality, "residual_quality": args.residual_quality, "lossless": args.lossless,
        "flow": args.flow, "flow_preset": args.flow_preset, "raft_model": args.raft_model,
        "raft_weights": args.raft_weights, "reencode": args.reencode, "gop": args.gop, "bframes": args.bframes,
    }
    if args.config:
        from .bundled import resolve_config

        args.config = str(resolve_config(args.config, "extract"))
    try:
        if args.config:
            config = ExtractConfig.from_yaml(args.config, **flags)
        else:
            config = ExtractConfig(**{k: v for k, v in flags.items() if v is not None})
    except (ValueError, OSError) as e:
        print(f"mvtools extract: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if config.flow == "raft" and not args.address:  # fail now, not after decoding half the dataset
        from .flow import check_raft_available

        check_raft_available()
    if args.workers is not None and args.workers < 0:
        print("mvtools extract: error: --workers must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    selection = {"include": args.include, "exclude": args.exclude}
    try:
        selection["annotations"] = _annotations(args)
    except (ValueError, OSError) as e:
        print(f"mvtools extract: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        return _dry_run(args, config, selection)
    common = {**selection, "transcode": args.transcode, "progress": not args.quiet, "verify": args.verify,
              "storage_options": storage_options(args)}
    if args.workers == 0 and not args.address:
        report = extract(args.src_dir, args.output, config, **common)
    else:
        from .pipeline import extract_parallel

        report = extract_parallel(args.src_dir, args.output, config, workers=args.workers, address=args.address,
                                  **common)
    _summary(report, args.output)
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def _annotations(args):
    from .config import read_yaml
    from .recipes import annotations

    recipe, split = args.recipe, args.split
    if args.config:
        data = read_yaml(args.config)
        recipe, split = recipe or data.get("recipe"), split or data.get("split")
    if recipe is None:
        if split is not None:
            raise ValueError("--split needs --recipe")
        return None
    return annotations(recipe, args.annotations or args.src_dir, split or 1)


def _dry_run(args, config, selection) -> int:
    from .errors import StoreError
    from .extract import plan
    from .store import open_store

    try:
        store = open_store(args.output, storage_options=storage_options(args))
    except StoreError as e:
        if "no store here" not in e.reason:
            raise
        store = None
    if store is not None and store.settings != config.settings():
        raise StoreError(args.output, f"exists with other settings {store.settings}; use another -o path")
    work = plan(args.src_dir, store, config, **selection)
    check = [j for j in work.jobs if j.expect_sha256]
    new = [j for j in work.jobs if not j.expect_sha256]
    selected = len(work.jobs) + len(work.unchanged)  # jobs: new and to re-check; unchanged: skipped unopened
    print(f"dry run: {selected} videos under {args.src_dir} -> {args.output} (nothing is written)")
    print(f"  {len(new)} to extract, {len(work.unchanged)} already complete (same size and mtime: skipped), "
          f"{len(check)} to re-check (complete, but size, mtime or label changed: hashed, re-extracted if the "
          f"content changed), {len(work.orphans)} interrupted leftovers to remove")
    for job in new[:20]:
        print(f"  + {job.rel} -> videos/{job.key} (label {job.label})")
    if len(new) > 20:
        print(f"  ... and {len(new) - 20} more")
    return EXIT_OK


def _summary(report, output) -> None:
    rate = report.frames / report.seconds if report.seconds else 0.0
    rows = [
        ("extracted", f"{len(report.extracted)} videos, {report.frames} frames"),
        ("already complete", f"{len(report.skipped)}"),
        ("transcoded to H.264", f"{len(report.transcoded)}"),
        ("failed", f"{len(report.failed)}"),
        ("interrupted leftovers removed", f"{len(report.orphans)}"),
        ("time", f"{report.seconds:.1f} s ({rate:.0f} frames/s)"
                 + (f" + {report.startup_seconds:.1f} s Ray start-up" if report.startup_seconds else "")),
        ("store", str(output)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for rel, reason in report.failed.items():
        print(f"  failed: {rel}: {reason}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


#: failures the plain summary names one by one (``info --failures`` lists them all)
SHOWN_FAILURES = 10


def _info(args) -> int:
    from .store import info

    summary = info(args.store, rebuild_index=args.rebuild_index, storage_options=storage_options(args),
                   videos=args.videos)
    if args.json:
        print(dumps(summary, indent=2))
        return EXIT_OK
    if args.videos or args.failures:
        if args.videos:
            _print_videos(summary["video_list"])
        if args.failures:
            for rel, reason in summary["failed"].items():
                print(f"{rel}: {reason}")
            if not summary["failed"]:
                print(f"no failed sources in {summary['path']}", file=sys.stderr)
        return EXIT_OK
    ratio = summary["bytes"] / summary["source_bytes"] if summary["source_bytes"] else float("nan")
    print(f"store     {summary['path']} (schema {summary['schema']})")
    if summary["index"] == "scanned":
        print("index     stale (an interrupted run): every video group was read; the next extract, or "
              "`mvtools info --rebuild-index`, rewrites it", file=sys.stderr)
    print(f"videos    {summary['videos']} complete, {len(summary['failed'])} failed, "
          f"{len(summary['incomplete'])} pending (interrupted: rerun extract)")
    _print_failures(summary["failed"], SHOWN_FAILURES, args.store)
    print(f"frames    {summary['frames']}")
    print(f"files     {summary['files']} ({summary['files_per_video']:.1f} per video)")
    print(f"bytes     {_human(summary['bytes'])} ({ratio:.2f}x the sources' {_human(summary['source_bytes'])})")
    for name, size in summary["bytes_per_array"].items():
        print(f"  {name:<15} {_human(size):>11}")
    if summary["labels"]:
        print(f"labels    {len(summary['labels'])}: " + ", ".join(f"{k} ({v})" for k, v in summary["labels"].items()))
    print("settings  " + ", ".join(f"{k}={v}" for k, v in summary["settings"].items()))
    return EXIT_OK


def _print_videos(rows: list[dict]) -> None:
    header = ("key", "label", "split", "frames")
    table = [header] + [(r["key"], r["label"] or "-", r["split"] or "-", str(r["frames"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>6}")


def _print_failures(failed: dict, shown: int, store: str = "") -> None:
    """The first ``shown`` failed sources with their reasons, and how many more there are."""
    for rel, reason in list(failed.items())[:shown]:
        print(f"  failed: {rel}: {reason}")
    if len(failed) > shown:
        print(f"  ... and {len(failed) - shown} more (mvtools info {store} --failures lists them all)")
def _verify(args) -> int:
    from .verify import verify

    if args.workers is not None and args.workers < 0:
        print("mvtools verify: error: --workers must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    report = verify(args.store, workers=args.workers, address=args.address, storage_options=storage_options(args),
                    repair=args.repair, progress=not args.quiet and not args.json)
    if args.json:
        print(dumps(report.as_json(), indent=2))
    else:
        for key, problems in report.damaged.items():
            for problem in problems:
                print(f"damaged: {key}: {problem}")
        print(f"{report.videos} complete videos checked in {report.seconds:.1f} s: "
              f"{len(report.damaged)} damaged, {report.videos - len(report.damaged)} intact")
        if report.repaired:
            print(f"marked {len(report.repaired)} incomplete: rerun the extract command to redo them")
        elif report.damaged:
            print(f"mvtools verify {args.store} --repair marks them for re-extraction")
    return EXIT_SOME_FAILED if report.damaged else EXIT_OK


def _show(args) -> int:
    import os

    from . import show
    from .errors import StoreError

    kind = show.output_kind(args.output) if args.output else ".png"
    if args.panel_height < 16 or args.size < 8 or args.size % 2:
        print("mvtools show: error: --panel-height must be >= 16 and --size an even number >= 8", file=sys.stderr)
        return EXIT_USAGE
    bad_mask = _mask_problem(args)
    if bad_mask:
        print(f"mvtools show: error: {bad_mask}", file=sys.stderr)
        return EXIT_USAGE
    also = ("mv",) if args.mask in ("mgm", "warped") else ()
    frames = args.frames or slice(0, show.DEFAULT_FRAMES[kind])
    limit = show.MAX_FRAMES[kind]
    from .storage import is_remote

    options = storage_options(args)
    if is_remote(args.source) or os.path.isdir(args.source):
        if not args.key:
            from .store import open_store

            keys = open_store(args.source, storage_options=options).keys()
            some = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
            raise StoreError(args.source, f"is a store: give the KEY of a video, e.g. {some or '(none complete)'}")
        clip = show.from_store(args.source, args.key, frames, args.modalities, limit, storage_options=options,
                               also=also)
    else:
        if args.key:
            print(f"mvtools show: error: KEY {args.key!r} is for a store; {args.source} is not a store folder",
                  file=sys.stderr)
            return EXIT_USAGE
        clip = show.from_video(args.source, frames, args.modalities, limit, size=args.size, also=also)
    if args.mask:
        if "frames" not in clip.modalities:
            print("mvtools show: error: --mask draws over the frames: include frames in --modalities", file=sys.stderr)
            return EXIT_USAGE
        show.apply_mask(clip, args.mask, args.mask_ratio, args.patch, args.tubelet, args.seed)
    output = args.output or show.default_output(clip.name)
    if clip.truncated:
        print(f"showing the first {len(clip.samples)} frames ({clip.truncated} more asked for: at most {limit} "
              f"in a {kind})", file=sys.stderr)
    width, height = show.write(output, clip, panel_height=args.panel_height + args.panel_height % 2)
    first, last = clip.samples[0]["index"], clip.samples[-1]["index"]
    print(f"wrote {output} ({width}x{height}; frames {first}-{last}; {','.join(clip.modalities)})")
    return EXIT_OK


def _mask_problem(args) -> str:
    """Why the mask options cannot be drawn ("" when they can)."""
    if args.mask_ratio is not None and not 0 < args.mask_ratio < 1:
        return f"--mask-ratio must lie in (0, 1), got {args.mask_ratio}"
    if args.patch < 4 or args.patch % 4 or args.tubelet < 1:
        return "--patch must be a multiple of 4 (the vectors' cells) and --tubelet at least 1"
    return ""


def _migrate(args) -> int:
    from .migrate import migrate

    count = migrate(args.old, args.new, storage_options=storage_options(args), progress=not args.quiet)
    print(f"migrated {count} videos: {args.old} -> {args.new} (schema 2)")
    return EXIT_OK


def _synth(args) -> int:
    from .synth import make_dataset

    paths = make_dataset(args.out_dir, videos=args.videos, seed=args.seed, num_frames=args.frames,
                         width=args.width, height=args.height)
    print(f"wrote {len(paths)} videos to {args.out_dir}")
    return EXIT_OK


def _recipes(args) -> int:
    from .bundled import find_recipe, recipes

    if args.action == "show":
        if not args.name:
            raise MvtoolsError("recipes show needs a NAME (`mvtools recipes` lists them)")
        sys.stdout.write(find_recipe(args.name).path.read_text())
        return EXIT_OK
    if args.name:
        raise MvtoolsError(f"unexpected {args.name!r}: did you mean `mvtools recipes show {args.name}`?")
    found = recipes()
    if args.json:
        print(dumps([{"name": r.name, "kind": r.kind, "summary": r.summary(), "path": str(r.path)} for r in found],
                    indent=1))
        return EXIT_OK
    width = max(len(r.name) for r in found)
    for r in found:
        print(f"{r.name:<{width}}  {r.kind:<8}  {r.summary()}")
    print("\n--config NAME takes a recipe of the command's kind by its last part (rgb_tiny for train, ucf101_tiny for "
          "finetune), by the name above, or any YAML file; `mvtools recipes show NAME` prints one to copy and edit.")
    return EXIT_OK


def _examples(args) -> int:
    from .bundled import copy_examples, examples

    if args.action == "copy":
        for path in copy_examples(args.folder):
            print(f"wrote {path}")
        return EXIT_OK
    for example in examples():
        print(f"{example.name}  {example.summary()}\n  {example.path}")
    print("mvtools examples copy DIR writes them into DIR; open one with jupyter (pip install jupyterlab).")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser, plugins = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: for the commands that print a rerun line
    handler = {"extract": _extract, "info": _info, "show": _show, "migrate": _migrate, "synth": _synth,
               "recipes": _recipes, "examples": _examples, "verify": _verify, **plugins}[args.command]
    try:
        return handler(args)
    except (MvtoolsError, FileNotFoundError) as e:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"mvtools {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"mvtools {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_JOB_FAILED


if __name__ == "__main__":
    sys.exit(main())
