"""Every ingest source's options, from the sources' own signatures.

The config template declares each option of every registered source as an
unset `data.source_kwargs.<option>` (so `--config.data.source_kwargs.root=
/data` works on the command line whatever the source); `checked()` drops
the unset ones and refuses an option the chosen source does not take, with
the options it does take. `table()` is the README's table of options.

  python -c "from chameleon_jax.data import catalog; print(catalog.table())"
"""

from __future__ import annotations

import inspect
from typing import Any

from chameleon_jax.data import formats  # noqa: F401  (registers formats)
from chameleon_jax.data import sources  # noqa: F401  (registers sources)
from chameleon_jax.registry import DATASETS


# What each option means (the sources' docstrings say more); a test keeps
# every option of every registered source described here.
DESCRIPTIONS = {
    "annotation_file": "the COCO instances JSON",
    "binary": "merge every defect class into one ('defect')",
    "channels": "channels images are brought to (1 grey, 3 RGB; grey <-> "
                "RGB converted, anything else refused); None: as decoded, "
                "an image that disagrees with the first is quarantined",
    "class_names": "class names, index 0 the defect-free class",
    "classes": "folder name -> class index (0 = defect-free folders); "
               "default: every sub-folder, sorted, from 1",
    "empty_fraction": "share of defect-free images",
    "group_column": "column keeping items of one part/patient in one split",
    "image_column": "column of image paths",
    "image_ext": "image file extension ('' = any image type)",
    "image_set": "VOC ImageSets/Segmentation list ('' = every mask)",
    "images_dir": "folder of the images, under root",
    "images_subdir": "sub-folder of each class folder holding the images",
    "label_column": "column of class names or indices",
    "mask_ext": "mask file extension (.png, .tif, .bmp; .mat: MATLAB)",
    "mask_suffix": "mask file name = image stem + this + mask_ext",
    "masks": "False: classification by folder, no mask files",
    "masks_dir": "folder of the masks, under root",
    "missing_masks": "an image without a mask file: 'reject' (a bad input) "
                     "or 'unlabelled' (listed in the quarantine, not counted "
                     "against max_bad_fraction: labelling in progress)",
    "mat_field": "MATLAB masks: dotted path to the mask "
                 "('groundTruth.Segmentation'; '' = the only 2-D variable)",
    "max_defect_fraction": "largest defect, as a share of the image",
    "max_defects_per_image": "defects per defect image, at most",
    "max_size": "largest image (H, W)",
    "min_defect_fraction": "smallest defect, as a share of the image",
    "min_size": "smallest image (H, W)",
    "num_images": "images generated",
    "path": "the CSV / JSON / JSONL list",
    "recursive": "search images_dir's subfolders too; masks at the same "
                 "relative paths, item ids such as 'test/a' "
                 "(data.split_pattern keeps such a split)",
    "root": "the dataset folder; every path is resolved under it",
    "seed": "generator seed",
    "threshold": "mask pixels >= threshold are the folder's class",
    "value_map": "mask value -> class index, e.g. {255: 1} for 0/255 masks",
}


def _kind(param: inspect.Parameter) -> type:
  """The command-line type of an option: from its default, else its
  annotation; `object` (a Python literal) for dicts and anything else."""
  default = param.default
  if default is not inspect.Parameter.empty and default is not None:
    if isinstance(default, (list, tuple)):
      return tuple
    if isinstance(default, (bool, int, float, str)):
      return type(default)
    return object
  annotation = str(param.annotation)
  for word, kind in (("dict", object), ("Sequence", tuple), ("tuple", tuple),
                     ("list", tuple), ("bool", bool), ("int", int),
                     ("float", float), ("str", str)):
    if word in annotation:
      return kind
  return object


def options() -> dict[str, dict[str, Any]]:
  """{option: {"type": type, "sources": {source: default}}}, sorted; an
  option whose type differs between sources is `object`."""
  out: dict[str, dict[str, Any]] = {}
  for name in sorted(DATASETS.names()):
    for option, param in DATASETS.parameters(name).items():
      entry = out.setdefault(option, {"type": _kind(param), "sources": {}})
      if entry["type"] is not _kind(param):
        entry["type"] = object
      entry["sources"][name] = (None if param.default is inspect.Parameter.empty
                                else param.default)
  return dict(sorted(out.items()))


def checked(source: str, kwargs: dict[str, Any]) -> dict[str, Any]:
  """`kwargs` without the unset (None) options, refusing any option that
  `source` does not take.

  Raises:
    KeyError: an unknown source (DATASETS names the registered ones).
    ValueError: options `source` does not take; the message lists the ones
      it takes.
  """
  accepted = DATASETS.parameters(source)
  given = {k: v for k, v in kwargs.items() if v is not None}
  unknown = sorted(set(given) - set(accepted))
  if unknown:
    raise ValueError(
        f"data.source_kwargs {unknown} are not options of source "
        f"{source!r}; it takes {sorted(accepted)} (README, 'Sources and "
        "their options').")
  missing = sorted(k for k, p in accepted.items()
                   if p.default is inspect.Parameter.empty and k not in given)
  if missing:
    raise ValueError(f"source {source!r} needs data.source_kwargs {missing} "
                     f"(e.g. --config.data.source_kwargs.{missing[0]}=...).")
  return given


def table() -> str:
  """The README's markdown table: option, meaning, type, each source's
  default ("required" where it has none; blank: not an option of it)."""
  names = sorted(DATASETS.names())
  lines = ["| option | meaning | type | " +
           " | ".join(f"`{n}`" for n in names) + " |",
           "| --- | --- | --- |" + " --- |" * len(names)]
  for option, entry in options().items():
    cells = []
    for n in names:
      if n not in entry["sources"]:
        cells.append("")
      elif entry["sources"][n] is None and inspect.Parameter.empty is not \
          DATASETS.parameters(n)[option].default:
        cells.append("`None`")
      elif entry["sources"][n] is None:
        cells.append("required")
      else:
        text = repr(entry["sources"][n])
        cells.append(f"`{text}`" if len(text) <= 32 else
                     f"{len(entry['sources'][n])} names")
    lines.append(f"| `{option}` | {DESCRIPTIONS.get(option, '')} | "
                 f"{entry['type'].__name__} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
