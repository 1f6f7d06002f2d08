"""Pascal VOC segmentation: JPEGImages/ + SegmentationClass/ palette PNGs.

A VOC mask is a palette ("P" mode) PNG whose pixel values are class indices;
255 is the void border drawn around objects, which is kept as the ignore
value (losses and metrics skip it) instead of being read as a class. RGB
masks (colours instead of indices) are refused with that reason: converting
colours silently would hide a wrong palette.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from chameleon_jax.data import images as imio
from chameleon_jax.data import sources
from chameleon_jax.data.sources import Item, Rejected, SourceInfo
from chameleon_jax.registry import DATASETS

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
    "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _item(stem: str, root: Path, labels: list[int],
          channels: int) -> Item | Rejected:
  where = f"{root}/ImageSets/Segmentation (stem {stem!r})"
  image_path = sources.resolve_under(root, f"JPEGImages/{stem}.jpg", where,
                                     "the image set's stem")
  mask_path = sources.resolve_under(root, f"SegmentationClass/{stem}.png",
                                    where, "the image set's stem")
  for path in (image_path, mask_path):
    if isinstance(path, Rejected):
      return path
  if not mask_path.is_file():
    return Rejected(str(image_path), f"missing mask (expected {mask_path}).")
  loaded = sources.read_image(image_path, channels)
  if isinstance(loaded, Rejected):
    return loaded
  image, image_bytes = loaded
  try:
    mask_bytes = mask_path.read_bytes()
    with Image.open(mask_path) as img:
      mode = img.mode
    if mode not in ("P", "L"):
      return Rejected(str(mask_path), f"mask is a mode {mode!r} PNG; VOC "
                      "masks are palette (P) PNGs holding class indices.")
    mask = imio.load_mask(mask_path, mask_bytes)
  except (OSError, imio.DecodeError) as e:
    return Rejected(str(mask_path), f"cannot decode mask ({e}).")
  rejected = sources.check_mask(mask, image, labels, str(mask_path),
                                image_path.name, allow_ignore=True)
  if rejected:
    return rejected
  return Item(stem, image, mask.astype("uint8"), sources.dominant_class(mask),
              str(image_path), sources.sha256(image_bytes, mask_bytes))


@DATASETS.register("voc")
def voc(
    root: str,
    image_set: str = "",
    class_names: Sequence[str] = VOC_CLASSES,
    channels: int = 3,
) -> tuple[SourceInfo, Iterator[Item | Rejected]]:
  """VOC layout under `root`; `image_set` names ImageSets/Segmentation/<x>.txt.

  Without an image set, every mask in SegmentationClass/ is an item.
  """
  root_path = Path(root)
  for folder in ("JPEGImages", "SegmentationClass"):
    if not (root_path / folder).is_dir():
      raise FileNotFoundError(f"VOC folder {root_path / folder} does not "
                              "exist.")
  if image_set:
    list_file = root_path / "ImageSets" / "Segmentation" / f"{image_set}.txt"
    if not list_file.is_file():
      raise FileNotFoundError(f"VOC image set {list_file} does not exist.")
    stems = [line.strip() for line in list_file.read_text().splitlines()
             if line.strip()]
  else:
    stems = sorted(p.stem for p in (root_path / "SegmentationClass").glob(
        "*.png"))
  if not stems:
    raise ValueError(f"No VOC items under {root_path}.")
  labels = list(range(len(class_names)))

  def items():
    for stem in stems:
      yield sources.guarded(f"{root_path}: {stem}", _item, stem, root_path,
                            labels, channels)

  return SourceInfo(tuple(class_names), channels), items()
