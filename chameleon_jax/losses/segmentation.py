"""Segmentation losses on softmax logits: cross-entropy, soft Dice, Dice + CE.

Shared vocabulary (the full loss zoo extends it, never renames it):
  ignore_index       label value excluded from every sum (default 255);
  class_weights      per-class weights (CE: per-pixel weight of the target
                     class, normalised by the summed weight of valid pixels);
  include_background Dice over class 0 too (default False: on defect data the
                     background term is ~1 and only dilutes the gradient);
  reduction_over     "batch": Dice sums pooled over the whole batch per class;
                     "image": Dice per (image, class), then averaged;
  smooth_nr, smooth_dr  added to the Dice numerator / denominator.

Empty-target policy of soft Dice (documented, tested):
  per pooled unit u (class, or image and class):
    dice_u = (2 TP + smooth_nr) / (sum P + sum G + smooth_dr), loss = 1 - dice.
  - empty target, empty prediction -> (0 + s) / (0 + s) = 1 -> loss 0;
  - empty target, predicted foreground mass m -> s / (m + s) -> loss -> 1 as m
    grows: false positives on defect-free images are penalised (unlike
    libraries that drop classes absent from the batch).
  Averaging runs over all units; with "batch" pooling a class absent from the
  whole batch still contributes its false-positive penalty.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from chameleon_jax.registry import LOSSES

REDUCTIONS = ("batch", "image")


def _as_float(logits: jax.Array) -> jax.Array:
  """Computes in float32 at least (bf16 inputs), float64 when given float64."""
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _valid_one_hot(logits, labels, ignore_index):
  """One-hot targets, all-zero at ignored pixels, and the validity mask."""
  num_classes = logits.shape[-1]
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  one_hot = jax.nn.one_hot(safe, num_classes, dtype=logits.dtype)
  return one_hot * valid[..., None], valid


def cross_entropy(logits: jax.Array, labels: jax.Array, *,
                  ignore_index: int = 255,
                  class_weights: Sequence[float] | None = None,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy averaged over valid pixels (0 if none is valid)."""
  logits = _as_float(logits)
  one_hot, valid = _valid_one_hot(logits, labels, ignore_index)
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits, axis=-1)
  target = one_hot * (1 - label_smoothing) + label_smoothing / num_classes
  per_pixel = -(target * log_p).sum(-1)
  weight = valid.astype(logits.dtype)
  if class_weights is not None:
    cw = jnp.asarray(class_weights, logits.dtype)
    if cw.shape != (num_classes,):
      raise ValueError(f"class_weights has {cw.shape[0]} entries for "
                       f"{num_classes} classes.")
    weight = weight * (one_hot @ cw)
  return (per_pixel * weight).sum() / jnp.maximum(weight.sum(), 1e-12)


def soft_dice(logits: jax.Array, labels: jax.Array, *,
              ignore_index: int = 255, include_background: bool = False,
              reduction_over: str = "batch", smooth_nr: float = 1e-5,
              smooth_dr: float = 1e-5,
              class_weights: Sequence[float] | None = None) -> jax.Array:
  """1 - soft Dice of softmax probabilities; see the module doc for empties."""
  if reduction_over not in REDUCTIONS:
    raise ValueError(f"reduction_over={reduction_over!r}; expected one of "
                     f"{REDUCTIONS}.")
  logits = _as_float(logits)
  one_hot, valid = _valid_one_hot(logits, labels, ignore_index)
  probs = jax.nn.softmax(logits, axis=-1) * valid[..., None]
  axes = (0, 1, 2) if reduction_over == "batch" else (1, 2)
  tp = (probs * one_hot).sum(axes)
  denominator = probs.sum(axes) + one_hot.sum(axes)
  dice = (2 * tp + smooth_nr) / (denominator + smooth_dr)
  loss = 1 - dice  # (K,) or (B, K)
  first = 0 if include_background else 1
  if logits.shape[-1] - first < 1:
    raise ValueError("soft_dice without background needs at least 2 classes.")
  loss = loss[..., first:]
  if class_weights is not None:
    cw = jnp.asarray(class_weights, logits.dtype)[first:]
    return (loss * cw).sum(-1).mean() / cw.sum()
  return loss.mean()


@LOSSES.register("cross_entropy")
def cross_entropy_loss(ignore_index: int = 255,
                       class_weights: Sequence[float] | None = None,
                       label_smoothing: float = 0.0):
  return lambda logits, labels: cross_entropy(
      logits, labels, ignore_index=ignore_index, class_weights=class_weights,
      label_smoothing=label_smoothing)


@LOSSES.register("dice")
def dice_loss(ignore_index: int = 255, include_background: bool = False,
              reduction_over: str = "batch", smooth_nr: float = 1e-5,
              smooth_dr: float = 1e-5):
  return lambda logits, labels: soft_dice(
      logits, labels, ignore_index=ignore_index,
      include_background=include_background, reduction_over=reduction_over,
      smooth_nr=smooth_nr, smooth_dr=smooth_dr)


@LOSSES.register("dice_ce")
def dice_ce_loss(dice_weight: float = 1.0, ce_weight: float = 1.0,
                 ignore_index: int = 255, include_background: bool = False,
                 reduction_over: str = "batch", smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5,
                 class_weights: Sequence[float] | None = None):
  """nnU-Net's default: dice_weight * Dice + ce_weight * CE."""
  def loss(logits, labels):
    return (dice_weight * soft_dice(
        logits, labels, ignore_index=ignore_index,
        include_background=include_background, reduction_over=reduction_over,
        smooth_nr=smooth_nr, smooth_dr=smooth_dr)
            + ce_weight * cross_entropy(logits, labels,
                                        ignore_index=ignore_index,
                                        class_weights=class_weights))
  return loss
