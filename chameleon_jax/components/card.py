"""The model card of a published version (governance/model_card.py): built
at `--mode=export`, refreshed by `--mode=gate`, rebuilt by `--mode=card`.

The card is assembled from what the stages wrote: the version's export
metadata and stored evaluation (assets.extra/), the dataset version
(manifest, quarantine, duplicates, fingerprint), the workdir's model.json
and robustness/results.json, the ledger, this config (as differences from
the template) and the person's YAML (`card.human`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import ml_collections

from chameleon_jax import atomic, configfile
from chameleon_jax.components import build
from chameleon_jax.components import gate as gate_mode
from chameleon_jax.data import catalog
from chameleon_jax.governance import card_render, ledger
from chameleon_jax.governance import model_card as mc
from chameleon_jax.governance import versions
from chameleon_jax.governance.gate import GateError
from chameleon_jax.model_io.card import params_digest
from chameleon_jax.model_io.state import eval_params


# The config --mode=train last ran with, in the workdir (modes.train writes
# it): the card's training section.
TRAINED_CONFIG = "config.json"


def _read(path: Path):
  return json.loads(path.read_text()) if path.is_file() else None


def _plain(value):
  """JSON-able copy (tuples -> lists; other objects by repr)."""
  return json.loads(json.dumps(value, default=repr))


def keep_trained_config(config: ml_collections.ConfigDict,
                        workdir: str) -> None:
  """Writes <workdir>/TRAINED_CONFIG, what the card reports as trained
  (`--mode=train` calls it; process 0 only)."""
  if jax.process_index() == 0:
    atomic.write_json(Path(workdir) / TRAINED_CONFIG,
                      _plain(build.to_dict(config)))


def build_card(config: ml_collections.ConfigDict, workdir: str,
               base: Path, name: str, version: int) -> dict:
  """The full card of `version` (exported from `workdir` with `config`).

  Raises:
    GateError: the version has no export metadata.
    model_card.CardError: the human-fields YAML or the dataset is unusable.
  """
  meta = versions.metadata(base, name, version)
  folder = versions.model_dir(base, name) / str(version)
  model_json = json.loads((Path(workdir) / "model.json").read_text())
  split = config.eval.split
  evidence = folder / versions.EVIDENCE
  metrics = _read(evidence / f"{split}_metrics.json") or {}
  rows = _read(evidence / f"{split}_per_image.json")
  dataset_dir = Path(model_json["dataset"])
  try:
    bounds = gate_mode.size_bounds(dataset_dir)
  except GateError as e:
    logging.warning("model card without size buckets: %s", e)
    bounds = None
  trained = _read(Path(workdir) / TRAINED_CONFIG)
  values = configfile.flatten(trained or _plain(config.to_dict()))
  template = configfile.flatten(_plain(configfile.template_values()))
  differences = {k: {"value": v, **({"template": template[k]}
                                    if k in template else {})}
                 for k, v in configfile.differences(values, template).items()}
  robustness = _read(Path(workdir) / "robustness" / "results.json")
  digest = meta["checkpoint"]["params_sha256"]
  g = config.gate
  evaluation = mc.evaluation_section(
      metrics, rows, tuple(meta["input_contract"]["class_names"]), split,
      bounds, resamples=int(g.resamples), seed=int(g.seed),
      alpha=float(g.alpha))
  if not metrics:
    evaluation["note"] = (f"the version was exported without a {split!r} "
                          "evaluation of its checkpoint (run --mode=eval "
                          "before --mode=export).")
  return mc.build(
      model={"name": name, "version": version, "task": build.task(config),
             "class_names": meta["input_contract"]["class_names"],
             "architecture": model_json["signature"],
             "params_sha256": digest,
             "checkpoint_step": meta["checkpoint"]["step"],
             "checkpoint": meta["checkpoint"]["which"],
             "config_sha256": meta.get("config_sha256"),
             "workdir": str(Path(workdir).resolve())},
      human=mc.read_human(config.card.human),
      data=mc.data_section(dataset_dir, config.data.source, _plain(
          catalog.checked(config.data.source,
                          build.to_dict(config.data.source_kwargs)))),
      training={"template": f"configs/{configfile.TEMPLATE_MODULE}.py",
                "config": (f"{TRAINED_CONFIG} (the config --mode=train ran "
                           "with)" if trained else "the config of --mode="
                           "export (the workdir has no config.json)"),
                "differences": differences},
      evaluation=evaluation,
      decision=mc.decision_section(_read(evidence / "decision.json")),
      robustness=mc.robustness_section(robustness,
                                       meta["checkpoint"]["step"]),
      gate=mc.gate_section(ledger.read(versions.model_dir(base, name) /
                                       ledger.LEDGER), digest),
      export=mc.export_section(meta), stack=mc.stack_section())


def write(config: ml_collections.ConfigDict, workdir: str, base: Path,
          name: str, version: int) -> Path:
  """Builds and writes the card of `version`; returns its HTML page."""
  card = build_card(config, workdir, base, name, version)
  return card_render.write(
      versions.model_dir(base, name) / str(version) / versions.CARD, card)


def card(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=card`: rebuilds the cards of the versions exported from this
  workdir's `export.checkpoint` (after editing the `card.human` YAML, or
  for versions exported before cards existed).

  Raises:
    GateError: no published version holds this checkpoint's parameters.
  """
  name = config.export.model_name or config.data.name
  base = Path(config.export.model_base_path or Path(workdir) / "serving")
  restored = build.restore(config, workdir, config.export.checkpoint)
  digest = params_digest(jax.device_get(eval_params(restored.state)))
  matching = gate_mode.versions_of(base, name, digest)
  if not matching:
    raise GateError(f"no version under {versions.model_dir(base, name)} "
                    f"holds {workdir}'s {config.export.checkpoint} "
                    f"checkpoint ({digest}): run --mode=export first.")
  pages = {}
  for version in matching:
    if jax.process_index() == 0:
      pages[f"version {version}"] = str(write(config, workdir, base, name,
                                              version))
  human = mc.read_human(config.card.human)
  return {**pages, "missing human fields": human["missing"] or "none"}
