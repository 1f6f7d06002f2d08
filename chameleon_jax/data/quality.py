"""Per-image quality measurements and the flags derived from them.

`measure` runs once per item during ingest (cheap, O(pixels)); `flag` runs at
the end over every item's measurements, because "blurry" and "odd size" are
only meaningful relative to the rest of the dataset. Flags are reported,
never used to drop an item: a dark image may be exactly the defect a customer
cares about.

  dark / bright   mean intensity below / above a fraction of the dtype's range
  flat            intensity std below a fraction of the range (blank frames)
  blurry          variance of the Laplacian below a fraction of the dataset
                  median (focus measure of Pech-Pacheco et al. 2000)
  odd_aspect      long side / short side above a limit
  odd_size        area far from the dataset median, or a side below a minimum
"""

from __future__ import annotations

import dataclasses

import imagehash
import numpy as np
from PIL import Image
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """When an image is flagged (reported in quality.json, never dropped).

  Attributes:
    dark, bright: mean intensity (in [0, 1]) below / above which.
    flat: intensity standard deviation below which.
    blurry: Laplacian sharpness below this share of the dataset's median.
    aspect: width/height (or its inverse) above which.
    size_factor: area outside [median / f, median * f].
    min_side: a side shorter than this many pixels.
  """
  dark: float = 0.1
  bright: float = 0.9
  flat: float = 0.01
  blurry: float = 0.2  # of the median sharpness
  aspect: float = 4.0
  size_factor: float = 4.0  # area outside median / f .. median * f
  min_side: int = 32


def grey_unit(image: np.ndarray) -> np.ndarray:
  """(H, W, C) uint8/uint16 -> (H, W) float32 grey in [0, 1]."""
  scale = np.float32(np.iinfo(image.dtype).max) if np.issubdtype(
      image.dtype, np.integer) else np.float32(1)
  return image.astype(np.float32).mean(axis=2) / scale


def measure(image: np.ndarray) -> dict:
  """Intensity, focus and the perceptual hash of one image."""
  grey = grey_unit(image)
  phash = imagehash.phash(Image.fromarray(np.rint(grey * 255).astype(np.uint8)))
  return {
      "mean": float(grey.mean()), "std": float(grey.std()),
      "sharpness": float(ndimage.laplace(grey.astype(np.float64)).var()),
      "phash": int(str(phash), 16),
  }


def flag(records: list[dict], thresholds: Thresholds = Thresholds()
         ) -> list[list[str]]:
  """Flags per record; a record has height, width and `measure`'s fields."""
  if not records:
    return []
  t = thresholds
  sharp = np.median([r["sharpness"] for r in records])
  area = np.median([r["height"] * r["width"] for r in records])
  out = []
  for r in records:
    flags = []
    if r["mean"] < t.dark:
      flags.append("dark")
    if r["mean"] > t.bright:
      flags.append("bright")
    if r["std"] < t.flat:
      flags.append("flat")
    if r["sharpness"] < t.blurry * sharp:
      flags.append("blurry")
    h, w = r["height"], r["width"]
    if max(h, w) > t.aspect * min(h, w):
      flags.append("odd_aspect")
    if (h * w > t.size_factor * area or h * w * t.size_factor < area
        or min(h, w) < t.min_side):
      flags.append("odd_size")
    out.append(flags)
  return out
