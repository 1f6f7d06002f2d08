"""Pixel-wise (element-wise) losses: cross-entropy, binary cross-entropy, focal.

`reduction="mean"` averages over valid (non-ignored) elements only; with
`class_weights` cross-entropy is the weighted mean (each element weighted by
its target class, divided by the summed weights: PyTorch's convention). An
input with no valid element gives 0, not NaN.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from chameleon_jax.losses.vocabulary import (Options, as_float,
                                             class_weight_vector,
                                             reduce_elements, targets)


def _log_probs(pred: jax.Array, opts: Options) -> tuple[jax.Array, jax.Array]:
  """(log p, log(1 - p)) per channel for sigmoid modes; (log p, None) softmax."""
  pred = as_float(pred)
  if opts.mode == "multiclass":
    if opts.from_logits:
      return jax.nn.log_softmax(pred, axis=-1), None
    return jnp.log(jnp.clip(pred, jnp.finfo(pred.dtype).tiny, 1.0)), None
  if opts.from_logits:
    return jax.nn.log_sigmoid(pred), jax.nn.log_sigmoid(-pred)
  tiny = jnp.finfo(pred.dtype).tiny
  return jnp.log(jnp.clip(pred, tiny, 1.0)), jnp.log(jnp.clip(1 - pred, tiny, 1.0))


def cross_entropy(pred: jax.Array, target: jax.Array, opts: Options,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Softmax CE (multiclass): (1 - e) NLL + (e / K) sum_c -log p_c."""
  if opts.mode != "multiclass":
    raise ValueError("cross_entropy is for mode='multiclass'; use "
                     "binary_cross_entropy for binary/multilabel.")
  g, valid = targets(pred, target, opts)
  log_p, _ = _log_probs(pred, opts)
  k = pred.shape[-1]
  per_element = -((1 - label_smoothing) * (g * log_p).sum(-1)
                  + label_smoothing / k * log_p.sum(-1))
  weight = valid[..., 0]
  cw = class_weight_vector(opts, log_p.dtype)
  if cw is not None:
    weight = weight * (g @ cw)
  return reduce_elements(per_element, weight, opts.reduction)


def binary_cross_entropy(pred: jax.Array, target: jax.Array, opts: Options,
                         label_smoothing: float = 0.0) -> jax.Array:
  """Sigmoid BCE (binary / multilabel); targets smoothed to t(1-e) + e/2."""
  if opts.mode == "multiclass":
    raise ValueError("binary_cross_entropy is for mode='binary' or "
                     "'multilabel'; use cross_entropy for multiclass.")
  g, valid = targets(pred, target, opts)
  log_p, log_not_p = _log_probs(pred, opts)
  t = g * (1 - label_smoothing) + label_smoothing / 2
  per_element = -(t * log_p + (1 - t) * log_not_p)
  weight = valid
  cw = class_weight_vector(opts, log_p.dtype)
  if cw is not None:
    weight = weight * cw
  if opts.mode == "binary" and opts.reduction == "none":
    return (per_element * weight)[..., 0]
  return reduce_elements(per_element, weight, opts.reduction)


def focal(pred: jax.Array, target: jax.Array, opts: Options,
          gamma: float = 2.0,
          alpha: float | Sequence[float] | None = None) -> jax.Array:
  """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t.

  Sigmoid modes: alpha is a float, alpha_t = alpha t + (1 - alpha)(1 - t)
  (RetinaNet uses 0.25; None = no weighting). Multiclass (softmax): alpha is
  None or one weight per class, alpha_t = alpha[target]. The mean runs over
  valid elements (alpha does not renormalise it).
  """
  g, valid = targets(pred, target, opts)
  log_p, log_not_p = _log_probs(pred, opts)
  tiny = jnp.finfo(log_p.dtype).tiny
  if opts.mode == "multiclass":
    log_pt = (g * log_p).sum(-1)
    modulator = jnp.clip(1 - jnp.exp(log_pt), tiny, 1.0) ** gamma
    per_element = -modulator * log_pt
    weight = valid[..., 0]  # alpha scales the loss, not the normaliser.
    if alpha is not None:
      a = jnp.asarray(alpha, log_p.dtype)
      if a.shape != (pred.shape[-1],):
        raise ValueError(f"multiclass focal: alpha needs one weight per class "
                         f"({pred.shape[-1]}), got {alpha!r}.")
      per_element = per_element * (g @ a)
    return reduce_elements(per_element, weight, opts.reduction)
  if alpha is not None and not isinstance(alpha, (int, float)):
    raise ValueError(f"sigmoid focal: alpha must be a float or None, got "
                     f"{alpha!r}.")
  ce = -(g * log_p + (1 - g) * log_not_p)
  p = jnp.exp(log_p)
  p_t = p * g + (1 - p) * (1 - g)
  per_element = jnp.clip(1 - p_t, tiny, 1.0) ** gamma * ce
  if alpha is not None:
    per_element = per_element * (alpha * g + (1 - alpha) * (1 - g))
  if opts.mode == "binary" and opts.reduction == "none":
    return (per_element * valid)[..., 0]
  return reduce_elements(per_element, valid, opts.reduction)
