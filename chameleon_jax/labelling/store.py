"""The dataset's raw folders as the labelling tool reads and writes them.

Images stay where they are; each save writes the mask where
`image_mask_folders` reads it (`root/masks_dir/<id><mask_suffix>.png`, raw
values through the inverse of the source's `value_map`), atomically, and
appends one audit line to `root/labels.jsonl`. Every path comes from the
image listing or is resolved under the dataset root (`sources.resolve_under`);
a save whose base revision is no longer the file on disk (another tab saved
the image since) is refused, so nothing is overwritten unseen.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import inspect
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from chameleon_jax.data import catalog
from chameleon_jax.data import images as imio
from chameleon_jax.data import sources
from chameleon_jax.registry import DATASETS

AUDIT_FILE = "labels.jsonl"
NO_MASK = "none"  # The revision of an image without a mask file.


class Refused(ValueError):
  """A request outside what the store serves (a path out of the root, an
  unknown image, a mask of the wrong size): nothing was read or written."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


class Conflict(Refused):
  """The mask changed on disk since the page loaded it."""

  def __init__(self, message: str):
    super().__init__(message, status=409)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where `image_mask_folders` finds images and masks: its options, with
  its own defaults (`layout_from_source`)."""
  root: Path
  class_names: tuple[str, ...]
  images_dir: str
  masks_dir: str
  mask_suffix: str
  value_map: Mapping[int, int] | None
  recursive: bool

  def __post_init__(self):
    raw = {int(k): int(v) for k, v in (self.value_map or {}).items()}
    to_raw = {}
    for source, target in sorted(raw.items()):
      to_raw.setdefault(target, source)
    # A class no raw value maps to is stored as its own index (the source
    # passes unmapped values through).
    for k in range(len(self.class_names)):
      if k not in to_raw and k in raw:
        raise ValueError(
            f"value_map {dict(raw)} maps raw value {k} to class {raw[k]} and "
            f"no raw value to class {k}: the label tool cannot store class "
            f"{k} ({self.class_names[k]!r}) in this dataset's masks.")
    object.__setattr__(self, "_to_raw", to_raw)
    object.__setattr__(self, "_from_raw", raw)

  def to_raw(self, mask: np.ndarray) -> np.ndarray:
    """Class indices -> the values the dataset's mask files hold."""
    return sources.map_values(mask, self._to_raw).astype(np.uint8)

  def from_raw(self, raw: np.ndarray) -> np.ndarray:
    """A mask file's values -> class indices, as the source reads them."""
    return sources.map_values(raw, self._from_raw)


def revision(data: bytes | None) -> str:
  """A mask file's revision: the first 16 hex digits of its SHA-256."""
  return NO_MASK if data is None else hashlib.sha256(data).hexdigest()[:16]


class LabelStore:
  """Images, masks and the audit log of one dataset root (thread-safe).

  Args:
    layout: the folders and the source's options.
    max_pixels: the largest image decoded (`data.max_pixels`; a larger one
      is refused from its header, as ingest refuses it).
  """

  def __init__(self, layout: Layout, max_pixels: int):
    self.layout = layout
    self.max_pixels = int(max_pixels)
    self.root = Path(layout.root).resolve()
    self.images = self.root / layout.images_dir
    self.masks = self.root / layout.masks_dir
    if not self.images.is_dir():
      raise FileNotFoundError(f"Image folder {self.images} does not exist.")
    self._lock = threading.Lock()
    self._sizes: dict[str, tuple[int, int]] = {}
    self.refresh()
    if not self._files:
      raise ValueError(f"No images ({', '.join(imio.IMAGE_EXTENSIONS)}) in "
                       f"{self.images}.")

  def refresh(self) -> None:
    """Lists the image folder again (images added while the tool runs)."""
    files = imio.list_images(self.images, self.layout.recursive)
    self._files = {p.relative_to(self.images).with_suffix("").as_posix(): p
                   for p in files}

  def ids(self) -> list[str]:
    return sorted(self._files)

  def image_file(self, image_id: object) -> Path:
    """The image file of `image_id` (its path under the image folder, no
    extension).

    Raises:
      Refused: not a string, a path leading outside the dataset root (403,
        logged), or no such image (404).
    """
    if not isinstance(image_id, str) or not image_id or "\0" in image_id:
      raise Refused(f"image id must be a non-empty string, got "
                    f"{image_id!r}.")
    inside = sources.resolve_under(self.images, image_id, "request", "image")
    if isinstance(inside, sources.Rejected):
      logging.warning("label tool: refused %r: %s", image_id, inside.reason)
      raise Refused(inside.reason, status=403)
    if image_id not in self._files:
      raise Refused(f"no image {image_id!r} in {self.images}.", status=404)
    return self._files[image_id]

  def mask_file(self, image_id: str) -> Path:
    """Where `image_mask_folders` expects the mask of `image_id`."""
    image = self.image_file(image_id)
    relative = Path(image_id)
    path = self.masks / relative.with_name(
        f"{image.stem}{self.layout.mask_suffix}.png")
    inside = sources.resolve_under(self.root, path.relative_to(self.root),
                                   "request", "mask")
    if isinstance(inside, sources.Rejected):  # A linked folder out of root.
      logging.warning("label tool: refused mask of %r: %s", image_id,
                      inside.reason)
      raise Refused(inside.reason, status=403)
    return path

  def load_image(self, image_id: str) -> np.ndarray:
    """The decoded (H, W, C) image (8 or 16 bits, as ingest reads it).

    Raises:
      Refused: as `image_file`; a file that does not decode or is over the
        pixel limit (422, the decoder's message naming the file).
    """
    path = self.image_file(image_id)
    try:
      with imio.pixel_limit(self.max_pixels):  # Per thread: set here.
        image = imio.load_image(path)
    except (imio.DecodeError, OSError) as e:
      raise Refused(str(e), status=422) from None
    self._sizes[image_id] = image.shape[:2]
    return image

  def image_size(self, image_id: str) -> tuple[int, int]:
    """(height, width) of the image (decoded once, then remembered)."""
    self.image_file(image_id)  # Refuses what is not an image first.
    if image_id not in self._sizes:
      self.load_image(image_id)
    return self._sizes[image_id]

  def current_revision(self, image_id: str) -> str:
    """The revision of `image_id`'s mask file on disk (NO_MASK: none)."""
    path = self.mask_file(image_id)
    return revision(path.read_bytes() if path.is_file() else None)

  def read_mask(self, image_id: str) -> tuple[np.ndarray | None, str]:
    """(class map or None when there is no mask file, its revision)."""
    path = self.mask_file(image_id)
    try:
      data = path.read_bytes()
    except FileNotFoundError:
      return None, NO_MASK
    raw = imio.load_mask(path, data)
    return self.layout.from_raw(raw).astype(np.uint8), revision(data)

  def save(self, image_id: str, mask: np.ndarray, base_revision: str,
           audit: Mapping[str, object]) -> str:
    """Writes `mask` (class indices) as `image_id`'s mask if the file on
    disk is still `base_revision`; appends the audit line; returns the new
    revision.

    Raises:
      Refused: wrong size or a class outside the palette (nothing written).
      Conflict: the mask changed since `base_revision` (nothing written).
    """
    height, width = self.image_size(image_id)
    if mask.shape != (height, width):
      raise Refused(f"mask {mask.shape[1]}x{mask.shape[0]} does not match "
                    f"image {image_id!r} {width}x{height} (width x height).")
    if mask.size and int(mask.max()) >= len(self.layout.class_names):
      raise Refused(f"class {int(mask.max())} is outside the palette "
                    f"0..{len(self.layout.class_names) - 1}.")
    path = self.mask_file(image_id)
    with self._lock:
      current = self.current_revision(image_id)
      if current != base_revision:
        raise Conflict(
            f"the mask of {image_id!r} changed since this page loaded it "
            f"(revision {base_revision} -> {current}: saved from another tab "
            "or program). Nothing was written; reload the image to see it.")
      path.parent.mkdir(parents=True, exist_ok=True)
      imio.save_mask_png(path, self.layout.to_raw(mask))
      new = revision(path.read_bytes())
      line = {"image": image_id,
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              **audit, "base_revision": base_revision, "revision": new,
              "mask": path.relative_to(self.root).as_posix()}
      self._append(line)
    return new

  def _append(self, line: Mapping[str, object]) -> None:
    # One write of one line to a file opened for appending: lines from
    # earlier saves are never rewritten; fsync before the save returns.
    with open(self.root / AUDIT_FILE, "a", encoding="utf-8") as f:
      f.write(json.dumps(line, sort_keys=True) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def audit_lines(self) -> list[dict]:
    path = self.root / AUDIT_FILE
    if not path.is_file():
      return []
    return [json.loads(line) for line in path.read_text().splitlines()
            if line.strip()]


def class_counts(mask: np.ndarray, num_classes: int) -> list[int]:
  """Pixels per class of a saved mask (the audit line's summary)."""
  return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes
                                                          ].tolist()


def layout_from_source(source: str, kwargs: Mapping[str, object]) -> Layout:
  """The Layout of an `image_mask_folders` source's options (unset ones
  take the source's defaults, from its signature).

  Raises:
    ValueError: another source, options the source does not take, no root,
      or masks that are not PNG files (the tool writes PNG; a .mat or TIFF
      dataset would need converting).
  """
  if source != "image_mask_folders":
    raise ValueError(
        f"--mode=label writes masks in the image_mask_folders layout; "
        f"data.source is {source!r}. Point data.source at "
        "'image_mask_folders' with data.source_kwargs.root (images/ and "
        "masks/ under it).")
  options = {name: param.default for name, param in
             DATASETS.parameters(source).items()
             if param.default is not inspect.Parameter.empty}
  options.update(catalog.checked(source, dict(kwargs)))
  ext = str(options["mask_ext"]).lower().lstrip(".")
  if ext != "png":
    raise ValueError(f"data.source_kwargs.mask_ext is {ext!r}: the label "
                     "tool writes PNG masks (mask_ext '.png').")
  return Layout(root=Path(str(options["root"])),
                class_names=tuple(options["class_names"]),
                images_dir=str(options["images_dir"]),
                masks_dir=str(options["masks_dir"]),
                mask_suffix=str(options["mask_suffix"]),
                value_map=options["value_map"],
                recursive=bool(options["recursive"]))
