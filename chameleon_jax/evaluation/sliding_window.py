"""Sliding-window inference for images larger than the model was trained on.

The image is covered by windows of the training size, `overlap` apart (the
last window in each direction is shifted to end at the border, so every pixel
is covered and no window hangs over the edge); each window's prediction is
weighted by a Gaussian importance map (sigma = `sigma_scale` x window size,
as nnU-Net and MONAI do) and the weighted sum is divided by the summed
weights. Predictions near a window's border, where the model sees the least
context, thus count least, and adjacent windows fade into each other without
seams. Blend probabilities, not logits or class maps.

Everything runs in one jitted function: windows are cut with
`lax.dynamic_slice` in batches of `batch_size` (a `lax.scan`, so the program
size does not grow with the image), and accumulated on the device. Images
smaller than a window are edge-padded to it and cropped back.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

BLENDS = ("gaussian", "constant")


def window_origins(size: int, window: int, overlap: float) -> list[int]:
  """Start offsets along one axis: stride window*(1-overlap), last flush."""
  if not 0.0 <= overlap < 1.0:
    raise ValueError(f"overlap={overlap}; expected 0 <= overlap < 1.")
  if size <= window:
    return [0]
  stride = max(1, int(round(window * (1.0 - overlap))))
  starts = list(range(0, size - window, stride))
  return starts + [size - window]


def importance_map(window: tuple[int, int], blend: str,
                   sigma_scale: float = 0.125) -> np.ndarray:
  """(h, w) weights, max 1 (Gaussian: ~3e-4 at an edge, ~1e-7 at a corner).

  No floor is added beyond float32's tiny: a floor comparable to the edge
  weights would give a window's least reliable pixels a real say where the
  image border leaves only edge pixels to choose from.
  """
  if blend not in BLENDS:
    raise ValueError(f"blend={blend!r}; expected one of {BLENDS}.")
  if blend == "constant":
    return np.ones(window, np.float32)
  axes = []
  for n in window:
    x = np.arange(n) - (n - 1) / 2
    axes.append(np.exp(-0.5 * (x / (sigma_scale * n)) ** 2))
  weights = np.outer(*axes)
  weights /= weights.max()
  return np.maximum(weights, np.finfo(np.float32).tiny).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _compiled(predict: Callable, padded_shape: tuple[int, int, int],
              window: tuple[int, int], origins: tuple[tuple[int, int], ...],
              batch_size: int, blend: str, sigma_scale: float):
  weights = jnp.asarray(importance_map(window, blend, sigma_scale))
  n = len(origins)
  batches = -(-n // batch_size)
  # Pad the origin list to whole batches; padded entries get weight 0.
  table = np.asarray(origins + (origins[-1],) * (batches * batch_size - n),
                     np.int32).reshape(batches, batch_size, 2)
  valid = (np.arange(batches * batch_size) < n).astype(np.float32).reshape(
      batches, batch_size)
  h, w = window

  def run(image, args):
    cut = jax.vmap(lambda o: jax.lax.dynamic_slice(
        image, (o[0], o[1], 0), (h, w, padded_shape[2])))

    def step(carry, inputs):
      canvas, norm = carry
      starts, keep = inputs
      out = predict(*args, cut(starts)).astype(jnp.float32)  # (B, h, w, K)

      def add(i, carry):
        canvas, norm = carry
        weight = weights * keep[i]
        at = (starts[i, 0], starts[i, 1], 0)
        canvas = jax.lax.dynamic_update_slice(
            canvas, jax.lax.dynamic_slice(canvas, at, out.shape[1:])
            + out[i] * weight[..., None], at)
        norm = jax.lax.dynamic_update_slice(
            norm, jax.lax.dynamic_slice(norm, at[:2], window) + weight,
            at[:2])
        return canvas, norm

      return jax.lax.fori_loop(0, batch_size, add, (canvas, norm)), None

    classes = jax.eval_shape(
        predict, *args, jax.ShapeDtypeStruct(
            (batch_size, h, w, padded_shape[2]), image.dtype)).shape[-1]
    canvas = jnp.zeros(padded_shape[:2] + (classes,), jnp.float32)
    norm = jnp.zeros(padded_shape[:2], jnp.float32)
    (canvas, norm), _ = jax.lax.scan(step, (canvas, norm),
                                     (jnp.asarray(table), jnp.asarray(valid)))
    return canvas / norm[..., None]

  return jax.jit(run)


def sliding_window(predict: Callable[[jax.Array], jax.Array], image,
                   window: tuple[int, int], overlap: float = 0.5,
                   batch_size: int = 4, blend: str = "gaussian",
                   sigma_scale: float = 0.125, args: tuple = ()) -> jax.Array:
  """Blended (H, W, K) prediction of `predict` over an (H, W, C) image.

  Args:
    predict: (*args, (B, h, w, C) windows) -> (B, h, w, K) per-pixel
      probabilities; traced inside jit, so it must be a pure JAX function.
      Reusing the same function object for images of one shape reuses the
      compilation.
    image: (H, W, C) float image.
    window: (h, w), the model's training size (a multiple of its stride).
    overlap: fraction of a window shared with its neighbour (0.5: every
      interior pixel is seen by four windows).
    batch_size: windows per model call.
    blend: "gaussian" (default) or "constant" (plain averaging).
    args: leading arguments of `predict` (e.g. the model state), passed as
      jit arguments rather than baked into the program as constants.
  """
  image = jnp.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"image has shape {image.shape}; expected (H, W, C).")
  height, width, _ = image.shape
  h, w = int(window[0]), int(window[1])
  pad = ((0, max(0, h - height)), (0, max(0, w - width)), (0, 0))
  if any(p[1] for p in pad):
    image = jnp.pad(image, pad, mode="edge")
  rows = window_origins(image.shape[0], h, overlap)
  cols = window_origins(image.shape[1], w, overlap)
  origins = tuple((r, c) for r in rows for c in cols)
  run = _compiled(predict, tuple(image.shape), (h, w), origins,
                  int(batch_size), blend, float(sigma_scale))
  return run(image, tuple(args))[:height, :width]
