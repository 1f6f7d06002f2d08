"""Decoding, encoding and geometric resizing of images and masks (PIL + NumPy).

Every decoder forces a full decode so that truncated or corrupt files fail here,
at ingest, with the file named, instead of later inside a training worker.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DecodeError(ValueError):
  """A file could not be decoded as an image."""


def _open(path, data: bytes | None):
  return Image.open(io.BytesIO(data) if data is not None else path)


def load_image(path: str | os.PathLike[str],
               data: bytes | None = None) -> np.ndarray:
  """Decodes an image file to an (H, W, C) array, keeping 8/16-bit depth.

  `data`, when given, are the file's bytes already read (`path` then only
  names the file in errors).
  """
  try:
    with _open(path, data) as img:
      img.load()  # Forces the full decode: truncated files raise here.
      if img.mode in ("I;16", "I;16B", "I;16L"):
        array = np.asarray(img, dtype=np.uint16)
      elif img.mode in ("L", "RGB"):
        array = np.asarray(img)
      elif img.mode == "P" or img.mode == "RGBA" or img.mode == "LA":
        array = np.asarray(img.convert("RGB"))
      else:
        array = np.asarray(img.convert("RGB"))
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DecodeError(f"{path}: cannot decode image ({e}).") from e
  if array.ndim == 2:
    array = array[:, :, None]
  return np.ascontiguousarray(array)


def load_mask(path: str | os.PathLike[str],
              data: bytes | None = None) -> np.ndarray:
  """Decodes a single-channel mask file to an (H, W) integer array."""
  try:
    with _open(path, data) as img:
      img.load()
      if img.mode in ("L", "P", "1"):
        array = np.asarray(img if img.mode != "1" else img.convert("L"))
      elif img.mode.startswith("I"):
        array = np.asarray(img).astype(np.int64)
      else:
        raise DecodeError(
            f"{path}: a mask must be single-channel (L, P, 1 or I), "
            f"got mode {img.mode!r}.")
  except DecodeError:
    raise
  except (OSError, SyntaxError, ValueError) as e:
    raise DecodeError(f"{path}: cannot decode mask ({e}).") from e
  return np.ascontiguousarray(array)


def save_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
  """Writes uint8 (H, W), (H, W, 1) or (H, W, 3) arrays as PNG, atomically."""
  array = np.asarray(array)
  if array.ndim == 3 and array.shape[2] == 1:
    array = array[:, :, 0]
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  Image.fromarray(array).save(tmp, format="PNG")
  os.replace(tmp, path)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of an (H, W, C) uint8/uint16/float array."""
  if image.shape[:2] == (height, width):
    return image
  channels = [
      np.asarray(Image.fromarray(image[:, :, c].astype(np.float32)).resize(
          (width, height), Image.BILINEAR))
      for c in range(image.shape[2])
  ]
  out = np.stack(channels, axis=-1)
  if np.issubdtype(image.dtype, np.integer):
    info = np.iinfo(image.dtype)
    out = np.clip(np.rint(out), info.min, info.max)
  return out.astype(image.dtype)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of an (H, W) label mask (labels never blend)."""
  if mask.shape[:2] == (height, width):
    return mask
  rows = (np.arange(height) + 0.5) * mask.shape[0] / height
  cols = (np.arange(width) + 0.5) * mask.shape[1] / width
  return mask[np.minimum(rows.astype(int), mask.shape[0] - 1)][
      :, np.minimum(cols.astype(int), mask.shape[1] - 1)]


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
  """Image files directly inside `folder`, sorted by name."""
  return sorted(p for p in Path(folder).iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
