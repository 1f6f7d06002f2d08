"""The train state: everything a step reads and writes, as one pytree.

It is also the layout of a checkpoint, which is why it lives with the
model on disk (model_io) and not with the training loop: restoring a model
for inference needs this layout and nothing of training.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax  # The optimizer is given: its state is part of the layout.
from flax import nnx


@flax.struct.dataclass
class TrainState:
  """Functional train state (big_vision style): donated to and returned by jit.

  `params` are the trainable `nnx.Param`s, `model_state` every other model
  variable (BatchNorm statistics, normalisation constants), `ema` an
  exponential moving average of `params` ({} when EMA is off).
  """
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  ema: Any


def create(model: nnx.Module, tx: optax.GradientTransformation,
           use_ema: bool) -> tuple[nnx.GraphDef, TrainState]:
  """(graphdef, TrainState) of `model` with `tx`'s initial state, step 0,
  and, with `use_ema`, an EMA initialised to the parameters.
  """
  graphdef = nnx.graphdef(model)
  params, model_state = model_variables(model)
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
      opt_state=tx.init(params),
      ema=jax.tree.map(jnp.copy, params) if use_ema else {})
  return graphdef, state


def merge(graphdef: nnx.GraphDef, params: Any, model_state: Any) -> nnx.Module:
  """Rebuilds the NNX module from pure dicts (inside or outside jit)."""
  return nnx.merge(graphdef, params, model_state)


def model_variables(model: nnx.Module) -> tuple[Any, Any]:
  """(params, model_state) of a module as pure dicts, the TrainState layout."""
  _, params, model_state = nnx.split(model, nnx.Param, ...)
  return nnx.to_pure_dict(params), nnx.to_pure_dict(model_state)


def eval_params(state: TrainState) -> Any:
  """The parameters to evaluate and export: the EMA when it is kept."""
  return state.ema if state.ema else state.params
