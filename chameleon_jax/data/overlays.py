"""Pictures for people: image | ground truth | prediction, side by side; plots
as PNG bytes."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from chameleon_jax.data.labels import IGNORE_INDEX

# Class colours (RGB), background transparent; cycles for many classes.
PALETTE = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
], np.float32)


def class_colours(labels) -> np.ndarray:
  """RGB (float32, (..., 3)) of class indices: 0 is PALETTE[0]; a defect
  class k > 0 cycles through PALETTE[1:], so any number of classes has one.
  The one colour rule of overlays, legends, mask PNGs and the label page."""
  labels = np.asarray(labels)
  cycled = PALETTE[1:][(labels - 1) % (len(PALETTE) - 1)]
  return np.where((labels > 0)[..., None], cycled, PALETTE[0])


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


def stretched_uint8(image: np.ndarray) -> np.ndarray:
  """An (H, W, C) image as 8-bit grey (H, W, 1) or RGB (H, W, 3) for a
  person to look at: uint8 as it is; other depths stretched between their
  0.5th and 99.5th percentiles (a 12-bit sensor in a 16-bit file uses a
  sixteenth of the range, and `to_rgb_uint8` would show it near black);
  2 or more than 3 channels shown by their first. Display only."""
  shown = image if image.shape[2] == 3 else image[:, :, :1]
  if shown.dtype == np.uint8:
    return shown
  values = shown.astype(np.float64)
  lo, hi = np.percentile(values, [0.5, 99.5])
  scaled = (values - lo) / max(hi - lo, 1e-12)
  return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)


def colorize(image_rgb: np.ndarray, mask: np.ndarray,
             alpha: float = 0.55) -> np.ndarray:
  """Blends class colours over an RGB image; ignored pixels are hatched grey."""
  out = image_rgb.astype(np.float32)
  labels = np.where(mask == IGNORE_INDEX, 0, mask)
  colours = class_colours(labels)
  fg = (labels > 0)[..., None]
  out = np.where(fg, (1 - alpha) * out + alpha * colours, out)
  ignored = (mask == IGNORE_INDEX)
  out[ignored] = 0.5 * out[ignored] + 64
  return np.rint(out).astype(np.uint8)


def panel(image: np.ndarray, truth: np.ndarray | None,
          prediction: np.ndarray, *, titles: Sequence[str] = (),
          class_names: Sequence[str] = (), min_height: int = 0
          ) -> np.ndarray:
  """[image | truth overlay | prediction overlay] (truth omitted if None).

  Pixels the truth marks as ignored (padding) are shown ignored in the
  prediction too: they are not scored.

  Args:
    image, truth, prediction: (H, W, C) image, (H, W) class maps.
    titles: one title per tile, written above it ("" = no title band).
    class_names: the legend below the tiles: each defect class's colour
      and name (class 0, the background, has none).
    min_height: tiles are enlarged by a whole factor (nearest neighbour)
      to at least this height, so defects of a few pixels stay visible.

  Example: panel(image, truth, pred, titles=("image", "truth",
  "prediction"), class_names=("ok", "scratch"), min_height=160).
  """
  rgb = to_rgb_uint8(image)
  tiles = [rgb]
  if truth is not None:
    tiles.append(colorize(rgb, truth))
    prediction = np.where(truth == IGNORE_INDEX, IGNORE_INDEX, prediction)
  tiles.append(colorize(rgb, prediction))
  factor = max(1, -(-min_height // rgb.shape[0])) if min_height else 1
  tiles = [t.repeat(factor, 0).repeat(factor, 1) for t in tiles]
  gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
  parts = []
  for tile in tiles:
    parts += [tile, gap]
  out = np.concatenate(parts[:-1], axis=1)
  if titles or class_names:
    out = _annotate(out, [t.shape[1] + 4 for t in tiles], titles,
                    class_names)
  return out


def _annotate(strip: np.ndarray, widths: list[int], titles: Sequence[str],
              class_names: Sequence[str]) -> np.ndarray:
  """`strip` with a title band above each tile and a colour legend below."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  band = 14
  top = band if titles else 0
  bottom = band if len(class_names) > 1 else 0
  canvas = Image.new("RGB", (strip.shape[1], strip.shape[0] + top + bottom),
                     (255, 255, 255))
  canvas.paste(Image.fromarray(strip), (0, top))
  draw = ImageDraw.Draw(canvas)
  x = 0
  for title, width in zip(titles, widths):
    draw.text((x + 2, 1), title, fill=(0, 0, 0))
    x += width
  x, y = 2, strip.shape[0] + top + 2
  for k, name in enumerate(class_names[1:], start=1):
    colour = tuple(int(c) for c in class_colours(k))
    draw.rectangle((x, y, x + 9, y + 9), fill=colour)
    draw.text((x + 12, y - 1), name, fill=(0, 0, 0))
    x += 12 + int(draw.textlength(name)) + 10
  return np.asarray(canvas)


def figure_png(fig, dpi: int = 90) -> bytes:
  """A matplotlib figure as PNG bytes (the figure is closed): plots that
  are inlined into self-contained HTML pages."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  return buf.getvalue()
