"""Everything the README tells a user to type parses with the real parser and finds its recipes and notebook
(tests/readme_commands.py; .ci/wheel_smoke.py runs the same check against the installed wheel)."""

import re
from pathlib import Path

from readme_commands import check, commands

ROOT = Path(__file__).resolve().parents[1]


def test_every_readme_command_parses_and_its_recipes_resolve_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pipelines/ here: recipes must come from the package
    checked, failed = check(ROOT / "README.md")
    assert failed == []
    readme = (ROOT / "README.md").read_text()
    lines = [line for block in re.findall(r"```bash\n(.*?)```", readme, re.S) for line in block.splitlines()
             if line.startswith(("mvtools ", "torchrun "))]
    parsed = {c.text for c in commands(readme) if not c.partial or "..." in c.text}
    assert len(parsed) == len(lines)  # every command line of the bash blocks was found and checked
    assert any(c.startswith("--config pipelines/finetune/ucf101.yaml") for c in checked)
    assert "parses: mvtools recipes show rgb_tiny" in checked  # the commands' --help examples too
    assert "--config ucf101_tiny (finetune)" in checked


def test_a_renamed_flag_an_unknown_recipe_or_a_missing_notebook_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text(
        "```bash\nmvtools extract SRC -o s.zarr --no-such-flag   # gone\n"
        "mvtools train --config rgb_tinyy --store s.zarr --out run\n"
        "mvtools info s.zarr [--json|--videos] > info.txt\n"
        "torchrun --nproc_per_node 8 -m mvtools finetune --config ucf101 ...\n"
        "```\nSee pipelines/train/nope.yaml, `mvtools shw KEY` and examples/nope.ipynb.\n")
    checked, failed = check(tmp_path / "README.md")
    assert len(failed) == 5, failed
    assert "unrecognized arguments: --no-such-flag" in failed[0] and "rgb_tinyy: no such file" in failed[1]
    assert "invalid choice: 'shw'" in failed[2] and "pipelines/train/nope.yaml" in failed[3]
    assert failed[4].startswith("examples/nope.ipynb: not shipped")
    assert "parses: mvtools info s.zarr --videos" in checked and "--config ucf101 (finetune)" in checked
