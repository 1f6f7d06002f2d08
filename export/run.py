"""`python main.py --mode=export`: checkpoint -> verified, published version."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import jax
import tensorflow as tf

from chameleon_jax.evaluation.decision import DecisionRule
from chameleon_jax.governance import versions as layout
from chameleon_jax.model_io.card import params_digest
from chameleon_jax.model_io.restore import Restored
from chameleon_jax.model_io.state import eval_params, merge
from chameleon_jax.monitoring.reference import ProfileError
from export import (publish, reference_profile, savedmodel, server_flags,
                    verify)


@dataclasses.dataclass(frozen=True)
class ExportSettings:
  """The `export.*` config section (documented there).

  Attributes:
    model_name: the served model's name ("" = the dataset's name).
    model_base_path: the TF Serving base path ("" = <workdir>/serving).
    checkpoint: "best" or "latest".
    platforms: jax2tf lowering platforms ("cpu", "cuda", "tpu").
    buckets: (H, W) input buckets of the serving signature.
    warmup_batch_sizes: warmup requests per bucket; () = every batch size
      the server pads to (server_flags.ALLOWED_BATCH_SIZES), so no request
      compiles a program while it is served.
    input_dtype: "uint8", "uint16" or "float32" (in [0, 1]).
    top_k: classification: classes returned per image.
    version_label: label of the new version ("canary").
    reference_images: validation images served into the version's
      monitoring reference (reference_profile.py); 0 = none.
  """
  model_name: str
  model_base_path: str
  checkpoint: str
  platforms: tuple[str, ...]
  buckets: tuple[tuple[int, int], ...]
  warmup_batch_sizes: tuple[int, ...]
  input_dtype: str
  top_k: int
  version_label: str
  reference_images: int

  def __post_init__(self):
    object.__setattr__(self, "platforms", tuple(self.platforms))
    object.__setattr__(self, "buckets", tuple((int(h), int(w))
                                              for h, w in self.buckets))
    object.__setattr__(self, "warmup_batch_sizes",
                       tuple(int(b) for b in self.warmup_batch_sizes)
                       or server_flags.ALLOWED_BATCH_SIZES)


@dataclasses.dataclass(frozen=True)
class ModelInput:
  """What the served model is fed, as training saw it.

  Attributes:
    task: "segmentation" or "classification".
    scale: the pixel scale the model was trained at (`data.scale`).
    image_size: (H, W) classification inputs are resized to (segmentation:
      None, any bucket).
    data_name: the dataset's name (the default model name).
    decision: segmentation: the rule `--mode=eval` calibrated
      (eval/decision.json), None for argmax masks.
    flip_tta: segmentation: probabilities are the mean over 4 flips.
  """
  task: str
  scale: float
  image_size: tuple[int, int] | None
  data_name: str
  decision: DecisionRule | None = None
  flip_tta: bool = False


def contract_for(settings: ExportSettings, model_input: ModelInput,
                 card: dict, stride: int) -> savedmodel.Contract:
  """The serving contract of a model with this card and stride."""
  task = model_input.task
  return savedmodel.Contract(
      task=task, class_names=tuple(card["class_names"]),
      channels=int(card["signature"]["in_channels"]),
      input_dtype=settings.input_dtype, buckets=settings.buckets,
      stride=int(stride), scale=float(model_input.scale),
      image_size=(model_input.image_size if task == "classification"
                  else None),
      top_k=int(settings.top_k), platforms=settings.platforms,
      decision=(dataclasses.asdict(model_input.decision)
                if model_input.decision and task == "segmentation" else None),
      flip_tta=bool(model_input.flip_tta and task == "segmentation"))


def run(workdir: str | Path, restored: Restored, settings: ExportSettings,
        model_input: ModelInput, config_sha256: str,
        reference_examples: Iterable = (),
        false_alarm_budget: float | None = None) -> dict:
  """Exports, verifies (refusing to publish on failure) and publishes.

  Args:
    workdir: the trained workdir (default base path <workdir>/serving).
    restored: the model (`model_io.restore` of `settings.checkpoint`).
    settings: what to export and where.
    model_input: what the model is fed.
    config_sha256: digest of the experiment's config (recorded).
    reference_examples: (image, has a defect) of the validation split; the
      first `settings.reference_images` become the monitoring reference.
    false_alarm_budget: the calibrated rule's budget (None: argmax).

  Returns:
    {"model_name", "version", "path", "max_abs_logit_diff"}.

  Raises:
    verify.VerificationError (or AssertionError): the SavedModel does
      not reproduce the JAX model; nothing is published.
  """
  ex = settings
  graphdef, state, _, card = restored
  params = jax.device_get(eval_params(state))
  model_state = jax.device_get(state.model_state)
  model = merge(graphdef, params, model_state)
  contract = contract_for(ex, model_input, card, getattr(model, "stride", 1))
  name = ex.model_name or model_input.data_name
  base = Path(ex.model_base_path or Path(workdir) / "serving")
  module = savedmodel.ServingModule(graphdef, params, model_state, contract)
  with tempfile.TemporaryDirectory(dir=base.parent if base.parent.is_dir()
                                   else None) as tmp:
    directory = str(Path(tmp) / "saved_model")
    savedmodel.save(module, directory)
    report = verify.verify(directory, graphdef, params, model_state,
                           contract)
    logging.info("verification passed: %s", report["checks"])
    metadata = {
        "model_name": name, "jax_version": jax.__version__,
        "tensorflow_version": tf.__version__,
        "xla_call_module_version": _xla_call_module_version(directory),
        "platforms": list(contract.platforms),
        "config_sha256": config_sha256,
        "checkpoint": {"step": card["step"], "which": card["checkpoint"],
                       "params_sha256": params_digest(params)},
        "dataset_hash": card.get("dataset_hash"),
        "input_contract": contract.to_json(),
        "verification": report,
    }
    if ex.reference_images > 0:
      try:
        metadata["monitoring_reference"] = reference_profile.write(
            directory, contract,
            itertools.islice(reference_examples, ex.reference_images),
            false_alarm_budget)
      except (ProfileError, KeyError) as e:  # no val split, or too small
        logging.warning("no monitoring reference for this version (the "
                        "monitor will skip its requests): %s", e)
        metadata["monitoring_reference"] = {"error": str(e)}
    metadata["evaluation"] = _store_evidence(Path(workdir) / "eval",
                                             Path(directory), card["step"])
    requests = publish.warmup_requests(name, contract,
                                       ex.warmup_batch_sizes)
    version = publish.publish(Path(directory), base, name, requests, metadata,
                              label=ex.version_label)
  return {"model_name": name, "version": version,
          "path": str(base / name / str(version)),
          "max_abs_logit_diff": max(c["max_abs_logit_diff"]
                                    for c in report["checks"])}


def _store_evidence(eval_dir: Path, saved_model: Path, step: int) -> list:
  """Copies the evaluations of this checkpoint (eval/<split>_metrics.json,
  <split>_per_image.json, decision.json) into the version's
  assets.extra/evaluation/, where the regression gate reads a champion;
  returns the splits stored. Evaluations of another step are left out."""
  target = saved_model / layout.EVIDENCE
  stored = []
  for metrics_path in sorted(eval_dir.glob("*_metrics.json")):
    split = metrics_path.name[:-len("_metrics.json")]
    per_image = eval_dir / f"{split}_per_image.json"
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("checkpoint_step") != step or not per_image.is_file():
      logging.warning("%s is not of the exported step %d: not stored with "
                      "the version.", metrics_path, step)
      continue
    target.mkdir(parents=True, exist_ok=True)
    for path in (metrics_path, per_image):
      shutil.copy2(path, target / path.name)
    stored.append(split)
  if stored and (eval_dir / "decision.json").is_file():
    shutil.copy2(eval_dir / "decision.json", target / "decision.json")
  return stored


def _xla_call_module_version(directory: str) -> int | None:
  """The XlaCallModule op version recorded in the SavedModel's graph."""
  from tensorflow.core.protobuf import saved_model_pb2
  proto = saved_model_pb2.SavedModel()
  proto.ParseFromString((Path(directory) / "saved_model.pb").read_bytes())
  for meta in proto.meta_graphs:
    for function in meta.graph_def.library.function:
      for node in function.node_def:
        if node.op == "XlaCallModule":
          return int(node.attr["version"].i)
  return None
