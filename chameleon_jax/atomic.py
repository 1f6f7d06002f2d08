"""Atomic file writes: a reader sees the old file or the new one, never half.

Every file the toolkit writes for another stage to read (manifests, model
cards, decision rules, plans, reports, PNGs, server config) goes through
here: the content is written to a temporary file in the same directory
(same filesystem, so the rename is atomic on POSIX), flushed to disk, then
renamed over the target. A write that fails leaves the target untouched and
removes its temporary file.

Example:
  >>> atomic.write_json(workdir / "model.json", card)
  >>> with atomic.replacing(out / "mask.png") as tmp:
  ...   image.save(tmp, format="PNG")
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
  """Yields a temporary path beside `path`; renames it over `path` on exit.

  Args:
    path: the file to write. Its directory is created if missing.

  Raises:
    Whatever the body raises; the temporary file is then removed and `path`
    keeps its previous content (or stays absent).
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    yield tmp
    with open(tmp, "rb+") as f:  # The bytes reach the disk before the name.
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_bytes(path: str | Path, data: bytes) -> Path:
  """Writes `data` to `path` atomically; returns `path` as a Path."""
  with replacing(path) as tmp:
    tmp.write_bytes(data)
  return Path(path)


def write_text(path: str | Path, text: str) -> Path:
  """Writes `text` (UTF-8) to `path` atomically; returns `path` as a Path."""
  return write_bytes(path, text.encode("utf-8"))


def json_ready(value: Any) -> Any:
  """`value` with NumPy scalars as Python ones and every non-finite float
  as None: JSON has no NaN, and an undefined figure is null."""
  if isinstance(value, dict):
    return {str(k): json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(v) for v in value]
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return json_ready(value.item())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str | Path, payload: Any, *, indent: int | None = 1,
               sort_keys: bool = False) -> Path:
  """Writes `payload` as JSON plus a newline to `path` atomically.

  Args:
    path: the target file.
    payload: anything `json.dumps` accepts.
    indent: JSON indentation (1 keeps diffs readable and files small).
    sort_keys: sort object keys (byte-identical files for equal payloads).
  """
  return write_text(path, json.dumps(payload, indent=indent,
                                     sort_keys=sort_keys) + "\n")
