"""Strict JSON (mvtools/strict_json.py): what mvtools and the trainer write parses with RFC 8259 parsers."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mvtools.strict_json import dumps

ROOT = Path(__file__).resolve().parents[1]


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as jq, JavaScript and serde_json do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_at_any_depth():
    value = {"a": float("nan"), "b": [np.float32("inf"), 1.5, (np.float64("-inf"), 2)], "c": np.int64(3),
             "d": {"e": np.float16(0.5), "f": None, "g": "NaN"}}
    text = dumps(value, indent=None)
    assert strict_loads(text) == {"a": None, "b": [None, 1.5, [None, 2]], "c": 3,
                                  "d": {"e": 0.5, "f": None, "g": "NaN"}}
    assert dumps(float("nan"), allow_nan=True) == "null"  # cannot be turned back on
    with pytest.raises(ValueError, match="not JSON: NaN"):
        strict_loads(json.dumps(float("nan")))  # what plain json.dumps writes


def test_every_json_writer_of_mvtools_and_the_trainer_is_strict():
    """Each json.dump(s) call in mvtools/ and trainer/ goes through strict_json.dumps or refuses NaN itself."""
    calls = []
    for path in [*(ROOT / "mvtools").rglob("*.py"), *(ROOT / "trainer").rglob("*.py")]:
        if path.name == "strict_json.py":
            continue
        for line in path.read_text().splitlines():
            if re.search(r"\bjson\.dumps?\(", line):
                calls.append((path.relative_to(ROOT).as_posix(), line.strip()))
    assert all("allow_nan=False" in line for _, line in calls), calls
