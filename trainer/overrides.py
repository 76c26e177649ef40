"""A run's settings: a recipe (a bundled name or a YAML file), then ``--set KEY=VALUE``, then the named flags.

``--set`` takes any ``TrainConfig`` field (``steps=200``, ``clip_len=8``), or a dotted key into one of its mapping
fields (``method_args.queue=0``, ``augment.flip=false``, ``backbone_args.width=0.5``), which updates that key and
keeps the recipe's others. Values are YAML scalars or lists (``0``, ``1e-3``, ``true``, ``null``, ``rgb``,
``[0.6, 0.85]``); a field's value must have the field's type. Light: no torch (the CLI validates before loading it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: YAML 1.1 (PyYAML) reads 1e-3 as a string; these are numbers everywhere else
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def parse_setting(text: str) -> tuple[list[str], Any]:
    """``"method_args.queue=0"`` -> (["method_args", "queue"], 0); ValueError without ``=`` or a key."""
    key, sep, value = text.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise ValueError(f"--set {text!r}: expected KEY=VALUE (e.g. steps=200, method_args.queue=0)")
    return keys, parse_value(value.strip())


def field_defaults(cls) -> dict[str, Any]:
    """A dataclass's fields and their default values (factories called)."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def _check_type(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the field whose default is ``default`` (an int is a float too; a field whose
    default is None takes anything); ValueError otherwise."""
    if default is None:
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
                 dict: "a mapping"}
        raise ValueError(f"--set {key}: {key} takes {names.get(kind, kind.__name__)}, not {value!r}")
    return value


def apply_settings(recipe: Mapping, settings: Iterable[str], fields: Mapping[str, Any]) -> dict:
    """``recipe`` with each ``KEY=VALUE`` of ``settings`` applied in order. ``fields``: the valid top-level keys
    and their defaults (a mapping default admits dotted keys). ValueError naming an unknown key and the valid
    ones, a dotted key into a field that is not a mapping, or a value of the wrong type."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in recipe.items()}
    for text in settings:
        keys, value = parse_setting(text)
        top = keys[0]
        if top not in fields:
            raise ValueError(f"--set {'.'.join(keys)}: unknown key {top!r}; valid keys: {', '.join(sorted(fields))}")
        if len(keys) == 1:
            out[top] = _check_type(top, value, fields[top])
            continue
        if not isinstance(fields[top], dict):
            raise ValueError(f"--set {'.'.join(keys)}: {top} is not a mapping; use --set {top}=VALUE")
        node = out.setdefault(top, {})
        if node is None:
            node = out[top] = {}
        for key in keys[1:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, Mapping) else {}
            node = node[key]
        node[keys[-1]] = value
    return out


def read_recipe(value: str | None, kind: str) -> tuple[dict, str]:
    """(the recipe's settings, its file) for a ``--config`` value of command ``kind`` (a bundled name or a file;
    ``mvtools.bundled.resolve_config``); ({}, "") without one."""
    if not value:
        return {}, ""
    from mvtools.bundled import resolve_config
    from mvtools.config import read_yaml

    path = resolve_config(value, kind)
    return dict(read_yaml(path)), str(path)
