"""The request log: one CloudEvents 1.0 JSON line per served image.

Each line is a structured-mode CloudEvent, the envelope KServe's payload
logger uses (`specversion`, `id`, `source`, `type`, `time`, `subject`,
`datacontenttype`, `data`), with this product's type EVENT_TYPE and, as
data, statistics only (statistics.py), never pixels:

  {"specversion": "1.0", "id": "<uuid4>", "type": "org.chameleon_jax.served_image",
   "source": "<server>", "time": "2026-12-04T17:00:00.123456Z",
   "subject": "<model>/<version>", "datacontenttype": "application/json",
   "data": {"model": "...", "version": 3, "signature": "encoded",
            "inputs": {...}, "embedding": [...], "outputs": {...},
            "sample": "samples/<id>.png" or null}}

A deployment whose logger posts CloudEvents (KServe's logger, a proxy)
writes these lines with any CloudEvents sink that appends structured JSON.
The writer rotates by size (the standard library's RotatingFileHandler:
`requests.jsonl`, `.1` the newest rotated, ...); the reader follows the
files by inode, so a rotation between two reads loses nothing (an inode
reused by a new file, seen as an offset beyond its size, is read from the
start), and leaves a last line without its newline (still being written)
for the next read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import logging.handlers
import os
import uuid
from collections import Counter
from pathlib import Path

EVENT_TYPE = "org.chameleon_jax.served_image"
SPECVERSION = "1.0"
MAX_BYTES = 64 << 20  # rotate the log at this size
BACKUPS = 5  # rotated files kept


def event(model: str, version: int, signature: str, inputs: dict,
          embedding: list[float], outputs: dict, source: str,
          sample: str | None = None) -> dict:
  """One served image's CloudEvent."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return {"specversion": SPECVERSION, "id": str(uuid.uuid4()),
          "source": source, "type": EVENT_TYPE,
          "time": now.isoformat().replace("+00:00", "Z"),
          "subject": f"{model}/{version}",
          "datacontenttype": "application/json",
          "data": {"model": model, "version": int(version),
                   "signature": signature, "inputs": inputs,
                   "embedding": [round(float(v), 6) for v in embedding],
                   "outputs": outputs, "sample": sample}}


class Writer:
  """Appends events to `path`, rotating at `max_bytes` (thread-safe)."""

  def __init__(self, path: str | Path, max_bytes: int = MAX_BYTES,
               backups: int = BACKUPS):
    self.path = Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._logger = logging.Logger(f"chameleon_jax.requests.{self.path}")
    self._handler = logging.handlers.RotatingFileHandler(
        self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    self._handler.setFormatter(logging.Formatter("%(message)s"))
    self._logger.addHandler(self._handler)
    self._logger.propagate = False

  def write(self, payload: dict) -> None:
    self._logger.info(json.dumps(payload, separators=(",", ":"),
                                 allow_nan=False))

  def close(self) -> None:
    self._handler.close()


@dataclasses.dataclass
class Reader:
  """Reads new events from a rotating log, oldest first.

  Attributes:
    path: the live log (`requests.jsonl`); rotated files beside it.
    skipped: reason -> lines skipped (unreadable JSON, not this event type,
      data without a field the monitor needs).
  """
  path: Path
  skipped: Counter = dataclasses.field(default_factory=Counter)
  _offsets: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.path = Path(self.path)

  def _files(self) -> list[Path]:
    rotated = sorted(
        (p for p in self.path.parent.glob(self.path.name + ".*")
         if p.name[len(self.path.name) + 1:].isdigit()),
        key=lambda p: -int(p.name[len(self.path.name) + 1:]))
    return rotated + ([self.path] if self.path.exists() else [])

  def read(self) -> list[dict]:
    """The complete events written since the last call."""
    events = []
    seen = {}
    for path in self._files():
      try:
        status = os.stat(path)
        offset = self._offsets.get(status.st_ino, 0)
        if offset > status.st_size:  # a new file on a reused inode
          offset = 0
        with open(path, "rb") as f:
          f.seek(offset)
          chunk = f.read()
      except FileNotFoundError:  # rotated away between listing and open
        continue
      end = chunk.rfind(b"\n") + 1
      seen[status.st_ino] = offset + end
      for line in chunk[:end].splitlines():
        if line.strip():
          parsed = self._parse(line)
          if parsed is not None:
            events.append(parsed)
    self._offsets = seen  # files gone are forgotten (their inodes reused)
    return events

  def _parse(self, line: bytes) -> dict | None:
    try:
      payload = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
      self.skipped["unreadable line"] += 1
      return None
    if not isinstance(payload, dict) or payload.get("type") != EVENT_TYPE:
      self.skipped["not a served-image event"] += 1
      return None
    data = payload.get("data")
    if (not isinstance(data, dict)
        or not all(isinstance(data.get(k), dict)
                   for k in ("inputs", "outputs"))
        or not isinstance(data.get("embedding"), list)
        or not isinstance(data.get("model"), str)
        or not isinstance(data.get("version"), int)):
      self.skipped["event without model, version or statistics"] += 1
      return None
    data["time"] = payload.get("time")
    return data
