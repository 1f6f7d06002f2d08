"""Per-example transforms run inside Grain workers (NumPy only, no JAX/TF).

Training: rescale by `scale` -> (resize policy only: resize) ->
foreground-aware random resized crop -> augment.py's geometric then
photometric ops (flips, rotations, elastic; gamma, contrast, blur, noise). Evaluation: rescale by `scale` -> bring
to the fixed size by the policy. Under the pad and crop policies, training
crops come from the rescaled image itself, so training and evaluation see the
same pixel scale whatever each image's size. Images leave as float32 in [0, 1] (normalisation happens inside
the model, so attacks and export work in pixel space); masks as int32 with
`IGNORE_INDEX` where there is no label (padding).
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from chameleon_jax.data import images as imio
from chameleon_jax.data.images import to_unit_float
from chameleon_jax.data.labels import defect_pixels
from chameleon_jax.data.labels import IGNORE_INDEX
from chameleon_jax.data.augment import (AugmentConfig, geometric_ops,
                                        photometric_ops)


SIZE_POLICIES = ("resize", "pad", "crop")


def pad_to(image: np.ndarray, mask: np.ndarray, height: int, width: int,
           offset: tuple[int, int] = (0, 0)):
  """Pads to at least (height, width); padded mask pixels get IGNORE_INDEX.

  The image is padded by replicating its edge, not with zeros: a black frame
  would put an artificial edge next to real border pixels, which a model
  trained on crops from inside images mistakes for a defect.
  """
  h, w = mask.shape
  ph, pw = max(0, height - h), max(0, width - w)
  if not (ph or pw):
    return image, mask
  top, left = (min(offset[0], ph), min(offset[1], pw))
  pads = ((top, ph - top), (left, pw - left))
  image = np.pad(image, pads + ((0, 0),), mode="edge")
  mask = np.pad(mask, pads, mode="constant", constant_values=IGNORE_INDEX)
  return image, mask


def rescale(image: np.ndarray, mask: np.ndarray, scale: float):
  """Resamples by a fixed factor (the same for every image of a dataset)."""
  if scale == 1.0:
    return image, mask
  h, w = mask.shape
  nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
  return imio.resize_image(image, nh, nw), imio.resize_mask(mask, nh, nw)


def fit_size(image: np.ndarray, mask: np.ndarray, size: tuple[int, int],
             policy: str):
  """Brings an example to exactly `size` = (height, width) by `policy`.

  resize: bilinear image / nearest mask resize (aspect ratio not kept);
  pad:    downscale keeping aspect ratio if larger, then pad bottom/right
          (padding is ignored by losses and metrics);
  crop:   centre crop, padding where the image is smaller.
  """
  height, width = size
  if policy == "resize":
    return (imio.resize_image(image, height, width),
            imio.resize_mask(mask, height, width))
  if policy == "pad":
    h, w = mask.shape
    scale = min(1.0, height / h, width / w)
    if scale < 1.0:
      nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
      image, mask = imio.resize_image(image, nh, nw), imio.resize_mask(mask, nh, nw)
    return pad_to(image, mask, height, width)
  if policy == "crop":
    image, mask = pad_to(image, mask, height, width)
    top = (mask.shape[0] - height) // 2
    left = (mask.shape[1] - width) // 2
    return (image[top:top + height, left:left + width],
            mask[top:top + height, left:left + width])
  raise ValueError(f"Unknown size policy {policy!r}; expected one of "
                   f"{SIZE_POLICIES}.")


def _crop_origin(rng: np.random.Generator, mask: np.ndarray, ch: int, cw: int,
                 foreground_fraction: float) -> tuple[int, int]:
  h, w = mask.shape
  if rng.random() < foreground_fraction:
    ys, xs = np.nonzero(defect_pixels(mask))
    if ys.size:
      k = rng.integers(ys.size)
      top = int(ys[k]) - ch // 2 + int(rng.integers(-(ch // 4), ch // 4 + 1))
      left = int(xs[k]) - cw // 2 + int(rng.integers(-(cw // 4), cw // 4 + 1))
      return int(np.clip(top, 0, h - ch)), int(np.clip(left, 0, w - cw))
  return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))


class TrainTransform(grain.transforms.RandomMap):
  """Decoded record -> augmented training example of a fixed size."""

  def __init__(self, size: tuple[int, int] | None, policy: str,
               augment: AugmentConfig, scale: float = 1.0):
    self.size, self.policy, self.augment = size, policy, augment
    self.scale = scale

  def random_map(self, element: dict[str, Any], rng: np.random.Generator):
    aug = self.augment
    image, mask = rescale(element["image"], element["mask"], self.scale)
    if self.size is not None and (self.policy == "resize" or aug.crop_size is None):
      image, mask = fit_size(image, mask, self.size, self.policy)
    ch, cw = aug.crop_size or mask.shape
    scale = rng.uniform(*aug.crop_scale)
    sh, sw = max(1, int(round(ch * scale))), max(1, int(round(cw * scale)))
    image, mask = pad_to(image, mask, sh, sw,
                         offset=(int(rng.integers(0, max(1, sh - mask.shape[0]) + 1)),
                                 int(rng.integers(0, max(1, sw - mask.shape[1]) + 1))))
    top, left = _crop_origin(rng, mask, sh, sw, aug.foreground_crop_fraction)
    image = image[top:top + sh, left:left + sw]
    mask = mask[top:top + sh, left:left + sw]
    if (sh, sw) != (ch, cw):
      image, mask = imio.resize_image(image, ch, cw), imio.resize_mask(mask, ch, cw)
    x, mask = geometric_ops(to_unit_float(image), mask, rng, aug)
    x = photometric_ops(x, rng, aug)
    return {"image": x,
            "mask": np.ascontiguousarray(mask, dtype=np.int32),
            "label": element["label"]}


class EvalTransform(grain.transforms.Map):
  """Decoded record -> fixed-size evaluation example (no randomness)."""

  def __init__(self, size: tuple[int, int], policy: str, scale: float = 1.0):
    self.size, self.policy, self.scale = size, policy, scale

  def map(self, element: dict[str, Any]):
    image, mask = rescale(element["image"], element["mask"], self.scale)
    image, mask = fit_size(image, mask, self.size, self.policy)
    out = {"image": to_unit_float(image),
           "mask": np.ascontiguousarray(mask, dtype=np.int32),
           "label": element["label"]}
    if "index" in element:
      out["index"] = element["index"]
    return out
