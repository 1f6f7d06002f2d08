"""The model card of a published version: what a reviewer signs.

  <base>/<NAME>/<version>/assets.extra/model_card/
    model_card.json     this module's document (SCHEMA_VERSION; the JSON
                        Schema is model_card.schema.json beside this file)
    MODEL_CARD.md       Hugging Face model-index front matter + the card
    model_card.html     one self-contained page with the plots
    metrics.png         the main plot (figures with their intervals)

Sections (each built from files other stages wrote; this module reads no
config):
  model       name, version, task, classes, architecture, parameters'
              digest, checkpoint, config digest
  human       what only a person can write, from the YAML the user keeps
              with the experiment (`card.human`): owner, intended_use,
              out_of_scope_uses, known_limitations; `missing` lists the
              empty ones, and while any is missing `stable` cannot be
              assigned to the version (export/publish.py `promote`)
  data        dataset name, hash and source; images per split, defect-free
              and per class; quarantine count and reasons; exact and near
              duplicates and leakage across splits; the fingerprint's key
              numbers
  training    the config as its differences from the template
              (configs/segmentation.py), each with the template's value
  evaluation  the split's figures with percentile bootstrap intervals over
              images (gate.intervals: primary, per class, per size bucket
              with the fingerprint's bounds) and the false-alarm rate with
              its Clopper-Pearson interval; pixel IoU / Dice per class
  decision    the served image-level rule and the false-alarm budget it
              was calibrated within (None: argmax masks)
  robustness  when --mode=robustness ran on the exported checkpoint (as the
              first member): its clean figure, mCE, worst corruptions
              and attacks; with other members, the ensemble's clean figure
              and its gain over the best member
  gate        the ledger's records about these parameters (verdicts with
              the primary delta and interval, promotions, rollbacks)
  export      verification figures (max |logit diff| per check), platforms,
              the serving contract's buckets and input dtype
  stack       Python, platform and the library versions
"""

from __future__ import annotations

import collections
import datetime
import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from chameleon_jax import atomic
from chameleon_jax.governance import gate as gate_lib

SCHEMA_VERSION = 1
SCHEMA = Path(__file__).with_name("model_card.schema.json")  # JSON Schema.
HUMAN_FIELDS = ("owner", "intended_use", "out_of_scope_uses",
                "known_limitations")
# A person's answers that may be lists (one item per use or limitation).
LIST_FIELDS = ("out_of_scope_uses", "known_limitations")
STACK = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
         "numpy", "scipy", "tensorflow", "chameleon_jax")
WORST = 3  # Corruptions and attacks listed as the worst.


class CardError(ValueError):
  """A card or a human-fields file that cannot be used (names it)."""


def read_human(path: str | Path | None) -> dict:
  """The person's fields from the experiment's YAML (`card.human`).

  Args:
    path: the YAML file; None or "" = none kept yet (every field missing).

  Returns:
    {"source": str(path) | None, field: value | None for HUMAN_FIELDS,
     "missing": [fields still empty]}. Strings are stripped; list fields
    accept one string or a list of strings.

  Raises:
    CardError: the file does not exist, is not a YAML mapping, has a key
      outside HUMAN_FIELDS, or a value that is not text (all named).

  Example:
    owner: Quality team, line 3 (qa-line3@example.com)
    intended_use: Flag magnetic tiles with surface defects for a person
    out_of_scope_uses: [Other tile types, Unattended rejection]
    known_limitations: Blowholes under 30 px are missed more often.
  """
  out: dict[str, Any] = {"source": str(path) if path else None}
  values = {}
  if path:
    file = Path(path)
    if not file.is_file():
      raise CardError(f"card.human = {str(path)!r}: no such file; expected "
                      f"a YAML mapping with {list(HUMAN_FIELDS)}.")
    try:
      values = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
      raise CardError(f"{file}: not YAML ({e}).") from e
    if not isinstance(values, dict):
      raise CardError(f"{file}: a YAML mapping expected with keys "
                      f"{list(HUMAN_FIELDS)}, got {type(values).__name__}.")
    unknown = sorted(set(map(str, values)) - set(HUMAN_FIELDS))
    if unknown:
      raise CardError(f"{file}: unknown keys {unknown}; expected "
                      f"{list(HUMAN_FIELDS)}.")
  for field in HUMAN_FIELDS:
    out[field] = _text(values.get(field), field, path)
  out["missing"] = [f for f in HUMAN_FIELDS if not out[f]]
  return out


def _text(value, field: str, path) -> str | list[str] | None:
  if value is None:
    return None
  if isinstance(value, str):
    value = value.strip()
    return ([value] if value and field in LIST_FIELDS else value) or None
  if field in LIST_FIELDS and isinstance(value, list) and all(
      isinstance(v, str) for v in value):
    items = [v.strip() for v in value if v.strip()]
    return items or None
  raise CardError(f"{path}: {field} = {value!r}: expected text"
                  f"{' or a list of texts' if field in LIST_FIELDS else ''}.")


def missing_human(card: dict) -> list[str]:
  """The human fields a card still lacks (all of them for a card of
  another schema or without a human section)."""
  human = card.get("human") or {}
  return [f for f in HUMAN_FIELDS if not human.get(f)]


def data_section(dataset_dir: str | Path, source: str,
                 source_options: dict) -> dict:
  """The data a model was trained and tested on, from the dataset version
  ingest wrote (manifest, quarantine, duplicates, fingerprint)."""
  d = Path(dataset_dir)
  manifest = _json(d / "manifest.json")
  classes = manifest["class_names"]
  splits = {}
  order = {"train": 0, "val": 1, "test": 2}
  for split, entry in sorted(manifest["splits"].items(),
                             key=lambda kv: (order.get(kv[0], 3), kv[0])):
    labels = entry.get("label_counts", {})
    splits[split] = {"images": entry["count"],
                     "defect_free": entry.get("empty"),
                     "per_class": {classes[int(k)]: v for k, v in
                                   sorted(labels.items(), key=lambda x:
                                          int(x[0]))}}
  quarantine = _json(d / "quarantine.json", [])
  reasons = collections.Counter(_reason_kind(q.get("reason", ""))
                                for q in quarantine)
  duplicates = _json(d / "duplicates.json", {})
  fingerprint = _json(d / "fingerprint.json", {})
  return {
      "name": manifest.get("name"), "dataset_hash": manifest["dataset_hash"],
      "path": str(d), "source": source, "source_options": source_options,
      "class_names": classes, "splits": splits,
      "quarantined": {"count": len(quarantine),
                      "reasons": dict(reasons.most_common())},
      "duplicates": {"exact_groups": len(duplicates.get("exact", [])),
                     "near_pairs": len(duplicates.get("near", [])),
                     "leakage": duplicates.get("leakage",
                                               manifest.get("leakage"))},
      "fingerprint": _fingerprint_summary(fingerprint, classes)}


def _reason_kind(reason: str) -> str:
  """A quarantine reason without the file-specific details after ':'."""
  return reason.split(":")[0].strip() or "unknown"


def _fingerprint_summary(fp: dict, classes: list[str]) -> dict:
  images, masks = fp.get("images", {}), fp.get("masks", {})
  per_class = {}
  for name in classes[1:]:
    entry = fp.get("classes", {}).get(name, {})
    area = entry.get("components", {}).get("area", {})
    per_class[name] = {"images": entry.get("images"),
                       "pixel_frequency": entry.get("pixel_frequency"),
                       "component_area_p5": area.get("p5"),
                       "component_area_p50": area.get("p50")}
  return {"schema_version": fp.get("schema_version"),
          "images": images.get("count"), "height": images.get("height"),
          "width": images.get("width"), "channels": images.get("channels"),
          "bit_depth": images.get("bit_depth"),
          "empty_fraction": masks.get("empty_fraction"),
          "component_area": masks.get("component_area"),
          "classes": per_class}


def evaluation_section(metrics: dict, rows: list[dict] | None,
                       class_names: tuple[str, ...], split: str,
                       bounds: tuple[float, float] | None,
                       resamples: int = gate_lib.MIN_RESAMPLES,
                       seed: int = 0, alpha: float = 0.05) -> dict:
  """The evaluation of the exported checkpoint with its intervals.

  Args:
    metrics: eval/<split>_metrics.json.
    rows: eval/<split>_per_image.json (None: point figures only).
    class_names: background first.
    split: the split evaluated.
    bounds: the size buckets' bounds (gate.bucket_of); None: no buckets.
    resamples, seed, alpha: the bootstrap (the gate's settings).
  """
  out = {"split": split, "checkpoint_step": metrics.get("checkpoint_step"),
         "images": metrics.get("num_images"),
         "defect_images": metrics.get("num_defect_images"),
         "confidence": 1 - alpha, "resamples": resamples, "seed": seed,
         "figures": [], "false_alarm": None,
         "pixel": {k: v for k, v in metrics.items()
                   if k.split("/")[0] in ("iou", "dice") and "/" in k}}
  if rows is None or bounds is None:
    out["note"] = "no per-image results: figures without intervals."
    return out
  evidence = gate_lib.Evidence(name=split, dataset_hash="",
                               class_names=tuple(class_names),
                               rows=tuple(rows), identity={})
  try:
    out["figures"] = gate_lib.intervals(evidence, bounds, resamples, seed,
                                        alpha)
  except gate_lib.GateError as e:  # E.g. classification rows.
    out["note"] = f"figures without intervals: {e}"
    return out
  out["size_bounds"] = list(bounds)
  clean = [r for r in rows if not r["defect"]]
  alarms = sum(bool(r["false_alarm"]) for r in clean)
  if clean:
    ci = stats.binomtest(alarms, len(clean)).proportion_ci(
        1 - alpha, method="exact")
    out["false_alarm"] = {"value": alarms / len(clean), "low": ci.low,
                          "high": ci.high, "n": len(clean)}
  else:
    out["false_alarm"] = {"value": None, "low": None, "high": None, "n": 0,
                          "note": "no defect-free image: not measurable"}
  return out


def decision_section(decision: dict | None) -> dict | None:
  """The served rule from eval/decision.json (None: argmax masks)."""
  if not decision:
    return None
  return {"rule": decision.get("rule"),
          "false_alarm_budget": decision.get("max_false_alarm"),
          "chosen_on": decision.get("chosen_on"),
          "on_chosen_split": {k: decision.get("validation", {}).get(k) for k
                              in ("defect_image_dice", "false_alarm_rate")}}


def robustness_section(results: dict | None, step: int,
                       metric: str = "defect_image_dice") -> dict | None:
  """The robustness report's headline (robustness/results.json), when its
  first member is the checkpoint at `step` (the exported one); else None."""
  if not results or results["members"][0]["step"] != step:
    return None
  models = results["models"]
  model = models[0]  # The exported checkpoint (the first member).
  clean = results["clean"][model][metric]
  corruptions = sorted(
      ({"name": name, "group": entry.get("group"),
        "mean": results["summary"]["corruptions"][name][model]["mean"],
        "ce": results["summary"]["corruptions"][name][model]["ce"]}
       for name, entry in results["corruptions"].items()),
      key=lambda c: c["mean"])
  attacks = []
  for name, entry in results["attacks"].items():
    for target, found in entry["crafted_on"].items():
      values = found["metrics"].get(model)
      if values:
        attacks.append({"name": name, "crafted_on": target,
                        "epsilon": entry["epsilons"][-1],
                        "value": values[-1][metric]})
  attacks.sort(key=lambda a: a["value"])
  gain = ensemble = None
  if "ensemble" in models and len(models) > 1:
    members = [results["clean"][m][metric] for m in models if m != "ensemble"]
    ensemble = results["clean"]["ensemble"][metric]
    gain = ensemble - max(members)
  # Robustness figures are argmax masks' (robustness/report.py).
  return {"metric": f"argmax/{metric}", "model": model,
          "images": results["num_images"],
          "members": [{k: m[k] for k in ("workdir", "checkpoint", "step")}
                      for m in results["members"]],
          "clean": clean, "mce": results["summary"]["mce"][model],
          "worst_corruptions": corruptions[:WORST],
          "worst_attacks": attacks[:WORST], "ensemble_clean": ensemble,
          "ensemble_gain": gain}


def gate_section(records: list[dict], params_sha256: str | None) -> list:
  """The ledger's records about these parameters, oldest first."""
  out = []
  for r in records:
    if r["kind"] == "gate":
      if r.get("candidate", {}).get("params_sha256") != params_sha256:
        continue
      primary = next((c for c in r.get("comparisons", [])
                      if c["name"] == "primary"), None)
      out.append({
          "kind": "gate", "time": r["time"], "blessed": r.get("blessed"),
          "first_deploy": bool(r.get("first_deploy")),
          "champion": (r.get("champion") or {}).get("name"),
          "primary": ({k: primary.get(k) for k in
                       ("delta", "low", "high", "n")} if primary else None),
          "reasons": r.get("reasons", []), "warnings": r.get("warnings", []),
          "thresholds": r.get("thresholds")})
    elif r.get("params_sha256") == params_sha256:
      out.append({k: r.get(k) for k in ("kind", "time", "version",
                                         "previous", "reason")})
  return out


def export_section(metadata: dict) -> dict:
  """What --mode=export verified and how the version is served."""
  checks = metadata.get("verification", {}).get("checks", [])
  contract = metadata.get("input_contract", {})
  return {
      "platforms": metadata.get("platforms"),
      "xla_call_module_version": metadata.get("xla_call_module_version"),
      "max_abs_logit_diff": max((c["max_abs_logit_diff"] for c in checks),
                                default=None),
      "checks": checks,
      "buckets": contract.get("buckets"),
      "input_dtype": contract.get("input_dtype"),
      "channels": contract.get("channels"),
      "flip_tta": contract.get("flip_tta")}


def stack_section() -> dict:
  """Python, the platform and the installed versions of STACK."""
  versions = {}
  for name in STACK:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {"python": sys.version.split()[0], "platform": platform.platform(),
          "packages": versions}


def build(model: dict, human: dict, data: dict, training: dict,
          evaluation: dict, decision: dict | None, robustness: dict | None,
          gate: list, export: dict, stack: dict) -> dict:
  """The card (module docstring) from its sections, JSON-ready (an
  unmeasurable figure, NaN or infinite, is None)."""
  return atomic.json_ready({"schema_version": SCHEMA_VERSION,
          "generated": datetime.datetime.now(datetime.timezone.utc)
          .isoformat(timespec="seconds"),
          "model": model, "human": human, "data": data, "training": training,
          "evaluation": evaluation, "decision": decision,
          "robustness": robustness, "gate": gate, "export": export,
          "stack": stack})


def read(path: str | Path) -> dict:
  """A card written by this module.

  Raises:
    CardError: missing, not JSON, or another schema version.
  """
  path = Path(path)
  if not path.is_file():
    raise CardError(f"{path} is missing: the version has no model card "
                    "(export it again, or run --mode=card).")
  try:
    card = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise CardError(f"{path}: not JSON ({e.msg}).") from e
  if card.get("schema_version") != SCHEMA_VERSION:
    raise CardError(f"{path}: schema_version {card.get('schema_version')!r};"
                    f" this toolkit reads {SCHEMA_VERSION}.")
  return card


def _json(path: Path, default: Any = None) -> Any:
  if not path.is_file():
    if default is None:
      raise CardError(f"{path} is missing: the dataset version is "
                      "incomplete (run --mode=ingest again).")
    return default
  return json.loads(path.read_text())
