"""Dataset recipes: labels and splits from each dataset's own annotation files.

A parser reads the annotation files found under a folder and returns {video file stem: (label, split)};
``extract --recipe NAME`` matches discovered videos by stem and stores ``label`` and ``split`` per video.
Videos the annotations do not list are left out.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

Annotations = dict[str, tuple[str, str]]


def _find(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.rglob(pattern))
    if not found:
        raise FileNotFoundError(f"{root}: no annotation file matching {pattern!r}")
    return found


def ucf101(root: Path, split: int = 1) -> Annotations:
    """classInd.txt ("1 ApplyEyeMakeup"), trainlist0S.txt ("Class/v_..._g08_c01.avi 1"), testlist0S.txt."""
    _find(root, "classInd.txt")
    out: Annotations = {}
    for name, part in ((f"trainlist0{split}.txt", "train"), (f"testlist0{split}.txt", "test")):
        for line in _find(root, name)[0].read_text().splitlines():
            if line.strip():
                rel = line.split()[0]
                out[Path(rel).stem] = (rel.split("/")[0], part)
    return out


def hmdb51(root: Path, split: int = 1) -> Annotations:
    """<class>_test_split<S>.txt, lines "<video>.avi <id>": 1 train, 2 test, 0 unused."""
    out: Annotations = {}
    for path in _find(root, f"*_test_split{split}.txt"):
        label = path.name[: -len(f"_test_split{split}.txt")]
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("1", "2"):
                out[Path(parts[0]).stem] = (label, "train" if parts[1] == "1" else "test")
    return out


def kinetics400(root: Path, split: int = 1) -> Annotations:
    """train.csv / validate.csv (label, youtube_id, time_start, time_end, split); files are named
    <youtube_id>_<start:06d>_<end:06d>.<ext>."""
    out: Annotations = {}
    for name, part in (("train.csv", "train"), ("validate.csv", "val"), ("val.csv", "val")):
        for path in sorted(root.rglob(name)):
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
                    out[stem] = (row["label"], part)
    if not out:
        raise FileNotFoundError(f"{root}: no train.csv / validate.csv")
    return out


def ssv2(root: Path, split: int = 1) -> Annotations:
    """something-something-v2-{train,validation}.json: [{"id", "template": "Holding [something]..."}];
    the class is the template without brackets, as in the official labels file."""
    out: Annotations = {}
    for name, part in (("*-train.json", "train"), ("*-validation.json", "val")):
        for path in _find(root, name):
            for entry in json.loads(path.read_text()):
                out[str(entry["id"])] = (entry["template"].replace("[", "").replace("]", ""), part)
    return out


def diving48(root: Path, split: int = 1) -> Annotations:
    """Diving48_V2_{train,test}.json (or V1): [{"vid_name", "label": class index, ...}]."""
    out: Annotations = {}
    for name, part in (("Diving48*_train.json", "train"), ("Diving48*_test.json", "test")):
        for path in _find(root, name):
            for entry in json.loads(path.read_text()):
                out[entry["vid_name"]] = (str(entry["label"]), part)
    return out


RECIPES: dict[str, tuple[Callable[[Path, int], Annotations], tuple[int, ...]]] = {
    "ucf101": (ucf101, (1, 2, 3)),
    "hmdb51": (hmdb51, (1, 2, 3)),
    "kinetics400": (kinetics400, (1,)),
    "ssv2": (ssv2, (1,)),
    "diving48": (diving48, (1,)),
}


def annotations(recipe: str, root: str | os.PathLike, split: int = 1) -> Annotations:
    """Parse a recipe's annotation files under root; ValueError for an unknown recipe or split."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    parser, splits = RECIPES[recipe]
    if split not in splits:
        raise ValueError(f"{recipe} has splits {', '.join(map(str, splits))}, not {split}")
    return parser(Path(root), split)
