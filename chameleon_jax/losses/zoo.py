"""Registration of every loss in `LOSSES`, with the options each accepts.

A registered builder takes the vocabulary options that make sense for that
loss (see vocabulary.py) plus the loss's own parameters, refuses any other
name with the list of accepted ones, and returns `loss(pred, target)`.
Builders are gin-configurable: `losses.dice.smooth_nr = 1e-5`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from chameleon_jax.losses import boundary, image, lovasz, pixel, region
from chameleon_jax.losses.vocabulary import Options
from chameleon_jax.registry import LOSSES

PIXEL = ("mode", "from_logits", "class_weights", "ignore_index", "reduction")
REGION = PIXEL + ("include_background", "reduce_over", "smooth_nr",
                  "smooth_dr", "empty_target")
LOVASZ = ("mode", "from_logits", "include_background", "reduce_over",
          "ignore_index", "reduction", "empty_target")
BOUNDARY = ("mode", "from_logits", "include_background", "ignore_index",
            "reduction")


def _register(name: str, fn: Callable, options: Sequence[str],
              **own: Any) -> None:
  """Registers `fn(pred, target, opts, **own)` as loss `name`."""
  accepted = sorted(set(options) | set(own))

  def builder(**kwargs):
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
      raise TypeError(f"loss {name!r} does not take {unknown}; it takes "
                      f"{accepted}.")
    opts = Options(**{k: v for k, v in kwargs.items() if k in options})
    params = {k: kwargs.get(k, default) for k, default in own.items()}
    return functools.partial(fn, opts=opts, **params)

  builder.__name__ = name
  builder.__doc__ = (fn.__doc__ or "") + f"\n\nAccepted options: {accepted}."
  LOSSES.register(name)(builder)


def _ce(pred, target, opts, label_smoothing):
  if opts.mode == "multiclass":
    return pixel.cross_entropy(pred, target, opts, label_smoothing)
  return pixel.binary_cross_entropy(pred, target, opts, label_smoothing)


_register("cross_entropy", _ce, PIXEL, label_smoothing=0.0)
_register("focal", pixel.focal, PIXEL[:2] + PIXEL[3:], gamma=2.0, alpha=None)
_register("dice", region.dice, REGION, variant="plain")
_register("jaccard", region.jaccard, REGION)
_register("tversky", region.tversky, REGION, alpha=0.3, beta=0.7)
_register("focal_tversky", region.focal_tversky, REGION, alpha=0.3, beta=0.7,
          gamma=4 / 3)
_register("generalized_dice", region.generalized_dice,
          ("mode", "from_logits", "include_background", "reduce_over",
           "smooth_nr", "smooth_dr", "ignore_index", "reduction"),
          weight_type="square")
_register("lovasz", lovasz.lovasz, LOVASZ)
_register("boundary", boundary.boundary, BOUNDARY, max_distance=20)
_register("image_topk", image.image_topk,
          ("mode", "from_logits", "ignore_index", "reduction"), k=16)


def _dice_ce(pred, target, opts, dice_weight, ce_weight, label_smoothing):
  """dice_weight * Dice + ce_weight * (B)CE (nnU-Net's default loss)."""
  ce_opts = Options(mode=opts.mode, from_logits=opts.from_logits,
                    class_weights=opts.class_weights,
                    ignore_index=opts.ignore_index)
  return (dice_weight * region.dice(pred, target, opts)
          + ce_weight * _ce(pred, target, ce_opts, label_smoothing))


def _dice_focal(pred, target, opts, dice_weight, focal_weight, gamma, alpha):
  """dice_weight * Dice + focal_weight * focal.

  The focal term is the one of `focal` in the same mode: in multiclass mode
  a softmax focal loss over the classes (Lin et al.), in binary and
  multilabel modes a sigmoid one per channel. MONAI's DiceFocalLoss uses a
  per-channel sigmoid focal term in every mode, so in multiclass mode the
  two differ (tests/test_losses.py checks which). Per-class weighting is
  `alpha` (focal's own); `class_weights` is refused, since the focal term
  has no per-class weights to apply it to consistently."""
  focal_opts = Options(mode=opts.mode, from_logits=opts.from_logits,
                       ignore_index=opts.ignore_index)
  return (dice_weight * region.dice(pred, target, opts)
          + focal_weight * pixel.focal(pred, target, focal_opts, gamma, alpha))


# Compounds add terms of different shapes under reduction="none" (per-unit
# Dice, per-pixel CE): they always reduce to the mean, and refuse the option.
COMPOUND = tuple(o for o in REGION if o != "reduction")

_register("dice_ce", _dice_ce, COMPOUND,
          dice_weight=1.0, ce_weight=1.0, label_smoothing=0.0)


def _dice_ce_image(pred, target, opts, dice_weight, ce_weight, image_weight,
                   k, label_smoothing):
  """dice_ce + image_weight * image_topk(k): the pixel loss plus image-level
  supervision of the k most defect-like pixels (image.py), for inspection
  data judged per image. The region options act on the Dice term only."""
  image_opts = Options(mode=opts.mode, from_logits=opts.from_logits,
                       ignore_index=opts.ignore_index)
  return (_dice_ce(pred, target, opts, dice_weight, ce_weight,
                   label_smoothing)
          + image_weight * image.image_topk(pred, target, image_opts, k))


_register("dice_ce_image", _dice_ce_image, COMPOUND, dice_weight=1.0,
          ce_weight=1.0, image_weight=1.0, k=16, label_smoothing=0.0)
_register("dice_focal", _dice_focal,
          tuple(o for o in COMPOUND if o != "class_weights"), dice_weight=1.0,
          focal_weight=1.0, gamma=2.0, alpha=None)


@LOSSES.register("compound")
def compound(terms: Sequence[dict]) -> Callable:
  """Any weighted sum: terms = [{"name": "dice", "weight": 1.0,
  "kwargs": {...}}, ...]; each term is built from the registry."""
  if not terms:
    raise ValueError("compound needs at least one term.")
  built = []
  for i, term in enumerate(terms):
    unknown = set(term) - {"name", "weight", "kwargs"}
    if unknown or "name" not in term:
      raise ValueError(f"compound term {i} {term!r}: keys are name, weight, "
                       "kwargs.")
    kwargs = dict(term.get("kwargs", {}))
    if kwargs.get("reduction", "mean") != "mean":
      raise ValueError(f"compound term {i} ({term['name']}): reduction="
                       f"{kwargs['reduction']!r}; a sum of terms needs each "
                       "reduced to its mean.")
    built.append((float(term.get("weight", 1.0)),
                  LOSSES.build(term["name"], **kwargs)))

  def loss(pred, target):
    return sum(w * fn(pred, target) for w, fn in built)

  return loss


def deep_supervision(loss_fn: Callable,
                     weights: Sequence[float] | None = None) -> Callable:
  """Wraps `loss_fn` for a list of predictions at decreasing resolution.

  The target is subsampled (nearest, by striding) to each prediction's size.
  Default weights are nnU-Net's: 1/2^i, normalised to sum to 1.
  """

  def loss(preds: Sequence[jax.Array], target: jax.Array) -> jax.Array:
    w = (weights if weights is not None
         else [0.5 ** i for i in range(len(preds))])
    if len(w) != len(preds):
      raise ValueError(f"{len(preds)} outputs but {len(w)} weights.")
    total = sum(w)
    value = jnp.zeros((), jnp.float32)
    for wi, p in zip(w, preds):
      stride_h = -(-target.shape[1] // p.shape[1])  # ceil: 5 px -> 3 outputs.
      stride_w = -(-target.shape[2] // p.shape[2])
      t = target[:, ::stride_h, ::stride_w][:, :p.shape[1], :p.shape[2]]
      value = value + (wi / total) * loss_fn(p, t)
    return value

  return loss
