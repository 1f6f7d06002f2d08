"""The dataset fingerprint: what a config planner needs to know about the data.

Computed in one streaming pass during ingest (`Fingerprint.add` per item,
memory bounded by the sample caps) and written as `fingerprint.json` with a
versioned schema. The JSON is deterministic: the same items give the same
bytes (keys sorted, values rounded to 10 significant digits, samples chosen
by content hash, so even the item order does not matter for percentiles).

Contents (schema version 2):
  images       count, with_mask, height/width (min, median, max), distinct
               sizes, channel counts, bit depths, image-level label counts;
               texture: percentiles over images of ln(Ex / Ey), the mean
               squared difference between horizontal neighbours over that
               between vertical ones (channels averaged): > 0 where the
               texture runs vertically (stripes, grinding marks), ~0 where
               it has no direction (version 2; absent in version 1)
  intensity    per channel, in the image's own units (0..255 or 0..65535),
               over all pixels and over foreground pixels: mean and std
               (exact, every pixel), percentiles 0.5 / 50 / 99.5 (from a
               sample of at most `pixel_cap` pixels; exact when fewer), and
               whether the percentiles were sampled
  classes      per class: pixel count and frequency among labelled pixels,
               images containing it and their fraction, the class's share of
               an image that contains it (mean, median), connected components
               (8-connectivity: count, per image mean, area percentiles)
  masks        empty-mask fraction, label density (mean labelled-foreground
               share per image), ignore-pixel fraction; component_area:
               area percentiles of every defect component, classes pooled
               (version 2)
Classification-only items (no mask) count in `images` and `intensity` only.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Sequence

import numpy as np
from scipy import ndimage

from chameleon_jax.data.sampling import BottomK, item_rng
from chameleon_jax.data.labels import EIGHT_CONNECTED, defect_pixels
from chameleon_jax.data.sources import IGNORE_VALUE

SCHEMA_VERSION = 2
PERCENTILES = (0.5, 50.0, 99.5)
AREA_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
TEXTURE_PERCENTILES = (5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0)
TEXTURE_FLOOR = 1e-9  # Of Ex + Ey: ln-ratios stay within +-20.7.


class _Moments:
  """Exact running mean/std per channel (Chan et al. pairwise merge)."""

  def __init__(self, channels: int):
    self.n = 0
    self.mean = np.zeros(channels)
    self.m2 = np.zeros(channels)

  def add(self, pixels: np.ndarray) -> None:
    if not len(pixels):
      return
    pixels = pixels.astype(np.float64)
    n_b = len(pixels)
    mean_b = pixels.mean(axis=0)
    m2_b = ((pixels - mean_b) ** 2).sum(axis=0)
    n = self.n + n_b
    delta = mean_b - self.mean
    self.mean = self.mean + delta * n_b / n
    self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / n
    self.n = n

  def summary(self, c: int) -> dict:
    if not self.n:
      return {"mean": None, "std": None}
    return {"mean": self.mean[c], "std": math.sqrt(self.m2[c] / self.n)}


def texture_log_ratio(image: np.ndarray) -> float | None:
  """ln(Ex / Ey) of an (H, W, C) image: the mean squared difference between
  horizontal neighbours over that between vertical ones, channels averaged
  first; None for a flat image or one a single pixel wide or high.

  Where one is 0 (perfect stripes) the value stays finite: both terms carry
  TEXTURE_FLOOR of their sum, which bounds it by +-ln(1 / TEXTURE_FLOOR).

  Example: I(y, x) = x + 2y gives ln(1 / 4); vertical stripes a large
  positive value and their 90-degree turn its negation; white noise ~0.
  """
  grey = image.astype(np.float64).mean(axis=-1)
  if min(grey.shape) < 2:
    return None
  ex = float(np.mean(np.diff(grey, axis=1) ** 2))
  ey = float(np.mean(np.diff(grey, axis=0) ** 2))
  floor = TEXTURE_FLOOR * (ex + ey)
  if floor <= 0:
    return None
  return math.log((ex + floor) / (ey + floor))


def _percentiles(values: np.ndarray, qs: Sequence[float]) -> dict:
  if not len(values):
    return {f"p{q:g}": None for q in qs}
  return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(values, qs))}


def _round(value):
  """Floats to 10 significant digits (stable text), recursively."""
  if isinstance(value, float):
    return float(f"{value:.10g}") if math.isfinite(value) else None
  if isinstance(value, dict):
    return {str(k): _round(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_round(v) for v in value]
  if isinstance(value, np.generic):
    return _round(value.item())
  return value


class Fingerprint:
  """Accumulates the fingerprint over items; `result()` gives the dict."""

  def __init__(self, class_names: Sequence[str], channels: int,
               pixel_cap: int = 1_000_000, area_cap: int = 100_000):
    self.class_names = list(class_names)
    self.channels = channels
    k = len(self.class_names)
    self.heights, self.widths = [], []
    self.sizes: Counter = Counter()
    self.channel_counts: Counter = Counter()
    self.bit_depths: Counter = Counter()
    self.labels: Counter = Counter()
    self.num_images = self.with_mask = self.empty = 0
    self.all_moments, self.fg_moments = _Moments(channels), _Moments(channels)
    self.all_sample = BottomK(pixel_cap, channels)
    self.fg_sample = BottomK(pixel_cap, channels)
    self.class_pixels = np.zeros(k, np.int64)
    self.labelled_pixels = self.ignore_pixels = self.total_pixels = 0
    self.images_with = np.zeros(k, np.int64)
    self.shares: list[list[float]] = [[] for _ in range(k)]
    self.components = np.zeros(k, np.int64)
    self.areas = [BottomK(area_cap, 1) for _ in range(k)]
    self.all_areas = BottomK(area_cap, 1)
    self.densities: list[float] = []
    self.texture: list[float] = []

  def add(self, image: np.ndarray, mask: np.ndarray, has_mask: bool,
          label: int, content_hash: str) -> None:
    h, w, c = image.shape
    self.num_images += 1
    self.heights.append(h)
    self.widths.append(w)
    self.sizes[(h, w)] += 1
    self.channel_counts[c] += 1
    self.bit_depths[image.dtype.itemsize * 8] += 1
    self.labels[int(label)] += 1
    ratio = texture_log_ratio(image)
    if ratio is not None:
      self.texture.append(ratio)
    pixels = image.reshape(-1, c)
    self.all_moments.add(pixels)
    self.all_sample.offer(pixels, item_rng(content_hash, "all"))
    if not has_mask:
      return
    self.with_mask += 1
    flat = mask.ravel()
    foreground = defect_pixels(flat)
    self.fg_moments.add(pixels[foreground])
    self.fg_sample.offer(pixels[foreground], item_rng(content_hash, "fg"))
    counts = np.bincount(flat, minlength=IGNORE_VALUE + 1)
    ignore = int(counts[IGNORE_VALUE])
    labelled = flat.size - ignore
    self.total_pixels += flat.size
    self.ignore_pixels += ignore
    self.labelled_pixels += labelled
    self.class_pixels += counts[:len(self.class_names)]
    fg = int(foreground.sum())
    self.empty += fg == 0
    self.densities.append(fg / labelled if labelled else 0.0)
    rng = item_rng(content_hash, "areas")
    pooled = []
    for k in range(1, len(self.class_names)):
      if not counts[k]:
        continue
      self.images_with[k] += 1
      self.shares[k].append(counts[k] / labelled)
      components, n = ndimage.label(mask == k, structure=EIGHT_CONNECTED)
      self.components[k] += n
      self.areas[k].offer(np.bincount(components.ravel())[1:], rng)
      pooled.append(np.bincount(components.ravel())[1:])
    if pooled:
      self.all_areas.offer(np.concatenate(pooled),
                           item_rng(content_hash, "all_areas"))
    if counts[0]:
      self.images_with[0] += 1
      self.shares[0].append(counts[0] / labelled)

  def _intensity(self) -> dict:
    out = {}
    all_values = self.all_sample.values()
    fg_values = self.fg_sample.values()
    for c in range(self.channels):
      out[f"channel_{c}"] = {
          "all": {**self.all_moments.summary(c),
                  **_percentiles(all_values[:, c], PERCENTILES),
                  "pixels": self.all_moments.n,
                  "sampled": self.all_sample.sampled},
          "foreground": {**self.fg_moments.summary(c),
                         **_percentiles(fg_values[:, c], PERCENTILES),
                         "pixels": self.fg_moments.n,
                         "sampled": self.fg_sample.sampled},
      }
    return out

  def _classes(self) -> dict:
    out = {}
    for k, name in enumerate(self.class_names):
      areas = self.areas[k].values()[:, 0]
      shares = np.asarray(self.shares[k])
      entry = {
          "index": k,
          "pixels": int(self.class_pixels[k]),
          "pixel_frequency": (self.class_pixels[k] / self.labelled_pixels
                              if self.labelled_pixels else 0.0),
          "images": int(self.images_with[k]),
          "image_fraction": (self.images_with[k] / self.with_mask
                             if self.with_mask else 0.0),
          "share_of_image": {
              "mean": float(shares.mean()) if len(shares) else None,
              "median": float(np.median(shares)) if len(shares) else None},
          "image_labels": self.labels.get(k, 0),
      }
      if k:
        entry["components"] = {
            "count": int(self.components[k]),
            "per_image": (self.components[k] / self.images_with[k]
                          if self.images_with[k] else 0.0),
            "area": {**_percentiles(areas, AREA_PERCENTILES),
                     "min": float(areas.min()) if len(areas) else None,
                     "max": float(areas.max()) if len(areas) else None,
                     "sampled": self.areas[k].sampled}}
      out[name] = entry
    return out

  def result(self) -> dict:
    heights, widths = np.asarray(self.heights), np.asarray(self.widths)

    def span(v):
      return {"min": int(v.min()), "median": float(np.median(v)),
              "max": int(v.max())} if len(v) else {}

    return _round({
        "schema_version": SCHEMA_VERSION,
        "images": {
            "count": self.num_images, "with_mask": self.with_mask,
            "height": span(heights), "width": span(widths),
            "distinct_sizes": len(self.sizes),
            "channels": {str(k): v for k, v in sorted(self.channel_counts.items())},
            "bit_depth": {str(k): v for k, v in sorted(self.bit_depths.items())},
            "labels": {self.class_names[k] if k < len(self.class_names)
                       else str(k): v for k, v in sorted(self.labels.items())},
            "texture": {"measured": len(self.texture),
                        **_percentiles(np.asarray(self.texture),
                                       TEXTURE_PERCENTILES)},
        },
        "intensity": self._intensity(),
        "classes": self._classes(),
        "masks": {
            "empty": self.empty,
            "empty_fraction": self.empty / self.with_mask if self.with_mask else 0.0,
            "label_density": (float(np.mean(self.densities))
                              if self.densities else 0.0),
            "ignore_fraction": (self.ignore_pixels / self.total_pixels
                                if self.total_pixels else 0.0),
            "component_area": {
                **_percentiles(self.all_areas.values()[:, 0],
                               AREA_PERCENTILES),
                "sampled": self.all_areas.sampled},
        },
    })


def dumps(fingerprint: dict) -> str:
  """The canonical text of a fingerprint (what fingerprint.json holds)."""
  return json.dumps(fingerprint, indent=1, sort_keys=True) + "\n"
