"""Boundary loss (Kervadec et al. 2019): mean over pixels of phi_G * P.

phi_G is the signed distance to the target's boundary: positive outside the
object (distance to the nearest object pixel), negative inside (minus the
distance to the nearest background pixel), computed inside `jit` as the
chessboard distance (iterated 3x3 dilation/erosion, exact for that metric)
and clipped at `max_distance`, then divided by it. Predicted probability far
from an object costs up to 1 per pixel; inside an object it earns up to -1.

Empty target: phi = +1 everywhere (every pixel is "far outside"), so any
predicted foreground is penalised. The loss is usually combined with a
region loss (e.g. `compound` with Dice), as in the paper. Ignored pixels are
background for the distance and excluded from the mean. 2-D (B, H, W, K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chameleon_jax.losses.vocabulary import (Options, probabilities,
                                             reduce_elements, region_channels,
                                             targets)


def _dilate(x: jax.Array) -> jax.Array:
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1),
                               (1, 1, 1, 1), "SAME")


def chessboard_distance(mask: jax.Array, max_distance: int) -> jax.Array:
  """Distance of each pixel of (B, H, W, K) to the nearest True pixel of its
  channel, in chessboard steps (0 on True pixels), clipped at max_distance."""
  reached = mask.astype(jnp.float32)

  def step(k, carry):
    reached, dist = carry
    grown = _dilate(reached)
    dist = jnp.where((grown > 0) & (reached == 0), k, dist)
    return grown, dist

  dist = jnp.full(mask.shape, float(max_distance))
  dist = jnp.where(mask, 0.0, dist)
  _, dist = jax.lax.fori_loop(1, max_distance, step, (reached, dist))
  return dist


def signed_distance(mask: jax.Array, max_distance: int) -> jax.Array:
  """+distance outside objects, -distance inside, clipped to +-max_distance."""
  outside = chessboard_distance(mask, max_distance)
  inside = chessboard_distance(~mask, max_distance)
  return outside - inside


def boundary(pred: jax.Array, target: jax.Array, opts: Options,
             max_distance: int = 20) -> jax.Array:
  """Boundary loss (Kervadec et al. 2019): mean of p_c * phi_c, phi the
  signed chessboard distance to class c's boundary (negative inside),
  clipped to `max_distance`, computed in-jit.

  Args:
    pred: (B, H, W, K) logits (or probabilities with from_logits=False).
    target: (B, H, W) labels (multiclass) or (B, H, W[, K]) in {0, 1}.
    opts: the shared options (mode, from_logits, include_background,
      ignore_index, reduction).
    max_distance: distance clip in pixels (20).

  Raises:
    ValueError: predictions that are not 2-D images (B, H, W, K).

  Example:
    >>> build_loss("compound", terms=[{"name": "dice"},
    ...     {"name": "boundary", "weight": 0.1}])
  """
  if pred.ndim != 4:
    raise ValueError(f"boundary loss is 2-D: (B, H, W, K) expected, got "
                     f"{pred.shape}.")
  g, valid = targets(pred, target, opts)
  p = probabilities(pred, opts)
  p, g, valid = (region_channels(x, opts) for x in (p, g, valid))
  phi = jax.lax.stop_gradient(
      signed_distance(g > 0, max_distance) / max_distance)
  return reduce_elements(phi * p, valid, opts.reduction)
