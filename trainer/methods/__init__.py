"""Pretraining methods: one module per paper, each a ``Method`` that only says what its loss is.

``REGISTRY`` maps a method's name to its class; the training loop knows methods only through it.
Importing a method's module registers it.
"""

from __future__ import annotations

from . import fima, hcml, maclr, mcd, mcl, mgm, rgb, videomae  # noqa: F401
from .base import REGISTRY, Method, register

__all__ = ["REGISTRY", "Method", "register"]
