"""What governance reads of the TF Serving layout (export/publish.py writes
it): version labels, and the evaluation evidence stored with a version.

  <base>/<NAME>/labels.json                      {label: version}
  <base>/<NAME>/<version>/assets.extra/export_metadata.json
  <base>/<NAME>/<version>/assets.extra/evaluation/<split>_per_image.json,
                                                 <split>_metrics.json
  <base>/<NAME>/<version>/assets.extra/model_card/  the model card
                                                 (model_card.py, card_render.py)
  <base>/<NAME>/blessings.jsonl                  the ledger (ledger.py)

Plain JSON, so the gate needs no TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from chameleon_jax.governance.gate import Evidence, GateError

LABELS = "labels.json"
METADATA = "assets.extra/export_metadata.json"
EVIDENCE = "assets.extra/evaluation"
CARD = "assets.extra/model_card"


def model_dir(base: str | Path, name: str) -> Path:
  """<base>/<name>: one served model's versions, labels and ledger."""
  return Path(base) / name


def published(directory: Path) -> list[int]:
  """The integer versions published under a model directory, ascending."""
  directory = Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if p.is_dir() and p.name.isdigit())


def read_labels(directory: Path) -> dict[str, int]:
  """{label: version} of a model directory ({} if none)."""
  path = Path(directory) / LABELS
  return json.loads(path.read_text()) if path.is_file() else {}


def metadata(base: str | Path, name: str, version: int) -> dict:
  """A published version's export_metadata.json.

  Raises:
    GateError: no such version or no metadata.
  """
  path = model_dir(base, name) / str(version) / METADATA
  if not path.is_file():
    raise GateError(f"{path} is missing: version {version} of {name!r} was "
                    "not published by --mode=export.")
  return json.loads(path.read_text())


def version_evidence(base: str | Path, name: str, version: int,
                     split: str) -> Evidence:
  """A published version as gate Evidence (what --mode=export stored).

  Raises:
    GateError: the version has no evaluation evidence for `split`.
  """
  meta = metadata(base, name, version)
  folder = model_dir(base, name) / str(version) / EVIDENCE
  path = folder / f"{split}_per_image.json"
  if not path.is_file():
    raise GateError(
        f"{path} is missing: version {version} was exported without its "
        f"{split!r} evaluation; export it again after --mode=eval, or name "
        "a champion workdir (gate.champion).")
  return Evidence(
      name=f"{name} version {version}", dataset_hash=meta["dataset_hash"],
      class_names=tuple(meta["input_contract"]["class_names"]),
      rows=tuple(json.loads(path.read_text())),
      identity={"params_sha256": meta["checkpoint"]["params_sha256"],
                "checkpoint_step": meta["checkpoint"]["step"],
                "version": version})
