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
  """The registered loss `name` with its options, as `loss(pred, target)`.

  Args:
    name: a LOSSES name (cross_entropy, focal, dice, jaccard, tversky,
      focal_tversky, generalized_dice, lovasz, boundary, image_topk,
      dice_ce, dice_focal, dice_ce_image, compound).
    **kwargs: options of the one vocabulary (vocabulary.py) that the loss
      accepts, and its own parameters.

  Raises:
    KeyError: an unknown name (the close ones named).
    TypeError: an option the loss does not take (the accepted ones named).
    ValueError: a value outside its allowed set.

  Example:
    >>> loss = build_loss("dice_ce", reduce_over="image",
    ...                   empty_target="exclude")
    >>> loss(logits, labels)  # (B, H, W, K) logits, (B, H, W) int labels
  """
  return LOSSES.build(name, **kwargs)
