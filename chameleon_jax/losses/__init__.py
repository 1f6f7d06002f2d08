"""Loss zoo. Every loss is built through `build_loss` from the `LOSSES` registry.

A built loss is a function `(pred (B, ..., K), target) -> scalar` (or per
unit/element with reduction="none"); the option vocabulary and the
empty-target policy are documented in `vocabulary.py`.
"""

from __future__ import annotations

from typing import Any, Callable

from chameleon_jax.losses import zoo  # noqa: F401  (registers the losses)
from chameleon_jax.losses.class_weights import from_frequencies
from chameleon_jax.losses.zoo import deep_supervision
from chameleon_jax.registry import LOSSES

__all__ = ["build_loss", "deep_supervision", "from_frequencies"]


def build_loss(name: str, **kwargs: Any) -> Callable:
  return LOSSES.build(name, **kwargs)
