"""`--mode=gate` and `--mode=promote` (governance/, export/publish.py).

`--mode=gate`: this workdir's model against the champion.

The candidate is the workdir's evaluated checkpoint (eval/<split>_*.json
from `--mode=eval`, identified by its parameters' digest); the champion is
`gate.champion` (a trained and evaluated workdir) or else the version
labelled `stable` under the export base path, whose evaluation evidence
`--mode=export` stored with it. Every verdict is appended to the ledger next
to the models (<base>/<name>/blessings.jsonl) and written to
<workdir>/eval/gate.json. `--mode=promote` then moves `stable` to the
version exported from the gated checkpoint, if the gate blessed it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import ml_collections

from chameleon_jax import atomic
from chameleon_jax.components import build
from chameleon_jax.governance import card_render, ledger
from chameleon_jax.governance import gate as gate_lib
from chameleon_jax.governance.model_card import CardError
from chameleon_jax.governance.versions import (CARD, metadata, model_dir,
                                               published, read_labels,
                                               version_evidence)
from chameleon_jax.model_io.card import params_digest
from chameleon_jax.model_io.state import eval_params


def _read(path: Path, what: str) -> dict | list:
  if not path.is_file():
    raise gate_lib.GateError(f"{path} is missing: {what}.")
  return json.loads(path.read_text())


def workdir_evidence(config: ml_collections.ConfigDict | None, workdir: str,
                     split: str) -> tuple[gate_lib.Evidence, Path]:
  """(the evaluated checkpoint of `workdir` as Evidence, its dataset path).

  With `config` (the candidate's), the checkpoint is restored to check it
  is the evaluated step and to take its parameters' digest (what a blessing
  names); without (a champion workdir, trained with its own config), the
  evaluation's step identifies it.

  Raises:
    GateError: no evaluation of `split`, or the checkpoint changed since.
  """
  eval_dir = Path(workdir) / "eval"
  how = f"run --mode=eval with eval.split={split!r} on {workdir} first"
  metrics = _read(eval_dir / f"{split}_metrics.json", how)
  rows = _read(eval_dir / f"{split}_per_image.json", how)
  card = _read(Path(workdir) / "model.json", "the workdir has no trained model")
  if config is None:
    return gate_lib.Evidence(
        name=str(workdir), dataset_hash=card["dataset_hash"],
        class_names=tuple(card["class_names"]), rows=tuple(rows),
        identity={"checkpoint_step": metrics["checkpoint_step"]}), Path(
            card["dataset"])
  restored = build.restore(config, workdir, metrics["checkpoint"])
  step = restored.card["step"]
  if step != metrics["checkpoint_step"]:
    raise gate_lib.GateError(
        f"{workdir}: the {metrics['checkpoint']} checkpoint is step {step}, "
        f"the evaluation is of step {metrics['checkpoint_step']}; {how}.")
  digest = params_digest(jax.device_get(eval_params(restored.state)))
  evidence = gate_lib.Evidence(
      name=str(workdir), dataset_hash=card["dataset_hash"],
      class_names=tuple(card["class_names"]), rows=tuple(rows),
      identity={"params_sha256": digest, "checkpoint_step": step})
  return evidence, Path(card["dataset"])


def size_bounds(dataset_path: Path) -> tuple[float, float]:
  """(25th, 75th) percentile defect component area of the dataset
  (fingerprint masks.component_area), native pixels."""
  fingerprint = _read(dataset_path / "fingerprint.json", "the dataset's "
                      "fingerprint (ingest writes it)")
  area = fingerprint["masks"].get("component_area", {})
  if area.get("p25") is None or area.get("p75") is None:
    raise gate_lib.GateError(
        f"{dataset_path}/fingerprint.json has no masks.component_area "
        f"(schema {fingerprint.get('schema_version')}; size buckets need "
        "version 2): ingest the data again.")
  return float(area["p25"]), float(area["p75"])


def gate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Compares, records and returns the verdict (governance/gate.py).

  Raises:
    GateError: evidence that cannot be compared (named).
    ledger.LedgerError: a corrupt ledger (nothing appended).
  """
  g = config.gate
  thresholds = gate_lib.Thresholds.from_dict(
      {k: g[k] for k in gate_lib.THRESHOLD_FIELDS})
  split = config.eval.split
  name = config.export.model_name or config.data.name
  base = Path(config.export.model_base_path or Path(workdir) / "serving")
  ledger_path = model_dir(base, name) / ledger.LEDGER
  ledger.read(ledger_path)  # A corrupt ledger: refuse before comparing.
  candidate, dataset_path = workdir_evidence(config, workdir, split)
  stable = read_labels(model_dir(base, name)).get("stable")
  if g.champion:
    champion = workdir_evidence(None, g.champion, split)[0]
  elif stable is not None:
    champion = version_evidence(base, name, stable, split)
  else:
    champion = None
  if champion is None:
    verdict = gate_lib.first_deploy(candidate, thresholds, bool(g.first_deploy),
                                    f"{model_dir(base, name)}")
  else:
    verdict = gate_lib.compare(candidate, champion, thresholds,
                               size_bounds(dataset_path))
  verdict["model"] = {"base_path": str(base), "name": name}
  if jax.process_index() == 0:
    ledger.append(ledger_path, "gate", verdict)
    atomic.write_json(Path(workdir) / "eval" / "gate.json", verdict)
    refresh_cards(base, name, candidate.identity["params_sha256"])
  return verdict


def refresh_cards(base: Path, name: str, digest: str) -> None:
  """Renders the ledger's records into the cards of the versions holding
  these parameters (a version without a card is left as it is)."""
  records = ledger.read(model_dir(base, name) / ledger.LEDGER)
  for version in versions_of(base, name, digest):
    try:
      card_render.refresh(model_dir(base, name) / str(version) / CARD,
                          records)
    except CardError as e:
      logging.warning("version %d: card not refreshed: %s", version, e)


def promote(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=promote`: points `stable` at the version exported from this
  workdir's gated checkpoint (export/publish.py `promote`: it must be
  blessed; imports TensorFlow to rewrite the server's files).

  Raises:
    GateError: no blessed verdict in <workdir>/eval/gate.json, or no
      published version with the gated parameters.
  """
  from export import publish  # pylint: disable=import-outside-toplevel
  verdict = _read(Path(workdir) / "eval" / "gate.json",
                  "run --mode=gate on this workdir first")
  if not verdict.get("blessed"):
    raise gate_lib.GateError(
        f"{workdir}/eval/gate.json: not blessed ("
        f"{'; '.join(verdict.get('reasons', []))}); nothing to promote.")
  base, name = Path(verdict["model"]["base_path"]), verdict["model"]["name"]
  digest = verdict["candidate"]["params_sha256"]
  matching = versions_of(base, name, digest)
  if not matching:
    raise gate_lib.GateError(
        f"no version under {model_dir(base, name)} holds the gated "
        f"parameters {digest}: run --mode=export on {workdir} first.")
  record = publish.promote(base, name, matching[-1])
  return {"version": record["version"], "kind": record["kind"],
          "previous": record["previous"]}


def versions_of(base: Path, name: str, digest: str) -> list[int]:
  """The published versions that hold the parameters with this digest."""
  return [v for v in published(model_dir(base, name))
          if version_digest(base, name, v) == digest]


def version_digest(base: Path, name: str, version: int) -> str | None:
  """The parameters' digest a published version records (None: unknown)."""
  try:
    return metadata(base, name, version).get("checkpoint", {}).get(
        "params_sha256")
  except gate_lib.GateError:
    return None
