"""CSV / JSON / JSONL lists of images with a class label (classification).

One row per image: an image path (relative to `root`, default the list's
folder), a label (a class name, or an index into `class_names`) and
optionally a group key (part, batch, patient) that keeps related images in
one split. Items carry no mask (`has_mask=False`). A row with an empty or
missing image, an unknown label or an undecodable file is quarantined with
its row number.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from chameleon_jax.data import sources
from chameleon_jax.data.sources import Item, Rejected, SourceInfo
from chameleon_jax.registry import DATASETS


def _rows(path: Path) -> list[dict]:
  suffix = path.suffix.lower()
  try:
    text = path.read_text(encoding="utf-8-sig")
  except OSError as e:
    raise ValueError(f"{path}: cannot read the list ({e}).") from e
  if suffix == ".csv":
    return list(csv.DictReader(text.splitlines()))
  try:
    if suffix == ".jsonl":
      return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix == ".json":
      doc = json.loads(text)
      rows = doc.get("items") if isinstance(doc, dict) else doc
      if not isinstance(rows, list):
        raise ValueError("expected a list of objects or {'items': [...]}")
      return rows
  except ValueError as e:
    raise ValueError(f"{path}: not a valid {suffix} list ({e}).") from e
  raise ValueError(f"{path}: unknown list type {suffix!r}; expected .csv, "
                   ".json or .jsonl.")


@DATASETS.register("table")
def table(
    path: str,
    image_column: str = "image",
    label_column: str = "label",
    group_column: str = "",
    root: str = "",
    class_names: Sequence[str] = (),
    channels: int | None = None,
) -> tuple[SourceInfo, Iterator[Item | Rejected]]:
  """Classification items from a list file.

  `class_names` fixes the classes and their order (the first is the OK /
  defect-free class, which the false-alarm metrics use); by default they are
  the distinct labels, sorted.
  """
  list_path = Path(path)
  rows = _rows(list_path)
  if not rows:
    raise ValueError(f"{list_path}: the list has no rows.")
  columns = [c for c in (image_column, label_column, group_column) if c]
  first = rows[0] if isinstance(rows[0], dict) else {}
  missing = [c for c in columns if c not in first]
  if missing:
    raise ValueError(f"{list_path}: columns {missing} not found; the first "
                     f"row has {sorted(first)}.")
  names = list(class_names) or sorted(
      {str(r.get(label_column)) for r in rows if isinstance(r, dict)
       and str(r.get(label_column) or "").strip()})
  index = {name: i for i, name in enumerate(names)}
  base = Path(root) if root else list_path.parent

  def item(number: int, row) -> Item | Rejected:
    where = f"{list_path}:row {number}"
    if not isinstance(row, dict):
      return Rejected(where, f"row is not an object ({str(row)[:40]}).")
    image = str(row.get(image_column) or "").strip()
    label = str(row.get(label_column) or "").strip()
    if not image:
      return Rejected(where, f"empty {image_column!r}.")
    if label not in index:
      return Rejected(where, f"label {label!r} is not one of {names}.")
    path = sources.resolve_under(base, image, where, repr(image_column))
    if isinstance(path, Rejected):
      return path
    loaded = sources.read_image(path, channels)
    if isinstance(loaded, Rejected):
      return Rejected(where, f"{loaded.path}: {loaded.reason}")
    pixels, image_bytes = loaded
    return Item(Path(image).with_suffix("").as_posix(), pixels,
                np.zeros(pixels.shape[:2], np.uint8), index[label],
                str(base / image), sources.sha256(image_bytes, label.encode()),
                has_mask=False,
                group=str(row.get(group_column, "")) if group_column else "")

  def items():
    # Row numbers as a spreadsheet shows them (the CSV header is row 1).
    offset = 2 if list_path.suffix.lower() == ".csv" else 1
    for number, row in enumerate(rows, start=offset):
      yield sources.guarded(f"{list_path}: row {number}", item, number, row)

  return SourceInfo(tuple(names), channels), items()
