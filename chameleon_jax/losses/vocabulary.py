"""The one vocabulary of loss options, shared by every loss of the zoo.

Shapes: predictions are channels-last, (B, ..., K): (B, H, W, K) for
segmentation, (B, K) for classification. Targets:
  mode="multiclass"  integer class map (B, ...), softmax over K channels;
  mode="binary"      (B, ...) in {0, 1}, one foreground channel (K = 1),
                     sigmoid;
  mode="multilabel"  (B, ..., K) in {0, 1}, independent sigmoids.
Target values equal to `ignore_index` mark unlabelled elements: they add
nothing to any sum, numerator or denominator.

Options (each loss accepts the subset that makes sense for it; the registry
refuses the others by name):
  from_logits         predictions are logits (True) or probabilities (False);
  include_background  multiclass only: keep channel 0 in region losses;
  reduce_over         "batch": region sums pooled over the batch per class;
                      "image": per (image, class), then reduced;
  smooth_nr, smooth_dr  added to numerator / denominator of region losses;
  class_weights       per-class weights (K,) (weighted mean over classes, or
                      per-element weight of the target class for CE);
  reduction           "mean" | "sum" | "none" (per unit: (K,) or (B, K) for
                      region losses, per element for pixel losses);
  empty_target        region losses, units (class, or image-class) whose
                      target is empty:
                        "penalize" (default) - computed like any other: an
                          empty prediction costs 0 (smoothing makes 0/0 = 1),
                          predicted foreground costs ~1;
                        "zero"     - contribute 0 but count in the mean (SMP);
                        "exclude"  - dropped from the mean (MONAI metric
                          ignore_empty); all units empty -> loss 0.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

MODES = ("binary", "multiclass", "multilabel")
REDUCE_OVER = ("batch", "image")
REDUCTIONS = ("mean", "sum", "none")
EMPTY_POLICIES = ("penalize", "zero", "exclude")


def _choice(name: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"{name}={value!r}; expected one of {allowed}.")


@dataclasses.dataclass(frozen=True)
class Options:
  """The shared loss options (module docstring), with these defaults:

  mode "multiclass" with logits; background excluded from region losses (it
  only dilutes the gradient when defects cover 0.1-2 % of the pixels);
  region sums pooled over the batch (stable when most images are empty);
  smoothing 1e-5 on both sides (an empty class with an empty prediction
  costs 0, false positives cost ~1); no class weights; ignore_index 255;
  mean reduction; empty targets penalised (false positives on defect-free
  images cost, which is what keeps false alarms down on inspection data).

  Raises:
    ValueError: a value outside its allowed set, include_background outside
      multiclass mode, or negative smoothing.
  """
  mode: str = "multiclass"
  from_logits: bool = True
  include_background: bool = False
  reduce_over: str = "batch"
  smooth_nr: float = 1e-5
  smooth_dr: float = 1e-5
  class_weights: Sequence[float] | None = None
  ignore_index: int = 255
  reduction: str = "mean"
  empty_target: str = "penalize"

  def __post_init__(self):
    _choice("mode", self.mode, MODES)
    _choice("reduce_over", self.reduce_over, REDUCE_OVER)
    _choice("reduction", self.reduction, REDUCTIONS)
    _choice("empty_target", self.empty_target, EMPTY_POLICIES)
    if self.include_background and self.mode != "multiclass":
      raise ValueError(f"include_background applies to mode='multiclass' "
                       f"only (mode={self.mode!r} has no background channel).")
    if self.smooth_nr < 0 or self.smooth_dr < 0:
      raise ValueError("smooth_nr and smooth_dr must be >= 0.")


def as_float(x: jax.Array) -> jax.Array:
  """float32 at least (bf16 inputs are upcast), float64 when given float64."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_channels(pred: jax.Array, target: jax.Array, opts: Options) -> None:
  k = pred.shape[-1]
  if opts.mode == "multiclass":
    if target.shape != pred.shape[:-1]:
      raise ValueError(f"multiclass: target shape {target.shape} must be the "
                       f"prediction shape {pred.shape} without its last axis.")
    if k < 2:
      raise ValueError(f"multiclass needs >= 2 channels, got {k}.")
  elif opts.mode == "binary":
    if k != 1 or target.shape != pred.shape[:-1]:
      raise ValueError(f"binary: prediction (B, ..., 1) and target (B, ...) "
                       f"expected, got {pred.shape} and {target.shape}.")
  elif target.shape != pred.shape:
    raise ValueError(f"multilabel: target shape {target.shape} must equal the "
                     f"prediction shape {pred.shape}.")
  if opts.class_weights is not None and len(opts.class_weights) != k:
    raise ValueError(f"class_weights has {len(opts.class_weights)} entries for "
                     f"{k} channels.")


def probabilities(pred: jax.Array, opts: Options) -> jax.Array:
  """Softmax (multiclass) or sigmoid (binary, multilabel) of logits, or
  the predictions themselves with from_logits=False; float32 or wider.
  """
  pred = as_float(pred)
  if not opts.from_logits:
    return pred
  if opts.mode == "multiclass":
    return jax.nn.softmax(pred, axis=-1)
  return jax.nn.sigmoid(pred)


def targets(pred: jax.Array, target: jax.Array, opts: Options
            ) -> tuple[jax.Array, jax.Array]:
  """(one-hot/binary targets G, validity mask V), both shaped like `pred`.

  G is 0 wherever V is 0 (ignored elements).
  """
  _check_channels(pred, target, opts)
  dtype = as_float(pred).dtype
  if opts.mode == "multiclass":
    valid = (target != opts.ignore_index)
    g = jax.nn.one_hot(jnp.where(valid, target, 0), pred.shape[-1], dtype=dtype)
    valid = jnp.broadcast_to(valid[..., None], pred.shape)
  else:
    if opts.mode == "binary":
      target = target[..., None]
    valid = target != opts.ignore_index
    g = jnp.where(valid, target, 0).astype(dtype)
  valid = valid.astype(dtype)
  return g * valid, valid


def region_channels(x: jax.Array, opts: Options) -> jax.Array:
  """Drops the background channel in multiclass mode unless included."""
  if opts.mode == "multiclass" and not opts.include_background:
    return x[..., 1:]
  return x


def class_weight_vector(opts: Options, dtype) -> jax.Array | None:
  """`opts.class_weights` as a (K,) array of `dtype`, or None."""
  if opts.class_weights is None:
    return None
  return jnp.asarray(opts.class_weights, dtype)


def reduce_units(loss: jax.Array, empty: jax.Array, opts: Options,
                 weights: jax.Array | None) -> jax.Array:
  """Applies the empty-target policy and the reduction to per-unit losses.

  `loss` and `empty` are (K,) or (B, K); `weights` (K,) or None.
  """
  include = jnp.ones_like(loss)
  if opts.empty_target == "zero":
    loss = jnp.where(empty, 0.0, loss)
  elif opts.empty_target == "exclude":
    include = jnp.where(empty, 0.0, 1.0).astype(loss.dtype)
    loss = jnp.where(empty, 0.0, loss)
  if opts.reduction == "none":
    return loss
  w = include if weights is None else include * weights
  if opts.reduction == "sum":
    return (loss * w).sum()
  return (loss * w).sum() / jnp.maximum(w.sum(), 1e-12)


def reduce_elements(per_element: jax.Array, weight: jax.Array,
                    reduction: str) -> jax.Array:
  """Reduction of element-wise losses: the mean is the weighted mean over
  elements (weight 0 at ignored ones); no valid element gives 0, not NaN."""
  if reduction == "none":
    return per_element * weight
  total = (per_element * weight).sum()
  if reduction == "sum":
    return total
  return total / jnp.maximum(weight.sum(), 1e-12)
