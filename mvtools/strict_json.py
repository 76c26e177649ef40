"""JSON that strict parsers accept: a float that is not finite (NaN, +-Infinity) is written as ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which RFC 8259 (and ``jq``, JavaScript's
``JSON.parse``, Go, Rust's serde_json) reject. Every JSON mvtools and its trainer print or write goes through
``dumps``, which converts first and then serialises with ``allow_nan=False``, so nothing non-finite gets through.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (numpy's too) replaced by None, in nested dicts, lists and tuples;
    numpy scalars become Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy / torch scalars
        return finite(value.item())
    return value


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` with non-finite floats as null (``allow_nan`` cannot be turned back on)."""
    kwargs.pop("allow_nan", None)
    return json.dumps(finite(value), allow_nan=False, **kwargs)
