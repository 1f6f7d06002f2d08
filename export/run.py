"""`python main.py --mode=export`: checkpoint -> verified, published version."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from chameleon_jax import components
from chameleon_jax.evaluation.inference import restore
from chameleon_jax.train.state import eval_params, merge
from export import publish, savedmodel


def _digest(payload) -> str:
  return hashlib.sha256(json.dumps(payload, sort_keys=True,
                                   default=str).encode()).hexdigest()


def _params_digest(params) -> str:
  """sha256 over every parameter's path, shape, dtype and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}"
                  .encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def contract_for(config: ml_collections.ConfigDict, card: dict,
                 stride: int) -> savedmodel.Contract:
  task = components.task(config)
  size = components.image_size(config)
  return savedmodel.Contract(
      task=task, class_names=tuple(card["class_names"]),
      channels=int(card["signature"]["in_channels"]),
      input_dtype=config.export.input_dtype,
      buckets=tuple((int(h), int(w)) for h, w in config.export.buckets),
      stride=int(stride), scale=float(config.data.scale),
      image_size=size if task == "classification" else None,
      top_k=int(config.export.top_k),
      platforms=tuple(config.export.platforms))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Exports, verifies (refusing to publish on failure) and publishes."""
  ex = config.export
  graphdef, state, _, card = restore(config, workdir, ex.checkpoint)
  params = jax.device_get(eval_params(state))
  model_state = jax.device_get(state.model_state)
  model = merge(graphdef, params, model_state)
  contract = contract_for(config, card, getattr(model, "stride", 1))
  name = ex.model_name or config.data.name
  base = Path(ex.model_base_path or Path(workdir) / "serving")
  module = savedmodel.ServingModule(graphdef, params, model_state, contract)
  with tempfile.TemporaryDirectory(dir=base.parent if base.parent.is_dir()
                                   else None) as tmp:
    directory = str(Path(tmp) / "saved_model")
    savedmodel.save(module, directory)
    report = savedmodel.verify(directory, graphdef, params, model_state,
                               contract)
    logging.info("verification passed: %s", report["checks"])
    metadata = {
        "model_name": name, "jax_version": jax.__version__,
        "tensorflow_version": tf.__version__,
        "xla_call_module_version": _xla_call_module_version(directory),
        "platforms": list(contract.platforms),
        "config_sha256": _digest(components.to_dict(config)),
        "checkpoint": {"step": card["step"], "which": card["checkpoint"],
                       "params_sha256": _params_digest(params)},
        "dataset_hash": card.get("dataset_hash"),
        "input_contract": contract.to_json(),
        "verification": report,
    }
    requests = publish.warmup_requests(name, contract,
                                       tuple(ex.warmup_batch_sizes))
    version = publish.publish(Path(directory), base, name, requests, metadata,
                              label=ex.version_label)
  return {"model_name": name, "version": version,
          "path": str(base / name / str(version)),
          "max_abs_logit_diff": max(c["max_abs_logit_diff"]
                                    for c in report["checks"])}


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
