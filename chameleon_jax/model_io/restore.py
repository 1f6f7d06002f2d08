"""Restoring trained models for inference: one workdir, or ensemble members.

The model is built from the workdir's own model card, its state restored
from the best or the latest checkpoint. Nothing here imports the training
loop or the input pipeline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import optax
from flax import nnx
from jax.sharding import Mesh

from chameleon_jax import sharding
from chameleon_jax.model_io import card as card_lib
from chameleon_jax.model_io import checkpoint as ckpt_lib
from chameleon_jax.model_io import state as state_lib

CHECKPOINTS = ("best", "latest")


class Restored(NamedTuple):
  """A restored model: its graph, replicated state, mesh and model card
  (with "step" and "checkpoint", the one actually restored)."""
  graphdef: nnx.GraphDef
  state: state_lib.TrainState
  mesh: Mesh
  card: dict


def restore(workdir: str | Path, which: str, *,
            tx: optax.GradientTransformation, use_ema: bool,
            best_metric: str | None,
            expected: Callable[[dict], Mapping[str, Any]] | None = None,
            mesh: Mesh | None = None) -> Restored:
  """Restores `workdir`'s `best` or `latest` checkpoint.

  Args:
    workdir: a trained workdir (holds model.json and checkpoints/).
    which: "best" (the best validation checkpoint) or "latest". Where no
      best checkpoint exists (no validation ran, or the run kept none:
      `best_metric` empty), the latest is restored and the card says so.
    tx: the optimizer the run trained with (its state is part of the
      checkpoint layout; its schedule does not matter).
    use_ema: whether the run kept an EMA of the parameters.
    best_metric: the metric the best checkpoints were kept by (None: none).
    expected: maps the card's signature to the one the caller's config
      describes (for the card's classes and channels); a checkpoint of
      another model is refused (`checkpoint.ModelMismatchError`).
    mesh: the device mesh (default: every device, one "data" axis).

  Raises:
    ValueError: `which` is neither "best" nor "latest".
    FileNotFoundError: no model card or no checkpoint in `workdir`.
    checkpoint.ModelMismatchError: the checkpoint is of another model.
  """
  if which not in CHECKPOINTS:
    raise ValueError(f"checkpoint {which!r}; expected one of {CHECKPOINTS}.")
  card = card_lib.read_card(workdir)
  sig = card["signature"]
  mesh = mesh or sharding.make_mesh()
  graphdef, state = state_lib.create(card_lib.build(sig), tx, use_ema)
  state = sharding.replicate(state, mesh)
  checkpointer = ckpt_lib.Checkpointer(workdir, every_steps=1, keep=1,
                                       best_metric=best_metric or None)
  target = ckpt_lib.abstract(state)
  check = dict(expected(sig)) if expected is not None else sig
  restored = None
  if which == "best":
    if checkpointer.keeps_best():
      restored = checkpointer.restore(target, check, best=True)
    if restored is None:
      logging.warning("No best checkpoint in %s (%s): restoring the latest.",
                      workdir, "no validation ran" if best_metric
                      else "no best metric was kept")
      which = "latest"
  if restored is None:
    restored = checkpointer.restore(target, check)
  checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}; train first.")
  state, _, step = restored
  card = {**card, "step": step, "checkpoint": which}
  logging.info("Restored %s checkpoint, step %d.", which, step)
  return Restored(graphdef, state, mesh, card)


def load_members(workdirs: Sequence[str | Path], which: str, *,
                 tx: optax.GradientTransformation, use_ema: bool,
                 best_metric: str | None
                 ) -> tuple[list[tuple[nnx.GraphDef, Any, dict, str]], Mesh]:
  """[(graphdef, state, card, workdir)] of an ensemble, in `workdirs` order,
  and their common mesh. Each member's architecture comes from its own
  model card; `which`, `tx`, `use_ema` and `best_metric` are the
  experiment's.

  Raises:
    ValueError: members disagree on classes or input channels.
  """
  mesh = sharding.make_mesh()
  members = []
  for wd in workdirs:
    graphdef, state, _, card = restore(wd, which, tx=tx, use_ema=use_ema,
                                       best_metric=best_metric, mesh=mesh)
    members.append((graphdef, state, card, str(wd)))
  first = members[0][2]["signature"]
  for _, _, card, wd in members[1:]:
    sig = card["signature"]
    if (sig["num_classes"], sig["in_channels"]) != (first["num_classes"],
                                                    first["in_channels"]):
      raise ValueError(
          f"Ensemble member {wd} has {sig['num_classes']} classes and "
          f"{sig['in_channels']} input channels; {workdirs[0]} has "
          f"{first['num_classes']} and {first['in_channels']}.")
  return members, mesh
