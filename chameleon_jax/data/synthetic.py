"""Built-in synthetic defect data: textured surfaces with small, labelled defects.

The generator imitates industrial inspection images: a smooth, low-frequency
shading, fine sensor grain and optional brushing streaks make the background;
three defect classes with realistic sizes are painted on top, with exact masks:

  1 crack  - thin dark polyline (1-2 px wide), random-walk shaped;
  2 spot   - round blowhole, darker or brighter than the surface, soft rim;
  3 stain  - irregular blob with a colour/brightness shift and a soft border.

By default ~70% of images are defect-free and each defect covers 0.1-2% of
the image, the imbalance real quality-control data has. Everything is
deterministic from `seed`: item i depends only on (seed, i).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
from scipy import ndimage

CLASS_NAMES = ("background", "crack", "spot", "stain")


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """What to generate. Sizes are (height, width) ranges, inclusive."""
  num_images: int = 600
  seed: int = 0
  channels: int = 1
  min_size: tuple[int, int] = (96, 96)
  max_size: tuple[int, int] = (96, 96)
  empty_fraction: float = 0.7
  min_defect_fraction: float = 0.001
  max_defect_fraction: float = 0.02
  max_defects_per_image: int = 2


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: float) -> np.ndarray:
  field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
  return field / (field.std() + 1e-8)


def _background(rng: np.random.Generator, h: int, w: int,
                channels: int) -> np.ndarray:
  base = rng.uniform(0.35, 0.65)
  shade = 0.06 * _smooth_noise(rng, (h, w), sigma=max(h, w) / 6)
  grain = 0.02 * rng.standard_normal((h, w))
  surface = base + shade + grain
  if rng.random() < 0.5:  # Brushed-metal streaks along one axis.
    streaks = 0.02 * _smooth_noise(rng, (1, w), sigma=1.0)
    surface = surface + (streaks if rng.random() < 0.5 else streaks.T[:h, :1]
                         if h <= w else streaks)
  image = np.repeat(surface[:, :, None], channels, axis=2)
  if channels > 1:  # A mild per-channel tint, as false-colour sensors give.
    image = image * rng.uniform(0.85, 1.15, size=(1, 1, channels))
  return image


def _crack(rng, h, w, area):
  """A random-walk polyline rasterised with a 1-2 px pen; returns a bool mask."""
  width = 1 if rng.random() < 0.5 else 2
  length = max(6, int(area / width))
  y, x = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
  angle = rng.uniform(0, 2 * np.pi)
  mask = np.zeros((h, w), bool)
  for _ in range(length):
    angle += rng.normal(0, 0.25)
    y = np.clip(y + np.sin(angle), 0, h - 1)
    x = np.clip(x + np.cos(angle), 0, w - 1)
    mask[int(y):int(y) + width, int(x):int(x) + width] = True
  return mask


def _blob(rng, h, w, area, irregular):
  radius = np.sqrt(area / np.pi)
  cy = rng.uniform(radius + 1, max(radius + 2, h - radius - 1))
  cx = rng.uniform(radius + 1, max(radius + 2, w - radius - 1))
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  dist = np.hypot((yy - cy) / rng.uniform(0.8, 1.25), xx - cx)
  if irregular:
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = sum(rng.uniform(0.05, 0.18) * np.cos(k * theta + rng.uniform(0, 6))
                 for k in (2, 3, 5))
    dist = dist / (1 + wobble)
  return dist <= radius


def render(spec: SyntheticSpec, index: int) -> tuple[np.ndarray, np.ndarray]:
  """Image `index` of the dataset: (uint8 (H, W, C) image, uint8 (H, W) mask)."""
  rng = np.random.default_rng([spec.seed, index])
  h = int(rng.integers(spec.min_size[0], spec.max_size[0] + 1))
  w = int(rng.integers(spec.min_size[1], spec.max_size[1] + 1))
  image = _background(rng, h, w, spec.channels)
  mask = np.zeros((h, w), np.uint8)
  if rng.random() >= spec.empty_fraction:
    for _ in range(int(rng.integers(1, spec.max_defects_per_image + 1))):
      cls = int(rng.integers(1, len(CLASS_NAMES)))
      area = h * w * np.exp(rng.uniform(np.log(spec.min_defect_fraction),
                                        np.log(spec.max_defect_fraction)))
      if cls == 1:
        region = _crack(rng, h, w, area)
        image[region] -= rng.uniform(0.2, 0.3)
      elif cls == 2:
        region = _blob(rng, h, w, area, irregular=False)
        sign = -1.0 if rng.random() < 0.7 else 1.0
        image[region] += sign * rng.uniform(0.2, 0.3)
      else:
        region = _blob(rng, h, w, area, irregular=True)
        tint = rng.uniform(0.12, 0.2) * (
            rng.uniform(0.5, 1.0, spec.channels) if spec.channels > 1 else 1.0)
        image[region] += tint
      mask[region] = cls
  image = np.clip(image, 0.0, 1.0)
  return (np.rint(image * 255).astype(np.uint8), mask)


def generate(spec: SyntheticSpec) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  """Yields (item id, image, mask) for every image of `spec`."""
  for i in range(spec.num_images):
    image, mask = render(spec, i)
    yield f"synthetic_{i:06d}", image, mask


def write_folder(spec: SyntheticSpec, root) -> None:
  """Writes the dataset as an image+mask folder pair (images/, masks/) of PNGs.

  Used by tests and demos of folder ingestion and of `predict` on a folder.
  """
  from pathlib import Path
  from chameleon_jax.data.images import save_png
  root = Path(root)
  (root / "images").mkdir(parents=True, exist_ok=True)
  (root / "masks").mkdir(parents=True, exist_ok=True)
  for item_id, image, mask in generate(spec):
    save_png(root / "images" / f"{item_id}.png", image)
    save_png(root / "masks" / f"{item_id}.png", mask)
