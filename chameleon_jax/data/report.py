"""The data report: `report.md` and its PNG plots, written with every version.

A readable answer to "what did ingest see?": counts and splits, the classes
(image and pixel frequencies, defect sizes), image sizes, intensities,
example images with their masks per class, and the full lists of what was
quarantined, duplicated or flagged. Everything is read from the version's own
files (manifest, fingerprint, shards), so the report can be rewritten for any
existing version with `write(Dataset.open(path), quarantine)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402
from array_record.python import array_record_module  # noqa: E402

from chameleon_jax.data import images as imio  # noqa: E402
from chameleon_jax.data import overlays
from chameleon_jax.data.records import decode_record

# Defect examples: a window of this many times the class's extent, >= the
# minimum side (pixels), when smaller than the image.
CROP_CONTEXT, CROP_MIN_SIDE = 4, 64
EXAMPLES_PER_CLASS = 4
MAX_LISTED = 200  # Rows per list in the Markdown; the JSON files hold all.


def _table(header: list[str], rows: list[list]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
            for row in rows]
  return lines


def _fmt(value, digits: int = 4) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.{digits}g}"
  return str(value)


def _display(image: np.ndarray) -> np.ndarray:
  """Any bit depth / channel count -> RGB uint8, stretched to 0.5-99.5 %."""
  x = image.astype(np.float32)
  lo, hi = np.percentile(x, [0.5, 99.5])
  return overlays.to_rgb_uint8((x - lo) / max(hi - lo, 1e-6))


def around(mask: np.ndarray, k: int) -> tuple[slice, slice]:
  """The window an example of class `k` is shown in: a square of
  CROP_CONTEXT x the class's bounding box side (at least CROP_MIN_SIDE)
  centred on it, inside the image; the whole image where that is not
  smaller. So that pits of a few pixels in a large image stay visible."""
  ys, xs = np.nonzero(mask == k)
  h, w = mask.shape
  if not ys.size:
    return np.s_[:, :]
  side = max(CROP_MIN_SIDE, CROP_CONTEXT * int(max(np.ptp(ys), np.ptp(xs)) + 1))
  if side >= min(h, w):
    return np.s_[:, :]
  top = int(np.clip((ys.min() + ys.max()) // 2 - side // 2, 0, h - side))
  left = int(np.clip((xs.min() + xs.max()) // 2 - side // 2, 0, w - side))
  return np.s_[top:top + side, left:left + side]


def _examples(ds, folder: Path) -> list[tuple[str, str]]:
  """One PNG per class: images holding it (defect-free images for class 0),
  defect classes cropped around their pixels (`around`)."""
  wanted: dict[int, list[str]] = {k: [] for k in range(ds.num_classes)}
  for a in ds.manifest["items"]:
    classes = a["classes_present"] if a["has_mask"] else [a["label"]]
    for k in classes or [0]:
      if len(wanted[k]) < EXAMPLES_PER_CLASS:
        wanted[k].append(a["id"])
  need = {i for ids in wanted.values() for i in ids}
  records = {}
  for split in ds.manifest["splits"].values():
    for shard in split["shards"]:
      reader = array_record_module.ArrayRecordReader(str(ds.path / shard["file"]))
      try:
        for r in range(reader.num_records()):
          record = decode_record(reader.read([r])[0])
          if record["id"] in need:
            records[record["id"]] = record
      finally:
        reader.close()
      if len(records) == len(need):
        break
  out = []
  for k, ids in wanted.items():
    if not ids:
      continue
    tiles = []
    for item_id in ids:
      record = records[item_id]
      window = around(record["mask"], k) if k else np.s_[:, :]
      rgb = _display(record["image"])[window]
      tile = np.concatenate([rgb, np.full((rgb.shape[0], 4, 3), 255, np.uint8),
                             overlays.colorize(rgb, record["mask"][window])],
                            axis=1)
      height = 160
      width = max(1, int(round(tile.shape[1] * height / tile.shape[0])))
      tiles.append(imio.resize_image(tile, height, width))
    gap = np.full((160, 12, 3), 255, np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
    name = f"examples_class{k}.png"
    imio.save_png(folder / name, row)
    out.append((ds.class_names[k], name))
  return out


def _plots(ds, fingerprint: dict, folder: Path) -> list[str]:
  items = ds.manifest["items"]
  names = ds.class_names
  classes = fingerprint["classes"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  counts = [classes[n]["images"] if any(a["has_mask"] for a in items)
            else classes[n]["image_labels"] for n in names]
  axes[0].bar(range(len(names)), counts, color="tab:blue")
  axes[0].set_title("images containing each class")
  freq = [max(classes[n]["pixel_frequency"], 1e-9) for n in names]
  axes[1].bar(range(len(names)), freq, color="tab:red")
  axes[1].set_yscale("log")
  axes[1].set_title("pixel frequency (log)")
  for ax in axes[:2]:
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
  axes[2].scatter([a["width"] for a in items], [a["height"] for a in items],
                  s=6, alpha=0.5)
  axes[2].set_xlabel("width")
  axes[2].set_ylabel("height")
  axes[2].set_title(f"image sizes ({fingerprint['images']['distinct_sizes']} "
                    "distinct)")
  fig.tight_layout()
  fig.savefig(folder / "overview.png", dpi=90)
  plt.close(fig)
  return ["overview.png"]


def write(ds, quarantine: list[dict]) -> Path:
  """Writes <version>/report.md and <version>/report/*.png; returns the .md."""
  folder = ds.path / "report"
  folder.mkdir(exist_ok=True)
  manifest = ds.manifest
  fingerprint = json.loads((ds.path / "fingerprint.json").read_text())
  duplicates = json.loads((ds.path / "duplicates.json").read_text())
  quality = json.loads((ds.path / "quality.json").read_text())
  lines = [f"# Data report: {manifest['name']} "
           f"(version {manifest['dataset_hash'][:16]})", "",
           f"{manifest['num_items']} items accepted, "
           f"{manifest['num_quarantined']} quarantined; "
           f"{fingerprint['masks']['empty']} of "
           f"{fingerprint['images']['with_mask']} masks are empty; "
           f"leakage check (duplicates across splits): "
           f"{manifest['leakage']}.", ""]
  lines += ["## Splits", ""] + _table(
      ["split", "items", "empty masks", "image labels"],
      [[s, v["count"], v["empty"], v["label_counts"]]
       for s, v in manifest["splits"].items()]) + [""]
  lines += ["## Classes", ""] + _table(
      ["class", "images", "image fraction", "pixel frequency",
       "share of image (mean / median)", "components", "component area p50"],
      [[n, c["images"], _fmt(c["image_fraction"]), _fmt(c["pixel_frequency"]),
        f"{_fmt(c['share_of_image']['mean'])} / "
        f"{_fmt(c['share_of_image']['median'])}",
        c.get("components", {}).get("count", "-"),
        _fmt(c.get("components", {}).get("area", {}).get("p50"))]
       for n, c in fingerprint["classes"].items()]) + [""]
  for plot in _plots(ds, fingerprint, folder):
    lines += [f"![overview](report/{plot})", ""]
  im = fingerprint["images"]
  lines += ["## Images", "",
            f"Height {im['height']}, width {im['width']}, channels "
            f"{im['channels']}, bit depth {im['bit_depth']}.", ""]
  lines += _table(["channel", "pixels", "mean", "std", "p0.5", "p50", "p99.5",
                   "fg mean", "fg p50"],
                  [[c, v["all"]["pixels"], _fmt(v["all"]["mean"]),
                    _fmt(v["all"]["std"]), _fmt(v["all"]["p0.5"]),
                    _fmt(v["all"]["p50"]), _fmt(v["all"]["p99.5"]),
                    _fmt(v["foreground"]["mean"]), _fmt(v["foreground"]["p50"])]
                   for c, v in fingerprint["intensity"].items()]) + [""]
  lines += ["## Examples per class", "",
            f"Image and mask; defect classes in a window of {CROP_CONTEXT}x "
            f"the class's extent (at least {CROP_MIN_SIDE} px) around it.", ""]
  for name, png in _examples(ds, folder):
    lines += [f"**{name}**", "", f"![{name}](report/{png})", ""]
  lines += [f"## Quarantine ({len(quarantine)})", ""]
  lines += _table(["file", "reason"], [[q["path"], q["reason"]]
                                       for q in quarantine[:MAX_LISTED]])
  lines += ["", f"## Duplicates ({len(duplicates['exact'])} exact groups, "
            f"{len(duplicates['near'])} near pairs)", ""]
  lines += _table(["kind", "items", "splits"],
                  [["exact", ", ".join(i["id"] for i in g["items"]),
                    ", ".join(i["split"] for i in g["items"])]
                   for g in duplicates["exact"][:MAX_LISTED]] +
                  [[f"near ({p['hamming_bits']} bits)",
                    f"{p['a']['id']}, {p['b']['id']}",
                    f"{p['a']['split']}, {p['b']['split']}"]
                   for p in duplicates["near"][:MAX_LISTED]])
  lines += ["", "## Quality flags", ""]
  lines += _table(["flag", "items", "examples"],
                  [[f, len(ids), ", ".join(ids[:10])]
                   for f, ids in sorted(quality["flags"].items())])
  path = ds.path / "report.md"
  path.write_text("\n".join(lines) + "\n")
  return path
