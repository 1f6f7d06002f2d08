"""Pictures for people: image | ground truth | prediction, side by side; plots
as PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from chameleon_jax.data.labels import IGNORE_INDEX

# Class colours (RGB), background transparent; cycles for many classes.
PALETTE = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
], np.float32)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """(H, W, C) float in [0, 1] or uint -> (H, W, 3) uint8 for display."""
  if np.issubdtype(image.dtype, np.integer):
    image = image.astype(np.float32) / np.iinfo(image.dtype).max
  image = np.clip(image, 0, 1)
  if image.shape[2] == 1:
    image = np.repeat(image, 3, axis=2)
  elif image.shape[2] != 3:
    image = np.repeat(image[:, :, :1], 3, axis=2)  # False colour: channel 0.
  return np.rint(image * 255).astype(np.uint8)


def colorize(image_rgb: np.ndarray, mask: np.ndarray,
             alpha: float = 0.55) -> np.ndarray:
  """Blends class colours over an RGB image; ignored pixels are hatched grey."""
  out = image_rgb.astype(np.float32)
  labels = np.where(mask == IGNORE_INDEX, 0, mask)
  colours = PALETTE[1:][(labels - 1) % (len(PALETTE) - 1)]
  fg = (labels > 0)[..., None]
  out = np.where(fg, (1 - alpha) * out + alpha * colours, out)
  ignored = (mask == IGNORE_INDEX)
  out[ignored] = 0.5 * out[ignored] + 64
  return np.rint(out).astype(np.uint8)


def panel(image: np.ndarray, truth: np.ndarray | None,
          prediction: np.ndarray) -> np.ndarray:
  """[image | truth overlay | prediction overlay] (truth omitted if None).

  Pixels the truth marks as ignored (padding) are shown ignored in the
  prediction too: they are not scored.
  """
  rgb = to_rgb_uint8(image)
  tiles = [rgb]
  if truth is not None:
    tiles.append(colorize(rgb, truth))
    prediction = np.where(truth == IGNORE_INDEX, IGNORE_INDEX, prediction)
  tiles.append(colorize(rgb, prediction))
  gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
  parts = []
  for tile in tiles:
    parts += [tile, gap]
  return np.concatenate(parts[:-1], axis=1)


def figure_png(fig, dpi: int = 90) -> bytes:
  """A matplotlib figure as PNG bytes (the figure is closed): plots that
  are inlined into self-contained HTML pages."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  return buf.getvalue()
