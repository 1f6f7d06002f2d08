"""The model card and the model signature.

`<workdir>/model.json` records what inference needs without the dataset:
the signature (architecture name and options, classes, input channels,
dtype), the class names and the dataset version the model was trained on.
Checkpoints store the same signature, so a workdir is never restored into
another architecture.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from chameleon_jax import atomic
from chameleon_jax.models import build_model

CARD_FILE = "model.json"


def signature(name: str, num_classes: int, in_channels: int, dtype: str,
              kwargs: Mapping[str, Any]) -> dict:
  """What identifies a model's parameter layout (stored in checkpoints).

  Args:
    name: registered architecture (`models.build_model`'s name).
    num_classes: output classes (background included).
    in_channels: input channels.
    dtype: computation dtype ("float32" or "bfloat16").
    kwargs: the architecture's options, as plain JSON values.
  """
  return {"name": name, "num_classes": int(num_classes),
          "in_channels": int(in_channels), "dtype": dtype,
          "kwargs": dict(kwargs)}


def build(sig: Mapping[str, Any], seed: int = 0) -> nnx.Module:
  """The model a signature describes, freshly initialised with `seed`."""
  return build_model(sig["name"], num_classes=sig["num_classes"],
                     in_channels=sig["in_channels"], dtype=sig["dtype"],
                     seed=seed, **sig["kwargs"])


def same_model(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
  """Whether two signatures build the same model: the same architecture,
  classes, channels and dtype, and equal graphs (layers, their static
  options and parameter shapes), compared abstractly (no weights)."""
  head = ("name", "num_classes", "in_channels", "dtype")
  if any(a.get(k) != b.get(k) for k in head):
    return False
  try:
    graphs = [nnx.graphdef(nnx.eval_shape(lambda s=s: build(s)))
              for s in (a, b)]
  except (TypeError, ValueError, KeyError):  # Options one build refuses.
    return False
  return graphs[0] == graphs[1]


def write_card(workdir: str | Path, sig: Mapping[str, Any],
               class_names: Sequence[str], dataset: str,
               dataset_hash: str) -> None:
  """Writes <workdir>/model.json atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  atomic.write_json(Path(workdir) / CARD_FILE, {
      "signature": dict(sig), "class_names": list(class_names),
      "dataset": str(dataset), "dataset_hash": dataset_hash})


def read_card(workdir: str | Path) -> dict:
  """The model card of `workdir`.

  Raises:
    FileNotFoundError: `workdir` holds no trained model.
  """
  path = Path(workdir) / CARD_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: {workdir} holds no trained "
                            "model (run --mode=train first).")
  return json.loads(path.read_text())


def params_digest(params: Any) -> str:
  """sha256 over every parameter's path, shape, dtype and bytes: equal
  digests mean bitwise-equal parameters of the same layout."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(
      jax.device_get(params)):
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}"
                  .encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()
