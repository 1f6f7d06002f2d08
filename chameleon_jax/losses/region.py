"""Region (overlap) losses: soft Dice (plain, squared, log), Jaccard, Tversky,
focal Tversky and generalized Dice.

Per unit u (a class pooled over the batch, or an (image, class) pair):
TP = sum P G, SP = sum P, SG = sum G, FP = SP - TP, FN = SG - TP, where P is
the probability and G the target, both zero at ignored elements.

  dice        1 - (2 TP + nr) / (SP + SG + dr)        (squared: SP -> sum P^2)
  log dice    -log((2 TP + nr) / (SP + SG + dr))
  jaccard     1 - (2 TP + nr) / (2 (SP + SG - TP) + dr)   (MONAI's form)
  tversky     1 - (TP + nr) / (TP + alpha FP + beta FN + dr)
  focal tv.   (tversky loss)^(1 / gamma)  per unit (Abraham & Khan 2019)
  gen. dice   1 - (2 sum_c w_c TP_c + nr) / (sum_c w_c (SP_c + SG_c) + dr)

The empty-target policy and reductions are those of vocabulary.py. A unit
whose denominator is exactly 0 (no target, no prediction, no smoothing:
`smooth_nr = smooth_dr = 0`, the setting that reproduces SMP) scores 1, the
limit of equal smoothing, with a finite (zero) gradient: SMP clamps the
denominator for the same reason; a plain 0/0 would make the whole image's
gradient NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chameleon_jax.losses.vocabulary import (Options, class_weight_vector,
                                             probabilities, reduce_units,
                                             region_channels, targets)


def region_sums(pred: jax.Array, target: jax.Array, opts: Options):
  """(TP, SP, SG, sum P^2) per unit: shape (K',) or (B, K')."""
  g, valid = targets(pred, target, opts)
  p = probabilities(pred, opts) * valid
  p, g = region_channels(p, opts), region_channels(g, opts)
  if opts.reduce_over == "batch":
    axes = tuple(range(p.ndim - 1))
  else:
    axes = tuple(range(1, p.ndim - 1))
  return ((p * g).sum(axes), p.sum(axes), g.sum(axes), (p * p).sum(axes))


def _ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """numerator / denominator, 1 where the denominator is exactly 0 (an
  empty unit without smoothing), with gradients that stay finite there."""
  empty = denominator == 0
  return jnp.where(empty, 1.0,
                   numerator / jnp.where(empty, 1.0, denominator))


def _finish(loss: jax.Array, sg: jax.Array, opts: Options) -> jax.Array:
  weights = class_weight_vector(opts, loss.dtype)
  if weights is not None:
    weights = region_channels(weights, opts)
  return reduce_units(loss, sg == 0, opts, weights)


def dice(pred, target, opts: Options, variant: str = "plain") -> jax.Array:
  """Soft Dice loss 1 - (2 TP + nr) / (SP + SG + dr) per unit (module
  docstring), or its squared (SP -> sum P^2) or log variant.

  Args:
    pred, target: predictions and targets in the vocabulary's shapes.
    opts: the shared options (mode, reduce_over, smoothing, weights,
      empty_target, reduction, ...).
    variant: "plain", "squared" or "log".

  Raises:
    ValueError: an unknown variant.

  Example:
    >>> build_loss("dice", reduce_over="image", empty_target="exclude")
  """
  if variant not in ("plain", "squared", "log"):
    raise ValueError(f"dice variant={variant!r}; expected plain, squared or "
                     "log.")
  tp, sp, sg, sp2 = region_sums(pred, target, opts)
  denominator = (sp2 if variant == "squared" else sp) + sg
  score = _ratio(2 * tp + opts.smooth_nr, denominator + opts.smooth_dr)
  if variant == "log":
    loss = -jnp.log(jnp.clip(score, jnp.finfo(score.dtype).tiny, None))
  else:
    loss = 1 - score
  return _finish(loss, sg, opts)


def jaccard(pred, target, opts: Options) -> jax.Array:
  """Soft Jaccard loss in MONAI's form 1 - (2 TP + nr) / (2 (SP + SG - TP)
  + dr) per unit; options as `dice`.

  Example:
    >>> build_loss("jaccard", include_background=True)
  """
  tp, sp, sg, _ = region_sums(pred, target, opts)
  score = _ratio(2 * tp + opts.smooth_nr, 2 * (sp + sg - tp) + opts.smooth_dr)
  return _finish(1 - score, sg, opts)


def _tversky_index(pred, target, opts, alpha, beta):
  tp, sp, sg, _ = region_sums(pred, target, opts)
  fp, fn = sp - tp, sg - tp
  index = _ratio(tp + opts.smooth_nr,
                 tp + alpha * fp + beta * fn + opts.smooth_dr)
  return index, sg


def tversky(pred, target, opts: Options, alpha: float = 0.3,
            beta: float = 0.7) -> jax.Array:
  """Tversky loss. alpha weights false positives, beta false negatives
  (0.5/0.5 = Dice). The defaults 0.3/0.7 weigh missed defect pixels more,
  the choice measured for defects of <= 0.5 % of an image (RESULTS.md,
  "Which loss on imbalanced defect data"); on textured surfaces it raises
  false positives, so watch the false-alarm rate.

  Example:
    >>> loss = build_loss("tversky", alpha=0.3, beta=0.7)
    >>> loss(logits, labels)  # logits (B, H, W, K), labels (B, H, W)
  """
  index, sg = _tversky_index(pred, target, opts, alpha, beta)
  return _finish(1 - index, sg, opts)


def focal_tversky(pred, target, opts: Options, alpha: float = 0.3,
                  beta: float = 0.7, gamma: float = 4 / 3) -> jax.Array:
  """Focal Tversky loss (Abraham & Khan 2019): (1 - Tversky index)^(1 /
  gamma) per unit; alpha/beta as `tversky`, gamma 4/3 (the paper's).

  Example:
    >>> build_loss("focal_tversky", alpha=0.3, beta=0.7, gamma=4 / 3)
  """
  index, sg = _tversky_index(pred, target, opts, alpha, beta)
  base = jnp.clip(1 - index, jnp.finfo(index.dtype).tiny, None)
  return _finish(base ** (1 / gamma), sg, opts)


def generalized_dice(pred, target, opts: Options,
                     weight_type: str = "square") -> jax.Array:
  """Sudre et al. 2017, MONAI's weighting: w_c = 1/SG_c^2 (square), 1/SG_c
  (simple) or 1 (uniform); an absent class's infinite weight is replaced by
  the largest finite weight of the same image (or batch)."""
  if weight_type not in ("square", "simple", "uniform"):
    raise ValueError(f"weight_type={weight_type!r}; expected square, simple "
                     "or uniform.")
  tp, sp, sg, _ = region_sums(pred, target, opts)
  if weight_type == "uniform":
    w = jnp.ones_like(sg)
  else:
    w = 1 / (sg * sg if weight_type == "square" else sg)
    finite = jnp.isfinite(w)
    w = jnp.where(finite, w, 0.0)
    w = jnp.where(finite, w, w.max(-1, keepdims=True))
  numerator = 2 * (w * tp).sum(-1) + opts.smooth_nr
  denominator = (w * (sp + sg)).sum(-1) + opts.smooth_dr
  loss = 1 - _ratio(numerator, denominator)  # () batch, (B,) per image.
  if opts.reduction == "none":
    return loss
  return loss.sum() if opts.reduction == "sum" else loss.mean()
