"""What the README tells a user to type, checked against the mvtools that is installed.

- every ``mvtools ...`` line of its bash blocks (``torchrun ... -m mvtools ...`` too), every inline ``mvtools ...``
  span, and every example in the commands' ``--help`` parses with the real argparse parser (a renamed flag or
  command fails); ``[--json]`` is an optional flag, ``A|B`` alternatives are tried one by one, a redirection ends
  the command, and a line with ``...`` (or an inline span) may leave required arguments out;
- every ``--config`` value of those lines (but a user's own ``*.yaml``), and every ``pipelines/*.yaml`` and
  ``examples/*.ipynb`` the text names, resolves to a file shipped with the installed package (from an empty
  folder: run this there);
- the licence file is in the installed package's metadata.

Used by tests/test_readme.py (the checkout's install) and by .ci/wheel_smoke.py with a freshly installed wheel:

    python tests/readme_commands.py README.md    # prints what it checked; exit 1 listing what failed
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    argv: list[str]  # after "mvtools"
    text: str  # as written in the README
    partial: bool  # "..." in it, or an inline mention: required arguments may be missing


def _argvs(tokens: list[str]) -> list[list[str]]:
    """``[--json]`` -> with and without it; ``C_T_V2|ckpt.pth`` -> each alternative."""
    out: list[list[str]] = [[]]
    optional: list[str] | None = None
    for token in tokens:
        if token.startswith("[") and optional is None:
            optional, token = [], token[1:]
        if optional is not None:
            closing = token.endswith("]")
            optional.append(token.rstrip("]"))
            if closing:
                out = out + [argv + variant for argv in out for variant in _argvs(optional)]
                optional = None
            continue
        choices = token.split("|") if "|" in token and not token.startswith(("'", '"')) else [token]
        out = [argv + [choice] for argv in out for choice in choices]
    return out


def commands(readme: str) -> list[Command]:
    """Every mvtools command line of the README's bash blocks and inline code spans."""
    found: list[Command] = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found += _parse_line(line.strip(), partial=False)
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)
    for span in re.findall(r"`((?:mvtools|torchrun) [^`]+)`", prose):
        found += _parse_line(span, partial=True)
    return found


def _parse_line(line: str, partial: bool) -> list[Command]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    if "mvtools" not in tokens or tokens[0] not in ("mvtools", "torchrun"):
        return []
    tokens = tokens[tokens.index("mvtools") + 1:]
    shell = [i for i, t in enumerate(tokens) if t in ("|", "&&", ";") or t.startswith((">", "2>", "<"))]
    tokens = tokens[: shell[0]] if shell else tokens  # a redirection or a pipe ends the mvtools command
    partial = partial or "..." in tokens
    tokens = [t for t in tokens if t != "..."]
    return [Command(argv, line, partial) for argv in _argvs(tokens)]


class ParseError(Exception):
    pass


def _raise_instead_of_exit(parser: argparse.ArgumentParser) -> None:
    def error(message):
        raise ParseError(message)

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _raise_instead_of_exit(sub)


def check_command(parser: argparse.ArgumentParser, command: Command) -> str | None:
    """None if the command parses (with required arguments forgiven for partial ones), else why not."""
    try:
        parser.parse_args(command.argv)
    except ParseError as e:
        if command.partial and "the following arguments are required" in str(e):
            return None
        return str(e)
    except SystemExit as e:  # --help and the like
        return None if e.code == 0 else f"exit {e.code}"
    return None


def help_examples(parser: argparse.ArgumentParser) -> list[Command]:
    """The ``mvtools ...`` lines of every sub-command's ``--help`` (its description and epilog)."""
    found: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                text = f"{sub.description or ''}\n{sub.epilog or ''}"
                for line in text.splitlines():
                    if line.strip().startswith(("mvtools ", "torchrun ")):
                        found += _parse_line(line.strip(), partial=False)
    return found


def config_values(command: Command) -> list[tuple[str, str]]:
    """(kind, value) of the command's ``--config``: the recipe kind is the command's (extract, train, finetune)."""
    argv = command.argv
    out = []
    for i, token in enumerate(argv[:-1]):
        if token == "--config" and argv[0] in ("extract", "train", "finetune"):
            out.append((argv[0], argv[i + 1]))
    return out


def check(readme_path: str | Path) -> tuple[list[str], list[str]]:
    """(what was checked, what failed)."""
    from importlib.metadata import distribution

    from mvtools.bundled import examples, find_recipe, resolve_config
    from mvtools.cli import build_parser
    from mvtools.errors import MvtoolsError

    readme = Path(readme_path).read_text()
    parser, _ = build_parser()
    _raise_instead_of_exit(parser)
    checked, failed = [], []
    for command in [*commands(readme), *help_examples(parser)]:
        why = check_command(parser, command)
        checked.append(f"parses: mvtools {' '.join(command.argv)}")
        if why:
            failed.append(f"{command.text}: {why}")
        for kind, value in config_values(command):
            if value.endswith((".yaml", ".yml")) and not value.startswith("pipelines/"):
                continue  # a file of the user's (my_recipe.yaml), not one mvtools ships
            checked.append(f"--config {value} ({kind})")
            try:
                resolve_config(value, kind)
            except MvtoolsError as e:
                failed.append(f"{command.text}: {e}")
    for path in sorted(set(re.findall(r"pipelines/[\w/]+\.yaml", readme))):
        checked.append(f"recipe {path}")
        try:
            find_recipe(path)
        except MvtoolsError as e:
            failed.append(str(e))
    shipped = {e.name for e in examples()}
    for path in sorted(set(re.findall(r"examples/([\w.-]+\.ipynb)", readme))):
        checked.append(f"example {path}")
        if path not in shipped:
            failed.append(f"examples/{path}: not shipped (mvtools examples lists {sorted(shipped)})")
    licences = [f for f in distribution("mvtools").files or [] if f.name == "LICENSE"]
    checked.append("LICENSE in the package metadata")
    if not licences:
        failed.append("LICENSE: not in the installed package's metadata")
    return checked, failed


def main() -> int:
    checked, failed = check(sys.argv[1])
    print(f"README: {len(checked)} checks, {len(failed)} failed")
    for line in failed:
        print(f"  FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
