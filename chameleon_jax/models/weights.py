"""Model weights in and out: the toolkit's own (Orbax) and, in
models/torch_import.py, torchvision/timm state dicts.

`save_weights` writes every variable of a model (parameters, BatchNorm
statistics, normalisation constants, RNG state) as an Orbax checkpoint with
the model's constructor arguments next to it; `load_weights` restores into a
model built with the same arguments and refuses a mismatch by naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

SPEC_FILE = "model_spec.json"


def flat_paths(tree: Any) -> dict[str, Any]:
  """{'a/0/b': leaf} for a nested (pure-dict) state."""
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path):
          leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def save_weights(model: nnx.Module, directory: str | os.PathLike[str],
                 spec: dict | None = None) -> Path:
  """Writes `model`'s variables to `directory` (must not exist yet).

  `spec` (e.g. build_model's arguments) is stored as model_spec.json so a
  reader can rebuild the architecture before loading.
  """
  directory = Path(directory).absolute()
  if directory.exists():
    raise FileExistsError(f"{directory} exists; weights are never overwritten.")
  state = nnx.to_pure_dict(nnx.state(model))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "state", state)
  (directory / SPEC_FILE).write_text(json.dumps(spec or {}, indent=1,
                                                sort_keys=True))
  return directory


def read_spec(directory: str | os.PathLike[str]) -> dict:
  """The model_spec.json saved beside weights (architecture, options).

  Raises:
    FileNotFoundError: `directory` holds no saved weights.
  """
  return json.loads((Path(directory) / SPEC_FILE).read_text())


def load_weights(model: nnx.Module, directory: str | os.PathLike[str]
                 ) -> nnx.Module:
  """Restores weights saved by `save_weights` into `model` (in place)."""
  directory = Path(directory).absolute()
  target = nnx.to_pure_dict(nnx.state(model))
  with ocp.StandardCheckpointer() as checkpointer:
    stored = checkpointer.metadata(directory / "state").item_metadata
    want, have = flat_paths(target), flat_paths(stored)
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    # Typed PRNG keys are stored as raw key data (one more axis): skip them.
    shapes = sorted(k for k in set(want) & set(have)
                    if not jax.dtypes.issubdtype(want[k].dtype,
                                                 jax.dtypes.prng_key)
                    and tuple(want[k].shape) != tuple(have[k].shape))
    if missing or unexpected or shapes:
      raise ValueError(
          f"Weights in {directory} do not fit the model: missing "
          f"{missing[:10]}{' ...' if len(missing) > 10 else ''}, unexpected "
          f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}, shape "
          f"mismatch {[(k, tuple(have[k].shape), tuple(want[k].shape)) for k in shapes[:10]]}."
          f" Stored spec: {read_spec(directory)}")
    restored = checkpointer.restore(
        directory / "state", jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                          target))
  state = nnx.state(model)
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(model, state)
  return model
