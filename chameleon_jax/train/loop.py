"""The training loop: one readable function, as in big_vision.

jit-compiled step with the state donated, batch sharded over a `Mesh` with
`NamedSharding`, parameters replicated; host-to-device transfers inside the
step are disallowed (every batch is placed explicitly); NaN/Inf stops the run
with the step named; Orbax checkpoints hold the Grain iterator position, so a
killed run restarted with the same command ends with identical parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import jax
from flax import nnx

from chameleon_jax import sharding
from chameleon_jax.model_io import card as card_lib
from chameleon_jax.model_io import checkpoint as ckpt_lib
from chameleon_jax.model_io import state as state_lib
from chameleon_jax.train import budget, optim, steps
from chameleon_jax.train.reporting import MetricWriter, ProgressBar


# The pace check times the second half of warmup: the first steps after
# the compiling one run slower while the input pipeline fills (tiny_config:
# 150 ms falling to 27 ms over 10 steps). With fewer than PACE_MIN_STEPS
# steps to time (a short warmup, a resume late in it) it is skipped.
PACE_MIN_STEPS = 10


class NonFiniteLossError(FloatingPointError):
  """The loss or the gradients became NaN/Inf."""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """How to train (the `train.*` config section, documented there).

  Attributes:
    batch_size: global batch over every device and process.
    steps: steps to train (with a time budget: at most this many).
    time_budget_minutes: wall-clock budget (0 = off; budget.py).
    budget_evals, budget_eval_share, budget_margin, budget_calibration_steps:
      how the budget plans validations and steps (budget.py).
    learning_rate, warmup_steps, weight_decay, grad_clip_norm: the optimizer
      (optim.py; grad_clip_norm 0 = no clipping).
    ema_decay: EMA of the parameters (0 = off); evaluation uses the EMA.
    log_every, eval_every, checkpoint_every: intervals in steps
      (eval_every 0 = validate at the end only).
    keep_checkpoints: resumable checkpoints kept.
    best_metric: validation metric the best checkpoint is kept by ("" =
      none: evaluation then restores the latest).
    stop_at: stop after this step, validated and checkpointed, keeping the
      schedule of all `steps` (0 = train to the end): a sweep's rungs; a
      later run with a larger stop_at (or 0) resumes from here.
  """
  batch_size: int
  steps: int
  time_budget_minutes: float
  budget_evals: int
  budget_eval_share: float
  budget_margin: float
  budget_calibration_steps: int
  learning_rate: float
  warmup_steps: int
  weight_decay: float
  grad_clip_norm: float
  ema_decay: float
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  best_metric: str
  stop_at: int = 0

  def __post_init__(self):
    """Refuses values no run can use, naming the key and the value."""
    # key: (lowest, highest); the budget_* keys: budget.py, with figures.
    ranges = {
        "batch_size": (1, None), "steps": (1, None),
        "time_budget_minutes": (0, None), "warmup_steps": (0, None),
        "weight_decay": (0, None), "grad_clip_norm": (0, None),
        "ema_decay": (0, 1), "log_every": (1, None), "eval_every": (0, None),
        "checkpoint_every": (0, None), "keep_checkpoints": (1, None),
        "stop_at": (0, None)}
    for key, (low, high) in ranges.items():
      value = getattr(self, key)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or \
          not math.isfinite(value) or value < low or \
          (high is not None and value > high):
        raise ValueError(
            f"train.{key} = {value!r}: expected a number >= {low}"
            + (f" and <= {high}" if high is not None else "") + ".")
    if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
      raise ValueError(f"train.learning_rate = {self.learning_rate!r}: "
                       "expected a positive number.")
    if self.warmup_steps >= self.steps:
      raise ValueError(f"train.warmup_steps = {self.warmup_steps} must be "
                       f"smaller than train.steps = {self.steps}.")


@dataclasses.dataclass(frozen=True)
class DatasetCard:
  """What the model card records of the training data."""
  class_names: tuple[str, ...]
  path: str
  dataset_hash: str


class Validation(Protocol):
  """What the composer's validation is: metrics of a state on "val"."""
  items: int  # Examples in the validation split.

  def __call__(self, state: Any, max_items: int | None = None
               ) -> dict[str, float]:
    """Metrics of `state` on "val" (its first `max_items` examples)."""


# validate(graphdef, mesh) -> Validation: the composer's.
MakeValidate = Callable[[nnx.GraphDef, Any], Validation]


def build_state(model: nnx.Module, settings: TrainSettings, mesh):
  """(graphdef, replicated initial TrainState) of `model` for `settings`."""
  tx, _ = optimizer(settings, settings.steps)
  graphdef, state = state_lib.create(model, tx,
                                     use_ema=bool(settings.ema_decay))
  return graphdef, sharding.replicate(state, mesh)


def optimizer(settings: TrainSettings, total_steps: int):
  """(optax transformation, lr schedule) for a run of `total_steps`. Its
  state does not depend on the length, so a state built for one length
  trains on with another's (the time budget's plans)."""
  return optim.make_optimizer(
      learning_rate=settings.learning_rate, total_steps=total_steps,
      warmup_steps=settings.warmup_steps,
      weight_decay=settings.weight_decay,
      grad_clip_norm=settings.grad_clip_norm)


def train(workdir: str | Path, settings: TrainSettings, *,
          model: nnx.Module, signature: Mapping[str, Any],
          data: DatasetCard, data_iter: Iterator[dict], loss_fn: Callable,
          target: str, make_validate: MakeValidate, mesh,
          started: float | None = None) -> dict[str, float]:
  """Trains `model` in `workdir` (resuming if it holds a checkpoint).

  Args:
    workdir: checkpoints, metrics.jsonl, TensorBoard events, model.json.
    settings: the schedule and optimizer.
    model: the freshly built model (its initial parameters).
    signature: its signature (checkpoints refuse another model's).
    data: the training data, as the model card records it.
    data_iter: the checkpointable training iterator (host batches of this
      process's rows; `get_state`/`set_state`).
    loss_fn: (outputs, targets) -> scalar loss.
    target: the batch key the loss is computed against ("mask", "label").
    make_validate: builds the validation of a state (metrics on "val").
    mesh: the device mesh (data parallel on its "data" axis).
    started: the run's start (perf_counter), for the time budget.

  With `settings.time_budget_minutes` > 0 the step count is planned to fit
  that budget on this machine (train/budget.py).

  Returns:
    The last validation metrics.

  Raises:
    NonFiniteLossError: the loss or gradients became NaN/Inf.
    checkpoint.ModelMismatchError: `workdir` holds another model.
  """
  started = time.perf_counter() if started is None else started
  shard = functools.partial(sharding.shard_batch, mesh=mesh)
  graphdef, state = build_state(model, settings, mesh)

  def compile_step(total_steps):  # The schedule's length is compiled in.
    tx, schedule = optimizer(settings, total_steps)
    train_step = jax.jit(
        steps.make_train_step(graphdef, loss_fn, tx, settings.ema_decay or None,
                              target=target),
        donate_argnums=0,
        out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)))
    return schedule, train_step

  schedule, train_step = compile_step(settings.steps)
  validate = make_validate(graphdef, mesh)

  plan = _plan(settings, workdir, started, lambda: budget.measure(
      train_step, state, data_iter, shard, validate,
      settings.budget_calibration_steps))
  if plan.steps != settings.steps:
    schedule, train_step = compile_step(plan.steps)
  checkpointer = ckpt_lib.Checkpointer(
      workdir, every_steps=plan.checkpoint_every,
      keep=settings.keep_checkpoints, best_metric=settings.best_metric or None)
  start = 0
  restored = checkpointer.restore(ckpt_lib.abstract(state), signature)
  if restored is not None:
    state, data_state, start = restored
    data_iter.set_state(data_state)
    logging.info("Resumed from step %d of %s.", start, workdir)
  card_lib.write_card(workdir, signature, data.class_names, data.path,
                      data.dataset_hash)  # After the signature check.

  writer = MetricWriter(workdir, start)
  bar = ProgressBar(plan.steps, start, settings.batch_size)
  val_metrics: dict[str, float] = {}
  last_log, last_time = start, time.perf_counter()
  # The pace check (train/budget.py): from pace_from to the end of warmup.
  pace_from = max(start + 1, settings.warmup_steps // 2)
  if (not plan.budget_s or "pace_s" in plan.measured
      or settings.warmup_steps - pace_from < PACE_MIN_STEPS):
    pace_from = None
  def end() -> int:  # The pace check may shorten the plan on the way.
    return min(plan.steps, settings.stop_at) if settings.stop_at else plan.steps

  try:
    step = start
    while step < end():
      step += 1
      batch = shard(next(data_iter))
      with jax.transfer_guard("disallow"):
        state, metrics = train_step(state, batch)
      if pace_from is not None and step in (pace_from, settings.warmup_steps):
        jax.block_until_ready(metrics)
        if step == pace_from:
          pace_start = time.perf_counter()
        else:
          planned = plan.steps
          plan = _check_pace(plan, workdir, started, pace_start,
                             step - pace_from, step, settings.budget_margin)
          if plan.steps != planned:
            schedule, train_step = compile_step(plan.steps)
            bar.total = plan.steps

      is_last = step == end()
      save = checkpointer.should_save(step) or is_last
      if step % settings.log_every == 0 or save or is_last:
        metrics = jax.device_get(metrics)
        if not metrics["finite"]:
          raise NonFiniteLossError(
              f"Non-finite loss ({metrics['loss']}) or gradient norm "
              f"({metrics['grad_norm']}) at step {step}. Lower "
              "train.learning_rate, check the inputs, or set "
              "train.grad_clip_norm; the last good checkpoint is step "
              f"{checkpointer.latest_step()}.")
        now = time.perf_counter()
        images_per_s = ((step - last_log) * settings.batch_size
                        / max(now - last_time, 1e-9))
        last_log, last_time = step, now
        writer.write(step, "train", {
            "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
            "learning_rate": float(schedule(step - 1)),
            "images_per_second": images_per_s})
        bar.update(step, loss=float(metrics["loss"]))
        logging.info("process %d step %d loss %.9g", jax.process_index(), step,
                     float(metrics["loss"]))
      if (plan.eval_every and step % plan.eval_every == 0) or is_last:
        val_metrics = validate(state)
        writer.write(step, "val", val_metrics)
        checkpointer.save_best(step, state, signature, val_metrics)
        logging.info("step %d val %s", step, _brief(val_metrics))
      if save:
        checkpointer.save(step, state, data_iter.get_state(), signature,
                          force=is_last)
    bar.close()
    if not val_metrics:  # Nothing left to train: report the restored state.
      val_metrics = validate(state)
  except BaseException:  # Async saves end before the error leaves, so
    _close_after_error(checkpointer, writer)  # no thread dies at exit.
    raise
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if plan.budget_s and start == 0:
    budget.save(workdir, plan, train_seconds=time.perf_counter() - started)
  return val_metrics


def _close_after_error(checkpointer, writer) -> None:
  """Finishes the checkpoints being written and closes the writers while a
  training error propagates; their own failures are logged, never raised
  over it."""
  try:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  except Exception:  # noqa: BLE001  (the training error is the one to see)
    logging.exception("closing the checkpointer after a training error")


def _plan(cfg: TrainSettings, workdir: str | Path, started: float,
          measure) -> budget.Plan:
  """The run's schedule: a saved plan (resume), the settings' steps, or a
  plan from `measure()` that fits `cfg.time_budget_minutes`."""
  saved = budget.load(workdir)
  if saved is not None:
    logging.info("Schedule from %s.", Path(workdir) / budget.FILENAME)
    return saved
  if not cfg.time_budget_minutes:
    return budget.fixed(cfg)
  if ckpt_lib.saved_steps(workdir):
    raise ValueError(
        f"{workdir} holds checkpoints but no {budget.FILENAME}: it was trained "
        "without a time budget. Resume it with "
        "--config.train.time_budget_minutes=0 (and its train.steps).")
  measured = measure()
  kwargs = dict(budget_s=60.0 * cfg.time_budget_minutes,
                elapsed_s=time.perf_counter() - started,
                step_s=measured["step_s"],
                validation_s=measured["validation_s"],
                evals=cfg.budget_evals, eval_share=cfg.budget_eval_share,
                margin=cfg.budget_margin, max_steps=cfg.steps,
                min_steps=cfg.warmup_steps + 1)
  plan = budget.plan_steps(recompile_s=0.0, **kwargs)
  if plan.steps < cfg.steps:  # A shorter schedule compiles again.
    plan = budget.plan_steps(recompile_s=measured["compile_s"], **kwargs)
  plan = dataclasses.replace(plan, measured=measured)
  budget.save(workdir, plan)
  budget.log(plan)
  return plan


def _check_pace(plan: budget.Plan, workdir: str | Path, started: float,
                pace_start: float, timed_steps: int, step: int,
                margin: float) -> budget.Plan:
  """budget.check_pace on the steps just run; saves and logs the result."""
  now = time.perf_counter()
  elapsed_s, pace_s = budget.from_process_0(
      [now - started, (now - pace_start) / timed_steps])
  checked = budget.check_pace(
      plan, elapsed_s=elapsed_s, pace_s=pace_s, done_steps=step,
      recompile_s=plan.measured.get("compile_s", 0.0), margin=margin)
  budget.save(workdir, checked)
  if checked.steps != plan.steps:
    logging.warning(
        "Pace check at step %d: %.3f s per step (timed %.3f) would end at "
        "%.0f s of the %.0f s budget; %d steps instead of %d.", step, pace_s,
        plan.measured.get("step_s", 0.0), checked.measured["projected_s"],
        plan.budget_s, checked.steps, plan.steps)
  else:
    logging.info("Pace check at step %d: %.3f s per step, within budget.",
                 step, pace_s)
  return checked


def _brief(metrics: dict[str, float]) -> str:
  keys = ("mean_defect_iou", "defect_image_dice", "accuracy",
          "balanced_accuracy", "false_alarm_rate",
          "calibrated/defect_image_dice", "calibrated/false_alarm_rate")
  return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
