"""blessings.jsonl: every gate decision and label move, append-only.

  <model_base_path>/<NAME>/blessings.jsonl

One JSON object per line, appended and fsynced, never rewritten: a gate's
verdict ("kind": "gate"), a promotion to `stable` ("promote"), a forced one
("force", with the person's reason) and a rollback ("rollback"). A line
that does not parse makes the whole ledger unreadable for promotion
(`LedgerError` names the line): history is never guessed or repaired.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

LEDGER = "blessings.jsonl"
KINDS = ("gate", "promote", "force", "rollback")


class LedgerError(ValueError):
  """The ledger cannot be trusted (names the file and line)."""


def append(path: str | Path, kind: str, record: dict) -> dict:
  """Appends `record` with its kind and the UTC time; returns what was
  written.

  Raises:
    ValueError: an unknown kind.
  """
  if kind not in KINDS:
    raise ValueError(f"ledger kind {kind!r}; expected one of {KINDS}.")
  entry = {"kind": kind, "time": datetime.datetime.now(
      datetime.timezone.utc).isoformat(timespec="seconds"), **record}
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  line = json.dumps(entry, sort_keys=True, allow_nan=False) + "\n"
  with open(path, "a", encoding="utf-8") as f:
    f.write(line)
    f.flush()
    os.fsync(f.fileno())
  return entry


def read(path: str | Path) -> list[dict]:
  """Every record, in order ([] when there is no ledger).

  Raises:
    LedgerError: a line that is not a JSON object with a known kind.
  """
  path = Path(path)
  if not path.is_file():
    return []
  records = []
  for number, line in enumerate(path.read_text(encoding="utf-8")
                                .splitlines(), start=1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise LedgerError(f"{path}:{number}: not JSON ({e.msg}); the ledger "
                        "is append-only and is not repaired: move it aside "
                        "and record why, or restore it from backup.") from e
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
      raise LedgerError(f"{path}:{number}: not a ledger record (kind "
                        f"{record.get('kind') if isinstance(record, dict) else None!r}"
                        f"; expected one of {KINDS}).")
    records.append(record)
  return records


def blessing(records: list[dict], params_sha256: str,
             dataset_hash: str) -> dict | None:
  """The latest gate record that blessed exactly these parameters on this
  dataset, or None."""
  for record in reversed(records):
    if (record["kind"] == "gate" and record.get("blessed") is True and
        record.get("candidate", {}).get("params_sha256") == params_sha256 and
        record.get("dataset_hash") == dataset_hash):
      return record
  return None
