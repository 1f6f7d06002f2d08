"""Decoding, encoding and geometric resizing of images and masks.

PIL decodes PNG/JPEG/BMP; tifffile decodes TIFF, which is where real sensor
data lives (16-bit grey microscopy, multi-channel false-colour stacks that PIL
cannot represent). Bit depth is kept: uint8 and uint16 arrays leave here
unchanged and are only scaled to [0, 1] by the pipeline's normalisation.

Every decoder forces a full decode so that truncated or corrupt files fail here,
at ingest, with the file named, instead of later inside a training worker.
Before decoding, the header's size is checked against the pixel limit
(`MAX_PIXELS`, `data.max_pixels` through `pixel_limit`): a small file that
claims a huge image is refused at the cost of reading its header, not of
decoding gigabytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile
from PIL import Image

from chameleon_jax import atomic
from chameleon_jax.data import overlays

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff")
SUPPORTED_DTYPES = (np.uint8, np.uint16)


# Pixels (H x W) an image or mask may have: data.max_pixels' default. 8192 x
# 8192, 2.7x the largest images the product is built for (3000 px); an 8-bit
# RGB image at the limit decodes to 200 MB.
MAX_PIXELS = 8192 * 8192
_max_pixels = contextvars.ContextVar("max_pixels", default=MAX_PIXELS)


class DecodeError(ValueError):
  """A file could not be decoded as an image."""


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
  """Within the block, decoders refuse images over `max_pixels` (H x W)
  from their header (`--mode=ingest` and `--mode=predict` apply
  data.max_pixels this way).

  Example:
    >>> with pixel_limit(30_000_000):
    ...   image = load_image("line_scan.png")
  """
  token = _max_pixels.set(int(max_pixels))
  try:
    yield
  finally:
    _max_pixels.reset(token)


def check_pixels(path, height: int, width: int) -> None:
  """Raises DecodeError when height x width exceeds the pixel limit."""
  limit = _max_pixels.get()
  if height * width > limit:
    raise DecodeError(
        f"{path}: {width} x {height} = {width * height / 1e6:.1f} Mpx exceeds "
        f"data.max_pixels = {limit} ({limit / 1e6:.1f} Mpx); refused before "
        "decoding. Raise data.max_pixels to accept images this large.")


def _open(path, data: bytes | None):
  """The image, header read, not decoded; over the pixel limit: refused.
  Pillow's own bomb check runs first (its warning is left to ours; its
  error, above 2 x Image.MAX_IMAGE_PIXELS, refuses whatever the limit)."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data) if data is not None else path)
  except Image.DecompressionBombError as e:
    raise DecodeError(f"{path}: refused before decoding ({e}).") from e
  except Image.UnidentifiedImageError as e:  # Its text names a BytesIO.
    head = data[:16] if data is not None else Path(path).read_bytes()[:16]
    if not head:
      raise DecodeError(f"{path}: empty file (0 bytes).") from e
    raise DecodeError(f"{path}: not an image (no image format's header; "
                      f"the file starts {head!r}).") from e
  try:
    check_pixels(path, image.height, image.width)
  except DecodeError:
    image.close()
    raise
  return image


def _load_tiff(path, data: bytes | None) -> np.ndarray:
  """A TIFF's first page (series 0) as (H, W) or (H, W, C), any channel count.

  Planar (C, H, W) stacks, as microscopy and multispectral tools write them,
  are transposed to channels-last when the first axis is the short one.
  """
  try:
    with tifffile.TiffFile(io.BytesIO(data) if data is not None
                           else path) as tif:
      shape = sorted(tif.series[0].levels[0].shape)
      if len(shape) >= 2:  # The two largest axes are the image's.
        check_pixels(path, shape[-1], shape[-2])
      array = tif.series[0].levels[0].asarray()
  except DecodeError:
    raise
  except Exception as e:  # tifffile raises many types on corrupt input.
    raise DecodeError(f"{path}: cannot decode TIFF ({type(e).__name__}: "
                      f"{e}).") from e
  if array.size == 0:
    raise DecodeError(f"{path}: cannot decode TIFF (no readable image data).")
  if array.ndim == 3 and array.shape[0] < min(array.shape[1:]) and \
      array.shape[0] <= 16 and array.shape[2] > 16:
    array = np.moveaxis(array, 0, -1)
  if array.ndim not in (2, 3):
    raise DecodeError(f"{path}: TIFF has shape {array.shape}; expected one "
                      "2-D image (H, W) or (H, W, C) / (C, H, W).")
  if array.dtype == bool:
    array = array.astype(np.uint8)
  if array.dtype not in SUPPORTED_DTYPES:
    raise DecodeError(f"{path}: TIFF sample type {array.dtype} is not "
                      "supported; expected 8- or 16-bit unsigned integers.")
  return array


def bit_depth(image: np.ndarray) -> int:
  """Bits per sample of a decoded image (8 or 16; 32 for float32)."""
  return np.dtype(image.dtype).itemsize * 8


def to_unit_float(image: np.ndarray) -> np.ndarray:
  """uint8/uint16 -> float32 in [0, 1] by the dtype's range; floats pass
  through (the one scaling of training, prediction and monitoring)."""
  if np.issubdtype(image.dtype, np.integer):
    return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
  return image.astype(np.float32)


def _note_alpha(path, image: Image.Image) -> None:
  """Logs a warning when dropping `image`'s alpha loses something (pixels
  that are not opaque: their colour was never meant to be seen)."""
  alpha = np.asarray(image.convert("RGBA"))[..., 3]
  share = float((alpha < 255).mean())
  if share:
    logging.warning("%s: alpha channel dropped; %.1f%% of the pixels are "
                    "not opaque and are used with their stored colour.",
                    path, 100 * share)


def load_image(path: str | os.PathLike[str],
               data: bytes | None = None) -> np.ndarray:
  """Decodes an image file to an (H, W, C) array, keeping 8/16-bit depth.

  `data`, when given, are the file's bytes already read (`path` then only
  names the file in errors).
  """
  if Path(path).suffix.lower() in TIFF_EXTENSIONS:
    array = _load_tiff(path, data)
    return np.ascontiguousarray(array[:, :, None] if array.ndim == 2 else array)
  try:
    with _open(path, data) as img:
      img.load()  # Forces the full decode: truncated files raise here.
      if img.mode in ("I;16", "I;16B", "I;16L"):
        array = np.asarray(img, dtype=np.uint16)
      elif img.mode in ("L", "RGB"):
        array = np.asarray(img)
      elif img.mode in ("RGBA", "LA", "PA") or (
          img.mode == "P" and "transparency" in img.info):
        _note_alpha(path, img)
        array = np.asarray(img.convert("RGB"))
      else:
        array = np.asarray(img.convert("RGB"))
  except DecodeError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DecodeError(f"{path}: cannot decode image ({e}).") from e
  if array.ndim == 2:
    array = array[:, :, None]
  return np.ascontiguousarray(array)


def load_mask(path: str | os.PathLike[str],
              data: bytes | None = None) -> np.ndarray:
  """Decodes a single-channel mask file to an (H, W) integer array."""
  if Path(path).suffix.lower() in TIFF_EXTENSIONS:
    array = _load_tiff(path, data)
    if array.ndim == 3 and array.shape[2] == 1:
      array = array[:, :, 0]
    if array.ndim != 2:
      raise DecodeError(f"{path}: a mask must be single-channel, got shape "
                        f"{array.shape}.")
    return np.ascontiguousarray(array)
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
  with atomic.replacing(path) as tmp:
    Image.fromarray(array).save(tmp, format="PNG")


def save_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> None:
  """Writes an (H, W) class-index mask as a palette PNG, atomically: the
  pixel values stay the class indices (load_mask, VOC readers and NumPy
  read them back), and image viewers show each class in its overlay colour
  instead of a black picture."""
  mask = np.asarray(mask)
  if mask.ndim == 3 and mask.shape[2] == 1:
    mask = mask[:, :, 0]
  if mask.ndim != 2 or mask.size and (mask.min() < 0 or mask.max() > 255):
    raise ValueError(f"{path}: a mask of class indices 0..255 expected, got "
                     f"shape {mask.shape}.")
  image = Image.fromarray(mask.astype(np.uint8), mode="P")
  table = overlays.class_colours(np.arange(256)).astype(np.uint8)
  image.putpalette(table.ravel().tolist())
  with atomic.replacing(path) as tmp:
    image.save(tmp, format="PNG")


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
  # Source of pixel i: floor((i + 0.5) h / height), in integers (the
  # served graph's export/savedmodel.nearest_resize is the same formula).
  rows = (2 * np.arange(height) + 1) * mask.shape[0] // (2 * height)
  cols = (2 * np.arange(width) + 1) * mask.shape[1] // (2 * width)
  return mask[np.minimum(rows, mask.shape[0] - 1)][
      :, np.minimum(cols, mask.shape[1] - 1)]


def list_images(folder: str | os.PathLike[str],
                recursive: bool = False) -> list[Path]:
  """Image files inside `folder` (and its subfolders when `recursive`),
  sorted by path."""
  found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
  return sorted(p for p in found
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
