"""Image-level supervision of a segmentation output: top-k MIL cross-entropy.

A quality engineer judges images ("does this tile have a defect?"), and a
segmentation model raises an alarm through its most confident pixels. Pixel
losses average over ~10^4 pixels, so a handful of confident false positives
on a defect-free image costs almost nothing, yet each one is a false alarm.
This loss supervises exactly those pixels (multiple-instance learning, as in
the mixed-supervision defect detectors of Tabernik et al. 2020 and Bozic et
al. 2021, with a top-k mean instead of a learned decision layer):

  d(x)     = the defect logit of pixel x: log p(defect) - log p(background),
             with p(defect) = 1 - p(background) (multiclass: logsumexp of the
             defect channels minus the background channel; binary: the
             logit itself);
  s(image) = mean of the k largest d(x) over valid (non-ignored) pixels;
  y(image) = 1 if any valid target pixel is foreground, else 0;
  loss     = binary cross-entropy(y, sigmoid(s)), reduced over images.

So a defect-free image is pushed to have no k pixels that look like a defect,
and an image with a defect to have at least k that do (k about the smallest
defect worth reporting; k=1 is the max). Images without a single valid pixel
are dropped from the mean. Used next to a pixel loss (`dice_ce_image`, or
`compound`), it trains the score that `evaluation/decision.py` thresholds.
Available, not a default (what it measured: benchmarks/RESULTS.md, "Why each choice",
"chameleon_jax/losses/image.py").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chameleon_jax.losses.vocabulary import Options, as_float, targets


def defect_logit(pred: jax.Array, opts: Options) -> jax.Array:
  """log p(defect) - log p(background) per pixel, (B, ...)."""
  pred = as_float(pred)
  if opts.mode == "multiclass":
    return jax.nn.logsumexp(pred[..., 1:], axis=-1) - pred[..., 0]
  if opts.mode == "binary":
    return pred[..., 0]
  raise ValueError("image_topk needs mode='binary' or 'multiclass' (one "
                   f"background), got {opts.mode!r}.")


def image_topk(pred: jax.Array, target: jax.Array, opts: Options,
               k: int = 16) -> jax.Array:
  """Top-k MIL binary cross-entropy per image (see the module docstring)."""
  if not opts.from_logits:
    raise ValueError("image_topk needs logits (from_logits=True).")
  if k < 1:
    raise ValueError(f"image_topk: k must be >= 1, got {k}.")
  g, valid = targets(pred, target, opts)
  if opts.mode == "multiclass":
    fg = g[..., 1:].sum(-1)
    valid = valid[..., 0]
  else:
    fg, valid = g[..., 0], valid[..., 0]
  d = defect_logit(pred, opts)
  batch = d.shape[0]
  d, fg, valid = (a.reshape(batch, -1) for a in (d, fg, valid))
  if k > d.shape[1]:
    raise ValueError(f"image_topk: k={k} exceeds the {d.shape[1]} pixels of "
                     "an image.")
  lowest = jnp.finfo(d.dtype).min
  top, _ = jax.lax.top_k(jnp.where(valid > 0, d, lowest), k)
  # Images with fewer than k valid pixels average the valid ones only.
  top_valid = (top > lowest).astype(d.dtype)
  count = top_valid.sum(-1)
  score = (jnp.where(top_valid > 0, top, 0.0).sum(-1)
           / jnp.maximum(count, 1.0))
  y = (fg.max(-1) > 0).astype(d.dtype)
  per_image = -(y * jax.nn.log_sigmoid(score)
                + (1 - y) * jax.nn.log_sigmoid(-score))
  has_valid = (count > 0).astype(d.dtype)
  if opts.reduction == "none":
    return per_image * has_valid
  total = (per_image * has_valid).sum()
  if opts.reduction == "sum":
    return total
  return total / jnp.maximum(has_valid.sum(), 1.0)
