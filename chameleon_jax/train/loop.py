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
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from chameleon_jax import components
from chameleon_jax.data import pipeline
from chameleon_jax.evaluation import decision
from chameleon_jax.evaluation.evaluate import evaluate_split
from chameleon_jax.train import budget
from chameleon_jax.train import checkpoint as ckpt_lib
from chameleon_jax.train import sharding
from chameleon_jax.train import state as state_lib
from chameleon_jax.train import steps
from chameleon_jax.train.reporting import MetricWriter, ProgressBar


# The pace check times the second half of warmup: the first steps after
# the compiling one run slower while the input pipeline fills (tiny_config:
# 150 ms falling to 27 ms over 10 steps). With fewer than PACE_MIN_STEPS
# steps to time (a short warmup, a resume late in it) it is skipped.
PACE_MIN_STEPS = 10


class NonFiniteLossError(FloatingPointError):
  """The loss or the gradients became NaN/Inf."""


def build_state(config: ml_collections.ConfigDict, num_classes: int,
                in_channels: int, mesh):
  """(graphdef, replicated initial TrainState, optimizer, lr schedule), the
  schedule of `config.train.steps` (another length: `optimizer`)."""
  model = components.model(config, num_classes, in_channels)
  tx, schedule = optimizer(config, config.train.steps)
  graphdef, state = state_lib.create(model, tx,
                                     use_ema=bool(config.train.ema_decay))
  return graphdef, sharding.replicate(state, mesh), tx, schedule


def optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """(optax transformation, lr schedule) for a run of `total_steps`. Its
  state does not depend on the length, so a state built for one length
  trains on with another's (the time budget's plans)."""
  return state_lib.make_optimizer(
      learning_rate=config.train.learning_rate, total_steps=total_steps,
      warmup_steps=config.train.warmup_steps,
      weight_decay=config.train.weight_decay,
      grad_clip_norm=config.train.grad_clip_norm)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains per `config` in `workdir` (resuming if it holds a checkpoint).

  With `train.time_budget_minutes` > 0 the step count is planned to fit that
  budget on this machine (train/budget.py). Returns the last validation
  metrics.
  """
  started = time.perf_counter()
  cfg = config.train
  mesh = sharding.make_mesh()
  ds = components.open_dataset(config, workdir)
  signature = components.model_signature(config, ds.num_classes, ds.channels)
  data_iter = pipeline.train_iterator(
      ds, split="train",
      local_batch_size=sharding.local_batch_size(cfg.batch_size, mesh),
      seed=config.seed, size=components.image_size(config),
      size_policy=config.data.size_policy, augment=components.augment(config),
      scale=config.data.scale,
      defect_image_fraction=(config.data.defect_image_fraction
                             if config.data.defect_image_fraction >= 0 else None),
      defect_class_balance=config.data.defect_class_balance,
      num_workers=config.data.num_workers,
      process_index=jax.process_index(), process_count=jax.process_count())
  shard = functools.partial(sharding.shard_batch, mesh=mesh)

  graphdef, state, _, _ = build_state(config, ds.num_classes, ds.channels,
                                      mesh)

  def compile_step(total_steps):  # The schedule's length is compiled in.
    tx, schedule = optimizer(config, total_steps)
    train_step = jax.jit(
        steps.make_train_step(graphdef, components.loss(config), tx,
                              cfg.ema_decay or None,
                              target=components.target_key(config)),
        donate_argnums=0,
        out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)))
    return schedule, train_step

  schedule, train_step = compile_step(cfg.steps)
  eval_step = jax.jit(steps.make_eval_step(graphdef,
                                           config.eval.min_defect_area,
                                           components.task(config)))
  # With a calibrated decision, each evaluation also chooses the rule on val
  # (calibrated/* metrics), so train.best_metric can select by what --mode=eval
  # will report.
  predict = (jax.jit(steps.make_predict_fn(graphdef, config.eval.flip_tta))
             if components.task(config) == "segmentation"
             and config.eval.decision == "calibrated" else None)
  if cfg.best_metric.startswith("calibrated/") and predict is None:
    raise ValueError(
        f"train.best_metric={cfg.best_metric!r} needs the calibrated/* "
        "validation metrics: set eval.decision='calibrated' (segmentation).")

  def validate(state):
    metrics, _ = evaluate_split(eval_step, state, ds, "val", config, mesh)
    if predict is not None:
      metrics.update(decision.validation_metrics(predict, state, ds, config,
                                                 mesh))
    return metrics

  plan = _plan(config, workdir, started, lambda: budget.measure(
      train_step, state, data_iter, shard, validate,
      cfg.budget_calibration_steps))
  if plan.steps != cfg.steps:
    schedule, train_step = compile_step(plan.steps)
  checkpointer = ckpt_lib.Checkpointer(
      workdir, every_steps=plan.checkpoint_every, keep=cfg.keep_checkpoints,
      best_metric=cfg.best_metric or None)
  start = 0
  restored = checkpointer.restore(ckpt_lib.abstract(state), signature)
  if restored is not None:
    state, data_state, start = restored
    data_iter.set_state(data_state)
    logging.info("Resumed from step %d of %s.", start, workdir)
  write_model_card(workdir, signature, ds)  # After the signature check.

  writer = MetricWriter(workdir)
  bar = ProgressBar(plan.steps, start, cfg.batch_size)
  val_metrics: dict[str, float] = {}
  last_log, last_time = start, time.perf_counter()
  # The pace check (train/budget.py): from pace_from to the end of warmup.
  pace_from = max(start + 1, cfg.warmup_steps // 2)
  if (not plan.budget_s or "pace_s" in plan.measured
      or cfg.warmup_steps - pace_from < PACE_MIN_STEPS):
    pace_from = None
  step = start
  while step < plan.steps:
    step += 1
    batch = shard(next(data_iter))
    with jax.transfer_guard("disallow"):
      state, metrics = train_step(state, batch)
    if pace_from is not None and step in (pace_from, cfg.warmup_steps):
      jax.block_until_ready(metrics)
      if step == pace_from:
        pace_start = time.perf_counter()
      else:
        planned = plan.steps
        plan = _check_pace(plan, workdir, started, pace_start,
                           step - pace_from, step, cfg.budget_margin)
        if plan.steps != planned:
          schedule, train_step = compile_step(plan.steps)
          bar.total = plan.steps

    is_last = step == plan.steps
    save = checkpointer.should_save(step) or is_last
    if step % cfg.log_every == 0 or save or is_last:
      metrics = jax.device_get(metrics)
      if not metrics["finite"]:
        raise NonFiniteLossError(
            f"Non-finite loss ({metrics['loss']}) or gradient norm "
            f"({metrics['grad_norm']}) at step {step}. Lower "
            "train.learning_rate, check the inputs, or set "
            "train.grad_clip_norm; the last good checkpoint is step "
            f"{checkpointer.latest_step()}.")
      now = time.perf_counter()
      images_per_s = (step - last_log) * cfg.batch_size / max(now - last_time, 1e-9)
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
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if plan.budget_s and start == 0:
    budget.save(workdir, plan, train_seconds=time.perf_counter() - started)
  return val_metrics


def _plan(config: ml_collections.ConfigDict, workdir: str, started: float,
          measure) -> budget.Plan:
  """The run's schedule: a saved plan (resume), the config's steps, or a
  plan from `measure()` that fits `train.time_budget_minutes`."""
  cfg = config.train
  saved = budget.load(workdir)
  if saved is not None:
    logging.info("Schedule from %s.", Path(workdir) / budget.FILENAME)
    return saved
  if not cfg.time_budget_minutes:
    return budget.from_config(cfg)
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


def _check_pace(plan: budget.Plan, workdir: str, started: float,
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


def write_model_card(workdir: str, signature: dict, ds) -> None:
  """<workdir>/model.json: what inference needs without the dataset."""
  if jax.process_index() != 0:
    return
  path = Path(workdir) / "model.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  card = {"signature": signature, "class_names": ds.class_names,
          "dataset": str(ds.path), "dataset_hash": ds.dataset_hash}
  tmp = path.with_name("model.json.tmp")
  tmp.write_text(json.dumps(card, indent=1) + "\n")
  os.replace(tmp, path)


def read_model_card(workdir: str) -> dict:
  path = Path(workdir) / "model.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: {workdir} holds no trained "
                            "model (run --mode=train first).")
  return json.loads(path.read_text())


def _brief(metrics: dict[str, float]) -> str:
  keys = ("mean_defect_iou", "defect_image_dice", "accuracy",
          "balanced_accuracy", "false_alarm_rate",
          "calibrated/defect_image_dice", "calibrated/false_alarm_rate")
  return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def params_digest(state: state_lib.TrainState) -> str:
  """A hash of all parameters (bitwise), used to compare runs exactly."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state.params)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()
