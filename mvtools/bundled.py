"""Files shipped inside mvtools, found by name: the YAML recipes of ``pipelines/`` and the notebooks of ``examples/``.

Both folders are package data (``mvtools.pipelines``, ``mvtools.examples``: setuptools maps the packages onto the
repository's folders), so a checkout, an editable install and a wheel resolve the same names to the same files.

A ``--config`` value resolves, in order, to:

1. an existing file (any YAML of the user's);
2. a bundled recipe of the command's kind by name: ``rgb_tiny`` -> ``train/rgb_tiny.yaml`` for ``train``,
   ``ucf101_tiny`` -> ``finetune/ucf101_tiny.yaml`` for ``finetune``, ``mv_only`` -> ``mv_only.yaml`` for
   ``extract``;
3. a bundled recipe by its path under ``pipelines/``, with or without that prefix and ``.yaml``:
   ``finetune/ucf101_tiny``, ``pipelines/train/rgb.yaml`` (the README's form, so its lines work in any folder).

Anything else is a usage error naming the closest recipes.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .errors import MvtoolsError

#: command -> its recipes' folder under pipelines/ ("" = the top level: extraction recipes)
KINDS = {"extract": "", "train": "train", "finetune": "finetune"}
SUFFIXES = (".yaml", ".yml")
PREFIX = "pipelines/"


@dataclass(frozen=True)
class Recipe:
    name: str  # path under pipelines/ without .yaml: "mv_only", "train/rgb_tiny", "finetune/ucf101_tiny"
    kind: str  # the command that reads it: extract, train or finetune
    path: Path

    @property
    def short(self) -> str:
        """The name within its kind: ``rgb_tiny`` for ``train/rgb_tiny``."""
        return self.name.rpartition("/")[2]

    def summary(self) -> str:
        """What it is: the first phrase of its header's description (the comment lines after the command lines),
        or its first command line where it has no description."""
        text, first = [], ""
        for line in self.path.read_text().splitlines():
            if not line.startswith("#"):
                break
            line = line.lstrip("#").strip()
            if not text and (not line or line.startswith(("mvtools ", "torchrun "))):
                first = first or line
                continue
            if not line and text:
                break
            text.append(line)
        return first_phrase(" ".join(text)) if text else first


def first_phrase(text: str, limit: int = 100) -> str:
    """``text`` up to its first ':', ';' or '. ' outside parentheses; past ``limit`` characters, without its
    parenthesis, then cut."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and (ch in ":;" or text.startswith(". ", i)):
            text = text[:i]
            break
    text = text.rstrip(". ")
    if len(text) > limit and "(" in text:
        text = text[: text.index("(")].rstrip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def package_folder(package: str) -> Path:
    return Path(str(files(package)))


def recipes() -> list[Recipe]:
    """Every bundled recipe, sorted by kind (extract, train, finetune) then name."""
    root = package_folder("mvtools.pipelines")
    out = []
    for kind, folder in KINDS.items():
        for path in sorted((root / folder).glob("*.yaml")):
            out.append(Recipe(f"{folder}/{path.stem}" if folder else path.stem, kind, path))
    return out


def _bare(value: str) -> str:
    """``pipelines/train/rgb.yaml`` -> ``train/rgb``."""
    name = value.replace("\\", "/").removeprefix("./").removeprefix(PREFIX)
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def find_recipe(value: str, kind: str | None = None) -> Recipe:
    """The bundled recipe ``value`` names: within ``kind`` by its short name, else by its path under pipelines/;
    with no kind, a short name that only one recipe has. ``MvtoolsError`` listing the closest names otherwise."""
    every = recipes()
    name = _bare(value)
    found = [r for r in every if r.kind == kind and r.short == name] if kind else []
    found = found or [r for r in every if r.name == name]
    if not found and kind is None:
        found = [r for r in every if r.short == name]
    if len(found) == 1:
        return found[0]
    if found:
        raise MvtoolsError(f"recipe {value!r} is ambiguous: {', '.join(r.name for r in found)}; give one of these")
    of_kind = [r for r in every if kind is None or r.kind == kind]
    shown = {r.short: r.short for r in of_kind} if kind else {r.short: r.name for r in every}
    shown.update({r.name: r.short if r.kind == kind else r.name for r in every})  # candidate -> as shown
    close = list(dict.fromkeys(shown[c] for c in difflib.get_close_matches(name, list(shown), n=8, cutoff=0.5)))[:5]
    what = f"bundled {kind} recipe" if kind else "bundled recipe"
    hint = f"close: {', '.join(close)}" if close else f"the {kind or 'bundled'} recipes: " + ", ".join(
        sorted(r.short if kind else r.name for r in of_kind))
    raise MvtoolsError(f"{value}: no such file, and no {what} of that name ({hint}; `mvtools recipes` lists them)")


def resolve_config(value: str, kind: str) -> Path:
    """The file a ``--config`` value of command ``kind`` means (see the module docstring for the order)."""
    if kind not in KINDS:
        raise ValueError(f"unknown recipe kind {kind!r}; choose from {', '.join(KINDS)}")
    path = Path(value).expanduser()
    if path.is_file():
        return path
    return find_recipe(value, kind).path


# ----------------------------------------------------------------------------------------------------------------
# examples


@dataclass(frozen=True)
class Example:
    name: str  # file name: explore_store.ipynb
    path: Path

    def summary(self) -> str:
        """A notebook's title (its first markdown heading)."""
        import json

        for cell in json.loads(self.path.read_text()).get("cells", []):
            if cell.get("cell_type") == "markdown":
                text = "".join(cell.get("source", []))
                return text.splitlines()[0].lstrip("#").strip() if text else ""
        return ""


def examples() -> list[Example]:
    return [Example(p.name, p) for p in sorted(package_folder("mvtools.examples").glob("*.ipynb"))]


def copy_examples(destination: str | Path) -> list[Path]:
    """Copy every example into ``destination`` (created if needed); an existing file of the same name is a usage
    error, checked before anything is copied."""
    folder = Path(destination)
    if folder.exists() and not folder.is_dir():
        raise MvtoolsError(f"{folder}: not a folder")
    targets = [(e.path, folder / e.name) for e in examples()]
    taken = [str(t) for _, t in targets if t.exists()]
    if taken:
        raise MvtoolsError(f"{', '.join(taken)}: already exists; remove it or copy into another folder")
    folder.mkdir(parents=True, exist_ok=True)
    for source, target in targets:
        shutil.copyfile(source, target)
    return [t for _, t in targets]
