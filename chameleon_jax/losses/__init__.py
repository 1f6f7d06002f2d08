"""Loss zoo. Every loss is built through `build_loss` from the `LOSSES` registry.

A built loss is a function `(logits (B, H, W, K) float, labels (B, H, W) int)
-> scalar`; pixels equal to `ignore_index` contribute nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from chameleon_jax.losses import segmentation  # noqa: F401  (registers losses)
from chameleon_jax.registry import LOSSES


def build_loss(name: str, **kwargs: Any) -> Callable:
  return LOSSES.build(name, **kwargs)
