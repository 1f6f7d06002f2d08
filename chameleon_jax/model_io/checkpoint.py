"""Orbax checkpoints: latest-K for exact resume, plus the best by a metric.

  <workdir>/checkpoints/<step>/  state (TrainState), data (Grain iterator
                                 position), meta (model signature, step)
  <workdir>/best/<step>/         state and meta of the best evaluation so far

The two managers save asynchronously, possibly at the same step; each has its
own barrier key prefix, since Orbax names its cross-process barriers by step
(two managers saving step N at once would otherwise share, and deadlock on,
one barrier in multi-process runs).

A checkpoint records the model signature (architecture name and options);
resuming a workdir with a different model is refused with the differing keys
named, instead of an opaque shape error.

A bad checkpoint costs one checkpoint: a latest step that cannot be read
(a truncated data file, an empty metadata file) is moved aside to
<workdir>/checkpoints.corrupt/<step>/ (kept for inspection, never deleted)
with a warning naming the step, the file and the error, and the next older
step is restored. Only when every step is unreadable does restoring fail
(`CheckpointError`, each step and its error named).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from chameleon_jax.model_io import card as card_lib
from chameleon_jax.model_io.state import TrainState


LATEST_DIR = "checkpoints"  # <workdir>/checkpoints/<step>/: the resumable ones.
CORRUPT_DIR = "checkpoints.corrupt"  # Unreadable steps, moved aside.


class CheckpointError(RuntimeError):
  """No checkpoint of the workdir can be read (each step's error named)."""


class ModelMismatchError(ValueError):
  """The workdir holds a checkpoint of another model."""


class Checkpointer:
  """The latest-K and the best checkpoints of one workdir.

  Args:
    workdir: the run's directory (checkpoints/ and best/ below it).
    every_steps: save the latest every this many steps (`should_save`).
    keep: how many of the latest to keep.
    best_metric: validation metric the best checkpoint is chosen by; None
      keeps no best checkpoints.
    best_mode: "max" or "min" of `best_metric`.
  """

  def __init__(self, workdir: str | Path, *, every_steps: int, keep: int,
               best_metric: str | None, best_mode: str = "max"):
    workdir = Path(workdir).absolute()
    self._latest = ocp.CheckpointManager(
        workdir / LATEST_DIR,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every_steps, create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="latest")))
    self._best = None
    self.best_metric = best_metric
    if best_metric:
      self._best = ocp.CheckpointManager(
          workdir / "best",
          options=ocp.CheckpointManagerOptions(
              max_to_keep=1, best_fn=lambda m: m[best_metric],
              best_mode=best_mode, create=True,
              multiprocessing_options=ocp.options.MultiprocessingOptions(
                  barrier_sync_key_prefix="best")))

  def keeps_best(self) -> bool:
    """Whether best checkpoints are kept (a best metric was given)."""
    return self._best is not None

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def should_save(self, step: int) -> bool:
    return self._latest.should_save(step)

  def save(self, step: int, state: TrainState, data_state: dict,
           signature: dict, force: bool = False) -> None:
    self._latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave({"signature": signature, "step": step})),
                      force=force)

  def save_best(self, step: int, state: TrainState, signature: dict,
                metrics: dict[str, float]) -> None:
    if self._best is None:
      return
    if self.best_metric not in metrics:
      raise KeyError(
          f"train.best_metric={self.best_metric!r} is not among the validation "
          f"metrics ({', '.join(sorted(metrics))}).")
    value = metrics[self.best_metric]
    if value != value:  # NaN: not comparable.
      return
    self._best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({"signature": signature, "step": step,
                                "metrics": metrics})),
                    metrics={self.best_metric: float(value)})

  def restore(self, abstract_state: TrainState, signature: dict, *,
              best: bool = False) -> tuple[TrainState, dict | None, int] | None:
    """Restores (state, data_state, step) from the latest readable (or the
    best) step; None where there is none. `data_state` is None for a best
    checkpoint. Unreadable latest steps are moved aside (module docstring).

    Raises:
      ValueError: `best` without a best metric (no best checkpoints kept).
      ModelMismatchError: the checkpoint's signature is not `signature`.
      CheckpointError: no step can be read (the best one, when `best`).
    """
    if best and self._best is None:
      raise ValueError("No best checkpoints are kept (no best_metric): "
                       "restore the latest instead.")
    manager = self._best if best else self._latest
    steps = ([manager.best_step()] if best else
             sorted(manager.all_steps(), reverse=True))
    failures = []
    for step in (s for s in steps if s is not None):
      try:
        restored = self._read(manager, step, abstract_state, signature)
      except ModelMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Orbax/TensorStore raise many types (OUT_OF_RANGE, JSON errors).
        failures.append((step, f"{type(e).__name__}: {str(e)[:300]}"))
        logging.warning("Checkpoint step %d in %s cannot be read (%s)%s.",
                        step, manager.directory, failures[-1][1],
                        "" if best else "; trying the next older step")
        if best:
          break
        continue
      if failures:
        self._set_aside([s for s, _ in failures])
      return restored
    if not failures:
      return None
    raise CheckpointError(
        f"no checkpoint in {manager.directory} can be read: " + "; ".join(
            f"step {s}: {why}" for s, why in failures) +
        (". Evaluate eval.checkpoint='latest' instead." if best else
         ". Restore them from a backup, or train in a new --workdir."))

  def _read(self, manager, step: int, abstract_state: TrainState,
            signature: dict) -> tuple[TrainState, dict | None, int]:
    """(state, data_state, step) of one step; raises whatever Orbax raises
    for unreadable files, ModelMismatchError for another model."""
    meta = manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
    check_signature(meta["signature"], signature, manager.directory / str(step))
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if manager is self._latest:
      items["data"] = ocp.args.JsonRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored.get("data"), step

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable latest steps to CORRUPT_DIR (process 0; the others
    wait), so the run's next saves at those steps do not meet them."""
    directory = Path(self._latest.directory)
    if jax.process_index() == 0:
      aside = directory.parent / CORRUPT_DIR
      aside.mkdir(exist_ok=True)
      for step in steps:
        target = aside / str(step)
        n = 1
        while target.exists():
          target, n = aside / f"{step}.{n}", n + 1
        (directory / str(step)).rename(target)
        logging.warning("Moved the unreadable checkpoint step %d to %s.",
                        step, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("checkpoints set aside")
    self._latest.reload()

  def wait(self) -> None:
    self._latest.wait_until_finished()
    if self._best is not None:
      self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    if self._best is not None:
      self._best.close()


def saved_steps(workdir: str | Path) -> list[int]:
  """Steps of the resumable checkpoints in `workdir` (Orbax's layout)."""
  directory = Path(workdir).absolute() / LATEST_DIR
  if not directory.is_dir():
    return []
  return sorted(ocp.path.step.checkpoint_steps(directory))


def check_signature(stored: dict, current: dict, where: Any) -> None:
  """Refuses a checkpoint of another model.

  Signatures that differ only in how the options are spelled (an option
  given at its default value in one, left to the default in the other, as
  configs written before the template left model options unset) describe
  the same model: they are accepted when both build the same graph.

  Raises:
    ModelMismatchError: `stored` and `current` describe different models,
      naming every differing key and `where` the checkpoint is.
  """
  if stored == current or card_lib.same_model(stored, current):
    return
  keys = sorted(set(stored) | set(current))
  diffs = [f"{k}: checkpoint {json.dumps(stored.get(k))} vs config "
           f"{json.dumps(current.get(k))}" for k in keys
           if stored.get(k) != current.get(k)]
  raise ModelMismatchError(
      f"The checkpoint at {where} was written for a different model ("
      + "; ".join(diffs) + "). Use a new --workdir, or the matching config.")


def abstract(state: TrainState) -> TrainState:
  """Shape/dtype/sharding skeleton of `state`, the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
