"""Ingest sources: each yields validated `Item`s or `Rejected` entries, never drops.

Sources are registered in `DATASETS` (one registry for every zoo) and built
from `config.data.source` / `config.data.source_kwargs`:

  synthetic           the built-in synthetic defect data (see synthetic.py);
  image_mask_folders  images/ and masks/ folders paired by file stem;
  class_folders       one folder per class, masks beside the images
                      (e.g. MT_Blowhole/Imgs/x.jpg + x.png): mask = (png >= 128)
                      * class index of the folder.

Annotation-tool formats (labelme, COCO, Pascal VOC, CSV/JSON lists) live in
`data/formats/` and build their items with the helpers here (`read_image`,
`check_mask`), so every format validates the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from chameleon_jax.data import images as imio
from chameleon_jax.data import matfiles
from chameleon_jax.data import synthetic
from chameleon_jax.data.labels import IGNORE_INDEX
from chameleon_jax.registry import DATASETS


IGNORE_VALUE = IGNORE_INDEX  # Mask value for "not labelled" (labels.py).


@dataclasses.dataclass
class Item:
  """One validated example. `label` is the image-level class (0: defect-free).

  `has_mask` is False for classification-only sources (the mask is then all
  zeros and carries no information); `group` keeps items of one part/patient
  in one split; `annotations` holds format extras kept for later tasks (COCO
  instances: category, box, RLE), stored with the record.
  """
  item_id: str
  image: np.ndarray  # (H, W, C) uint8 or uint16.
  mask: np.ndarray  # (H, W) uint8 class indices (IGNORE_VALUE: unlabelled).
  label: int
  source: str
  content_hash: str  # sha256 of the source bytes (image + annotation).
  has_mask: bool = True
  group: str = ""
  annotations: dict | None = None


@dataclasses.dataclass
class Rejected:
  """An input that failed validation; it goes to the quarantine report.
  `counted` False: not a bad input but one waiting for its label (an image
  without a mask while labelling is in progress); listed, not counted
  against `max_bad_fraction`."""
  path: str
  reason: str
  counted: bool = True


@dataclasses.dataclass
class SourceInfo:
  """What a source declares about its dataset: its name, the class names
  (index 0 the defect-free class) and the channels the images are
  brought to (None: as decoded).
  """
  class_names: tuple[str, ...]
  channels: int | None


def sha256(*chunks: bytes) -> str:
  """Hex sha256 of the concatenated byte chunks (content hashes)."""
  digest = hashlib.sha256()
  for chunk in chunks:
    digest.update(hashlib.sha256(chunk).digest())
  return digest.hexdigest()


def dominant_class(mask: np.ndarray) -> int:
  """The most frequent non-background class of a mask (0 when empty)."""
  counts = np.bincount(mask.ravel(), minlength=IGNORE_VALUE + 1)
  counts[0] = counts[IGNORE_VALUE] = 0
  return int(counts.argmax()) if counts.any() else 0


def guarded(where: str, read: Callable[..., Item | Rejected],
            *args) -> Item | Rejected:
  """`read(*args)`, or a Rejected naming `where` when it raises what no
  check foresaw (logged with its traceback): one malformed input is
  quarantined, it never stops the ingest of the others."""
  try:
    return read(*args)
  except MemoryError:
    raise
  except Exception as e:  # noqa: BLE001  (per-input isolation)
    logging.warning("unexpected error reading %s", where, exc_info=True)
    return Rejected(where, f"could not be read ({type(e).__name__}: "
                    f"{str(e)[:200]}).")


def resolve_under(root: Path, path: str | Path, where: str,
                  field: str) -> Path | Rejected:
  """`root / path` with symlinks resolved, or a Rejected naming `where`
  (the file that pointed there) and `field` when the path is absolute or
  leads outside `root`: no source reads a file outside its dataset root.

  Example: resolve_under(Path("/data"), "../etc/passwd", "/data/a.json",
  "imagePath") -> Rejected("/data/a.json", "imagePath '../etc/passwd'
  leads outside the dataset root /data (to /etc/passwd); not read.").
  """
  text = str(path)
  if Path(text).is_absolute():
    return Rejected(where, f"{field} {text!r} is an absolute path; paths "
                    f"must be relative to the dataset root {root}.")
  base = Path(root).resolve()
  resolved = (base / text).resolve()
  if not resolved.is_relative_to(base):
    return Rejected(where, f"{field} {text!r} leads outside the dataset root "
                    f"{base} (to {resolved}); not read.")
  return resolved


def to_channels(image: np.ndarray, channels: int | None,
                path: Path) -> np.ndarray:
  """Adapts grey <-> RGB (grey = ITU-R 601 luma, rounded in the image's
  dtype); anything else is an error naming the file. The one conversion:
  ingest applies it to every source image, predict to every raw image."""
  have = image.shape[2]
  if channels is None or have == channels:  # None: as decoded.
    return image
  if have == 1:
    return np.repeat(image, channels, axis=2)
  if channels == 1 and have == 3:
    # float32 is exact enough for 16-bit samples and half float64's memory.
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                               np.float32)
    return np.rint(grey).astype(image.dtype)[:, :, None]
  raise ValueError(f"{path}: image has {have} channels, expected {channels}.")


def read_image(path: Path, channels: int | None,
               data: bytes | None = None) -> tuple[np.ndarray, bytes] | Rejected:
  """Reads and decodes an image file -> ((H, W, channels) array, file bytes).

  `data` are the bytes when the image does not come from `path` itself (e.g.
  labelme's embedded imageData); `path` then names it in errors.
  """
  if data is None and not path.is_file():
    return Rejected(str(path), "missing image file.")
  try:
    data = path.read_bytes() if data is None else data
    return to_channels(imio.load_image(path, data), channels, path), data
  except OSError as e:
    return Rejected(str(path), f"cannot read ({e}).")
  except (imio.DecodeError, ValueError) as e:
    return Rejected(str(path), str(e))


def check_mask(mask: np.ndarray, image: np.ndarray, labels: Sequence[int],
               where: str, image_name: str,
               allow_ignore: bool = False) -> Rejected | None:
  """The checks every segmentation item passes: size match, declared labels."""
  if mask.shape[:2] != image.shape[:2]:
    return Rejected(
        where, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from "
        f"image {image_name} size {image.shape[1]}x{image.shape[0]} "
        "(width x height).")
  allowed = list(labels) + ([IGNORE_VALUE] if allow_ignore else [])
  bad = np.setdiff1d(np.unique(mask), np.asarray(allowed))
  if bad.size:
    return Rejected(
        where, f"mask values {bad.tolist()[:10]} are outside the declared "
        f"labels {list(labels)}" + (f" (+ {IGNORE_VALUE} = ignore)"
                                    if allow_ignore else "") + ".")
  return None


def _validated(image_path: Path, mask_path: Path | None,
               channels: int | None,
               labels: Sequence[int], to_classes, item_id: str, root: Path,
               label: int | None = None,
               load_mask=imio.load_mask,
               unlabelled_ok: bool = False) -> Item | Rejected:
  """Decodes and checks one image/mask pair. `to_classes` maps raw mask
  values; `load_mask(path, bytes)` decodes the mask file; `unlabelled_ok`:
  a missing mask is an unlabelled image (Rejected, not counted)."""
  for path, field in ((image_path, "the image file"),
                      (mask_path, "the mask file")):
    if path is not None:  # A link (or linked folder) out of the root: refused.
      inside = resolve_under(root, path.relative_to(root), str(path), field)
      if isinstance(inside, Rejected):
        return inside
  if mask_path is None or not mask_path.is_file():
    if unlabelled_ok:  # Waiting for a label only if the image is sound.
      loaded = read_image(image_path, channels)
      return loaded if isinstance(loaded, Rejected) else Rejected(
          str(image_path), f"unlabelled: no mask yet (expected {mask_path}).",
          counted=False)
    return Rejected(str(image_path), f"missing mask (expected {mask_path}).")
  loaded = read_image(image_path, channels)
  if isinstance(loaded, Rejected):
    return loaded
  image, image_bytes = loaded
  try:
    mask_bytes = mask_path.read_bytes()
    raw_mask = load_mask(mask_path, mask_bytes)
  except OSError as e:
    return Rejected(str(mask_path), f"cannot read ({e}).")
  except imio.DecodeError as e:
    return Rejected(str(mask_path), str(e))
  mask = to_classes(raw_mask)
  rejected = check_mask(mask, image, labels, str(mask_path), image_path.name)
  if rejected:
    return rejected
  content_hash = sha256(image_bytes, mask_bytes)
  return Item(item_id, image, mask.astype(np.uint8),
              dominant_class(mask) if label is None else label,
              str(image_path), content_hash)


def map_values(array: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
  """`array` with each value `mapping` names replaced (int64); values it
  does not name pass through; no mapping: `array` itself. A mask's
  `value_map` rule (raw file values -> class indices, and back in
  the labelling tool)."""
  if not mapping:
    return array
  out = array.astype(np.int64).copy()
  for src, dst in mapping.items():
    out[array == src] = dst
  return out


def _require_folder(path: Path, what: str) -> None:
  if not path.is_dir():
    raise FileNotFoundError(f"{what} folder {path} does not exist.")


@DATASETS.register("image_mask_folders")
def image_mask_folders(
    root: str,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
    class_names: Sequence[str] = ("background", "defect"),
    value_map: dict | None = None,
    channels: int | None = None,
    mask_ext: str = ".png",
    mat_field: str = "",
    recursive: bool = False,
    missing_masks: str = "reject",
) -> tuple[SourceInfo, Iterator[Item | Rejected]]:
  """Images in `root/images_dir`, masks `root/masks_dir/<stem><mask_suffix>
  <mask_ext>`.

  `recursive`: images in subfolders too, each mask at the same relative
  path under `masks_dir` (images/test/a.png -> masks/test/a.png); item ids
  are the relative paths ("test/a"), which `data.split_pattern` can read
  a dataset's own split from.

  A mask without an image is reported in the quarantine (orphan mask).
  Mask values must be class indices 0..len(class_names)-1, or be mapped to them
  by `value_map` (e.g. {255: 1} for 0/255 binary masks); any other value sends
  the item to quarantine. `mask_ext` ".png" (default), ".tif"/".tiff", ".bmp"
  or ".mat": MATLAB files, the mask at `mat_field` (a dotted path such as
  "groundTruth.Segmentation"; "" = the file's only 2-D numeric variable;
  data/matfiles.py).

  `missing_masks`: an image without its mask file is a bad input
  ("reject", the default: a wrong mask_suffix fails the ingest loudly) or,
  while labelling is in progress (`--mode=label`), "unlabelled": listed in
  the quarantine as such and not counted against `data.max_bad_fraction`.

  Raises:
    FileNotFoundError: a folder that does not exist.
    ValueError: no images, `mat_field` given without `mask_ext=".mat"`, or
      `missing_masks` not "reject" or "unlabelled".
  """
  if missing_masks not in ("reject", "unlabelled"):
    raise ValueError(f"missing_masks={missing_masks!r}; expected 'reject' "
                     "or 'unlabelled'.")
  mask_ext = mask_ext if mask_ext.startswith(".") else f".{mask_ext}"
  if mask_ext.lower() == ".mat":
    load_mask = functools.partial(matfiles.load_mask, field=mat_field)
  elif mat_field:
    raise ValueError(f"mat_field={mat_field!r} is for MATLAB masks; "
                     f"mask_ext is {mask_ext!r} (expected '.mat').")
  else:
    load_mask = imio.load_mask
  root_path = Path(root)
  image_folder, mask_folder = root_path / images_dir, root_path / masks_dir
  _require_folder(image_folder, "Image")
  _require_folder(mask_folder, "Mask")
  files = imio.list_images(image_folder, recursive)
  if not files:
    raise ValueError(f"No images ({', '.join(imio.IMAGE_EXTENSIONS)}) found "
                     f"in {image_folder}" + (
                         " or its subfolders." if recursive else
                         "; images in subfolders need recursive=True."))
  labels = list(range(len(class_names)))
  mapping = {int(k): int(v) for k, v in (value_map or {}).items()}

  def to_classes(raw: np.ndarray) -> np.ndarray:
    return map_values(raw, mapping)

  def relative(path: Path) -> Path:  # images/test/a.png -> test/a
    return path.relative_to(image_folder).with_suffix("")

  expected = {relative(p).with_name(f"{p.stem}{mask_suffix}{mask_ext}")
              for p in files}
  candidates = mask_folder.rglob("*") if recursive else mask_folder.iterdir()
  orphans = sorted(p for p in candidates if p.is_file() and
                   p.name.endswith(mask_suffix + mask_ext) and
                   p.relative_to(mask_folder) not in expected)

  def items():
    for path in files:
      rel = relative(path)
      mask_path = mask_folder / rel.with_name(
          f"{path.stem}{mask_suffix}{mask_ext}")
      yield guarded(str(path), functools.partial(
          _validated, path, mask_path, channels, labels, to_classes,
          item_id=rel.as_posix(), root=root_path, load_mask=load_mask,
          unlabelled_ok=missing_masks == "unlabelled"))
    for mask_path in orphans:  # Reported, so that nothing is silently left.
      stem = mask_path.name[:-len(mask_suffix + mask_ext)]
      yield Rejected(str(mask_path), f"orphan mask: no image {stem}.* "
                     f"({', '.join(imio.IMAGE_EXTENSIONS)}) in {image_folder}.")

  return SourceInfo(tuple(class_names), channels), items()


@DATASETS.register("class_folders")
def class_folders(
    root: str,
    classes: dict | None = None,
    images_subdir: str = "",
    image_ext: str = ".jpg",
    mask_ext: str = ".png",
    threshold: int = 128,
    binary: bool = False,
    channels: int | None = None,
    masks: bool = True,
) -> tuple[SourceInfo, Iterator[Item | Rejected]]:
  """One folder per class; mask = (mask >= threshold) * class index of folder.

  `classes` maps folder name -> class index, 0 for defect-free folders (default:
  every sub-folder, in sorted order, starting at 1). With `binary=True` all
  defect classes become class 1 ("defect") in the mask, while the image-level
  label keeps the folder's class for stratified splitting. `masks=False` is
  plain classification by folder: no mask files, every image file with
  `image_ext` ("" = any image type) is an item.
  """
  root_path = Path(root)
  _require_folder(root_path, "Dataset")
  if classes is None:
    folders = sorted(p.name for p in root_path.iterdir() if p.is_dir())
    classes = {name: i + 1 for i, name in enumerate(folders)}
  classes = dict(classes)
  if not classes:
    raise ValueError(f"No class folders found in {root_path}.")
  num = max(classes.values()) + 1
  names = ["background"] * num
  for folder, index in classes.items():
    if index:
      names[index] = folder
  class_names = ("background", "defect") if binary else tuple(names)
  labels = list(range(len(class_names)))
  listing = []
  for folder, index in sorted(classes.items()):
    image_folder = root_path / folder / images_subdir
    _require_folder(image_folder, f"Class {folder!r}")
    listing += [(folder, index, p) for p in sorted(image_folder.iterdir())
                if p.is_file() and (
                    p.suffix.lower() == image_ext.lower() if image_ext else
                    p.suffix.lower() in imio.IMAGE_EXTENSIONS)]
  if not listing:
    raise ValueError(f"No {image_ext} images found under {root_path} in "
                     f"folders {sorted(classes)}.")

  def unmasked(folder: str, index: int, path: Path) -> Item | Rejected:
    inside = resolve_under(root_path, path.relative_to(root_path), str(path),
                           "the image file")
    if isinstance(inside, Rejected):
      return inside
    loaded = read_image(path, channels)
    if isinstance(loaded, Rejected):
      return loaded
    image, data = loaded
    return Item(f"{folder}/{path.stem}", image,
                np.zeros(image.shape[:2], np.uint8), index, str(path),
                sha256(data, folder.encode()), has_mask=False)

  def items():
    for folder, index, path in listing:
      if not masks:
        yield guarded(str(path), unmasked, folder, index, path)
        continue
      value = 1 if (binary and index) else index
      to_classes = lambda raw, v=value: (raw >= threshold).astype(np.uint8) * v
      yield guarded(str(path), functools.partial(
          _validated, path, path.with_suffix(mask_ext), channels, labels,
          to_classes, item_id=f"{folder}/{path.stem}", root=root_path,
          label=index))

  return SourceInfo(class_names, channels), items()


@DATASETS.register("synthetic")
def synthetic_source(
    num_images: int = 600,
    seed: int = 0,
    channels: int = 1,
    min_size: Sequence[int] = (96, 96),
    max_size: Sequence[int] = (96, 96),
    empty_fraction: float = 0.7,
    min_defect_fraction: float = 0.001,
    max_defect_fraction: float = 0.02,
    max_defects_per_image: int = 2,
    binary: bool = False,
) -> tuple[SourceInfo, Iterator[Item | Rejected]]:
  """The built-in synthetic defect data (crack, spot, stain), see synthetic.py.

  `binary=True` merges the three defect classes into one ("defect").
  """
  spec = synthetic.SyntheticSpec(
      num_images=num_images, seed=seed, channels=channels,
      min_size=tuple(min_size), max_size=tuple(max_size),
      empty_fraction=empty_fraction, min_defect_fraction=min_defect_fraction,
      max_defect_fraction=max_defect_fraction,
      max_defects_per_image=max_defects_per_image)
  class_names = (("background", "defect") if binary
                 else synthetic.CLASS_NAMES)

  def items():
    for item_id, image, mask in synthetic.generate(spec):
      if binary:
        mask = (mask > 0).astype(np.uint8)
      yield Item(item_id, image, mask, dominant_class(mask), "synthetic",
                 sha256(image.tobytes(), mask.tobytes(),
                         repr(image.shape).encode()))

  return SourceInfo(class_names, channels), items()
