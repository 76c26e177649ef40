"""Recipes and examples shipped inside the package, found by name from any folder (mvtools/bundled.py)."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mvtools.bundled import copy_examples, examples, find_recipe, first_phrase, recipes, resolve_config
from mvtools.errors import MvtoolsError

ROOT = Path(__file__).resolve().parents[1]
MVTOOLS = str(Path(sys.executable).with_name("mvtools"))


def run(*args, cwd):
    return subprocess.run([MVTOOLS, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_every_yaml_under_pipelines_is_a_recipe_of_its_folder_s_kind():
    on_disk = sorted(p.relative_to(ROOT / "pipelines") for p in (ROOT / "pipelines").rglob("*.yaml"))
    found = recipes()
    assert sorted(Path(r.name + ".yaml") for r in found) == on_disk
    for r in found:
        assert r.path.resolve() == (ROOT / "pipelines" / f"{r.name}.yaml").resolve()  # the checkout's own file
        assert r.kind == {"train": "train", "finetune": "finetune"}.get(r.name.partition("/")[0], "extract")
        assert r.summary()  # its header's description, else its command line


def test_a_config_value_is_a_file_then_a_name_of_the_command_s_kind_then_a_path_under_pipelines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: no pipelines/ here
    train = ROOT / "pipelines" / "train"
    for value in ("rgb_tiny", "train/rgb_tiny", "pipelines/train/rgb_tiny.yaml", "train/rgb_tiny.yaml"):
        assert resolve_config(value, "train").resolve() == (train / "rgb_tiny.yaml").resolve(), value
    finetune = ROOT / "pipelines" / "finetune"
    assert resolve_config("ucf101", "finetune").resolve() == (finetune / "ucf101.yaml").resolve()
    assert resolve_config("ucf101", "extract").resolve() == (ROOT / "pipelines" / "ucf101.yaml").resolve()
    assert resolve_config("finetune/ucf101_tiny", "train").resolve() == (finetune / "ucf101_tiny.yaml").resolve()
    (tmp_path / "rgb_tiny").write_text("steps: 3\n")  # an existing file wins over a bundled name
    assert resolve_config("rgb_tiny", "train") == Path("rgb_tiny")
    with pytest.raises(MvtoolsError, match=r"rgb_tiyn: no such file, and no bundled train recipe .*close: rgb_tiny"):
        resolve_config("rgb_tiyn", "train")
    with pytest.raises(MvtoolsError, match="close: .*finetune/ucf101_tiny"):  # the other kind's name is suggested
        resolve_config("ucf101_tiny", "train")


def test_show_resolves_qualified_and_unique_short_names():
    assert find_recipe("ucf101").name == "ucf101"  # the extraction recipe; the other is finetune/ucf101
    assert find_recipe("finetune/ucf101").name == "finetune/ucf101"
    assert find_recipe("maclr_tiny").name == "train/maclr_tiny"
    assert first_phrase("MCL at paper scale (Li et al. 2021): tubelets; more") == "MCL at paper scale (Li et al. 2021)"
    assert first_phrase("One. Two") == "One" and len(first_phrase("x" * 300)) == 100


def test_recipes_lists_each_with_a_line_and_shows_one_to_copy(tmp_path):
    listing = run("recipes", cwd=tmp_path)
    assert listing.returncode == 0
    lines = [line for line in listing.stdout.splitlines() if line.startswith(tuple(r.name for r in recipes()))]
    assert len(lines) == len(recipes()) and any(line.split()[:2] == ["train/rgb_tiny", "train"] for line in lines)
    as_json = json.loads(run("recipes", "--json", cwd=tmp_path).stdout)
    assert [r["name"] for r in as_json] == [r.name for r in recipes()]
    shown = run("recipes", "show", "rgb_tiny", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout == (ROOT / "pipelines" / "train" / "rgb_tiny.yaml").read_text()
    bad = run("recipes", "show", "rgb_tiyn", cwd=tmp_path)
    assert bad.returncode == 2 and "train/rgb_tiny" in bad.stderr and bad.stderr.count("\n") == 1


def test_extract_takes_a_recipe_name_from_an_empty_folder(tmp_path):
    videos = tmp_path / "v"
    assert run("synth", videos, "--videos", 1, "--frames", 8, cwd=tmp_path).returncode == 0
    work = tmp_path / "empty"
    work.mkdir()
    for value in ("mv_only", "pipelines/mv_only.yaml"):
        out = run("extract", videos, "-o", "s.zarr", "--config", value, "--dry-run", cwd=work)
        assert out.returncode == 0 and "1 to extract" in out.stdout, out.stderr
    out = run("extract", videos, "-o", "s.zarr", "--config", "mv_onyl", cwd=work)
    assert out.returncode == 2 and "close: mv_only" in out.stderr and out.stderr.count("\n") == 1
    assert list(work.iterdir()) == []


def test_examples_are_listed_and_copied_without_overwriting(tmp_path):
    notebook = ROOT / "examples" / "explore_store.ipynb"
    assert [e.path.resolve() for e in examples()] == [notebook.resolve()]
    assert "explore_store.ipynb" in run("examples", cwd=tmp_path).stdout
    assert run("examples", "copy", "nb", cwd=tmp_path).returncode == 0
    assert (tmp_path / "nb" / "explore_store.ipynb").read_bytes() == notebook.read_bytes()
    (tmp_path / "nb" / "explore_store.ipynb").write_text("mine")
    again = run("examples", "copy", "nb", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "nb" / "explore_store.ipynb").read_text() == "mine"
    with pytest.raises(MvtoolsError, match="not a folder"):
        copy_examples(tmp_path / "nb" / "explore_store.ipynb")


def test_the_wheel_configuration_ships_every_package_and_recipe():
    """What pyproject.toml tells setuptools: every Python package of the checkout, and globs that match every
    recipe and notebook (the CI wheel smoke test installs the wheel and resolves them)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for top in ("mvtools", "trainer")
               for p in (ROOT / top).rglob("__init__.py")}
    assert on_disk <= listed, on_disk - listed
    assert config["package-dir"] == {"mvtools.pipelines": "pipelines", "mvtools.examples": "examples"}
    for package, folder in config["package-dir"].items():
        matched = {p for pattern in config["package-data"][package] for p in (ROOT / folder).glob(pattern)}
        data = {p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".yaml", ".ipynb")}
        assert data and data <= matched, data - matched
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
