"""Lovász losses (Berman et al. 2018): convex surrogates of the Jaccard loss.

Binary hinge on logits: errors e = 1 - x (2y - 1), sorted descending; Jaccard
gradient J_i = 1 - (G - cumsum g)_i / (G + cumsum(1 - g))_i;
loss = <relu(e_sorted), [J_1, J_2 - J_1, ...]>.
Softmax: the same with errors |g_c - p_c| per class.

Shapes stay static for jit: ignored elements are sorted last with zero error,
so they change neither the sort of valid elements nor their weights.
Empty targets (per unit: a class, or an image-class pair): "penalize" keeps
units whose target is empty (for softmax their errors are the predicted
probabilities, so false positives cost; the binary hinge on an empty target
costs relu(1 + max logit)); "exclude" skips them (the reference "present"
mode: with reduce_over="image", Lovász-softmax averages the present classes
within each image first, then the images, as Berman et al.'s and SMP's
per-image mode do); "zero" counts them as 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chameleon_jax.losses.vocabulary import (Options, as_float, probabilities,
                                             reduce_units, region_channels,
                                             targets)


def _lovasz_grad(g_sorted: jax.Array) -> jax.Array:
  """Gradient of the Lovász extension of Jaccard w.r.t. sorted errors."""
  total = g_sorted.sum(-1, keepdims=True)
  intersection = total - jnp.cumsum(g_sorted, -1)
  union = total + jnp.cumsum(1 - g_sorted, -1)
  jac = 1 - intersection / jnp.maximum(union, 1e-12)
  return jnp.concatenate([jac[..., :1], jac[..., 1:] - jac[..., :-1]], -1)


def _flat(x: jax.Array, per_image: bool) -> jax.Array:
  """(B, ..., C) -> (units, C, N): per image (B, C, N) or batch (1, C, N)."""
  b, c = x.shape[0], x.shape[-1]
  x = jnp.moveaxis(x.reshape(b, -1, c), -1, 1)
  return x if per_image else jnp.moveaxis(x, 0, 1).reshape(1, c, -1)


def _sorted_loss(errors, g, valid, hinge: bool):
  key = jnp.where(valid > 0, errors, -jnp.inf)
  order = jnp.argsort(-key, axis=-1)
  e = jnp.take_along_axis(errors, order, -1)
  g_s = jnp.take_along_axis(g, order, -1)
  v_s = jnp.take_along_axis(valid, order, -1)
  contribution = (jax.nn.relu(e) if hinge else e) * v_s
  return (contribution * jax.lax.stop_gradient(_lovasz_grad(g_s * v_s))).sum(-1)


def lovasz(pred: jax.Array, target: jax.Array, opts: Options) -> jax.Array:
  """Binary/multilabel: Lovász hinge on logits. Multiclass: Lovász-softmax."""
  g, valid = targets(pred, target, opts)
  per_image = opts.reduce_over == "image"
  if opts.mode == "multiclass":
    p = probabilities(pred, opts)
    p, g, valid = (region_channels(x, opts) for x in (p, g, valid))
    errors = jnp.abs(g - p)
    hinge = False
  else:
    if not opts.from_logits:
      raise ValueError("The Lovász hinge needs logits (from_logits=True).")
    x = as_float(pred)
    errors = 1 - x * (2 * g - 1)
    hinge = True
  errors, g, valid = (_flat(t, per_image) for t in (errors, g, valid))
  loss = _sorted_loss(errors, g, valid, hinge)  # (units, C)
  empty = (g * valid).sum(-1) == 0
  if (per_image and not hinge and opts.empty_target == "exclude"
      and opts.reduction == "mean"):
    # The reference "present" mode per image: the mean over the classes
    # present in each image (0 for an image with none), then over images.
    present = (~empty).astype(loss.dtype)
    per_image_loss = (loss * present).sum(-1) / jnp.maximum(
        present.sum(-1), 1.0)
    return per_image_loss.mean()
  return reduce_units(loss, empty, opts, None)
