"""Sizing a training run to a wall-clock budget on the machine at hand.

A recipe fixed in steps is fixed in time only on the machine it was measured
on. With `train.time_budget_minutes` > 0 the loop measures this machine
before training: the first step (compilation), `budget_calibration_steps`
steps with the real input pipeline, and validation on a bounded sample of
"val" (VALIDATION_SAMPLE images, timed twice: the first pass compiles) scaled
to the whole split, all on a copy of the state with the data iterator
rewound afterwards, so the run trains exactly as an unmeasured run of the
same step count would, and the measurement costs seconds, not a validation
pass. The step count becomes

  steps = min(train.steps,
              (budget - elapsed - recompile - evals * val) / (step * (1 + margin)))

(`train.steps` stays the cap, so on a fast machine the recipe is unchanged),
with `evals` validations evenly spaced, the last at the end: `budget_evals`,
or fewer where they would take more than `budget_eval_share` of the budget
(at least the last, which chooses the checkpoint). `budget_margin` covers
what the timed steps do not see (logging, checkpoints, timing noise); it
does not cover an input pipeline that falls behind the model in bursts.

That is what the pace check is for: at the end of warmup (the learning rate
does not depend on the run's length until then) the loop times the second
half of warmup (the first steps after a compile run slow while the pipeline
fills) and, if that pace says the plan would overrun, shortens it
(`check_pace`: the same formula at the run's own pace; the train step
compiles again with the shorter schedule, so the run is the one a plan of
that length from the start would have trained). It only shortens.

The plan is written to <workdir>/budget.json before the first checkpoint,
again after the pace check, and reused on resume, so a restarted run keeps
its schedule (a run killed before its pace check checks again); the file
also records the measurements and, when the run ends, the seconds it took.
To repeat a run's exact schedule elsewhere: time_budget_minutes=0 and steps
from the file. Measurements (the margin, the pace check, validations under a
short budget): benchmarks/RESULTS.md, "Why each choice", "chameleon_jax/train/budget.py".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from chameleon_jax import atomic

FILENAME = "budget.json"
# Validation images timed by the measurement (the whole split when smaller);
# the time of a validation is this sample's, scaled by the split's size.
VALIDATION_SAMPLE = 32


@dataclasses.dataclass(frozen=True)
class Plan:
  """How long a run trains and how often it validates and checkpoints."""
  steps: int
  eval_every: int
  checkpoint_every: int
  budget_s: float = 0.0  # 0: no budget (the config's steps).
  measured: dict = dataclasses.field(default_factory=dict)


def fixed(cfg) -> Plan:
  """The schedule `cfg` (train settings) fixes in steps (no budget)."""
  return Plan(steps=cfg.steps, eval_every=cfg.eval_every,
              checkpoint_every=cfg.checkpoint_every)


def plan_steps(*, budget_s: float, elapsed_s: float, step_s: float,
               recompile_s: float, validation_s: float, evals: int,
               eval_share: float, margin: float, max_steps: int,
               min_steps: int) -> Plan:
  """The largest step count <= `max_steps` that fits in what is left at
  `step_s * (1 + margin)` per step, with at most `evals` validations, fewer
  where they would take more than `eval_share` of `budget_s` (never fewer
  than one).

  Raises ValueError, with the figures, when fewer than `min_steps` fit.
  """
  if evals < 1:
    raise ValueError(f"train.budget_evals={evals}; expected >= 1 (the last "
                     "validation chooses the checkpoint).")
  if not 0 < eval_share <= 1:
    raise ValueError(f"train.budget_eval_share={eval_share}; expected a "
                     "share of the budget in (0, 1].")
  if margin < 0:
    raise ValueError(f"train.budget_margin={margin}; expected >= 0.")
  if validation_s > 0:
    evals = max(1, min(evals, int(eval_share * budget_s // validation_s)))
  left = budget_s - elapsed_s - recompile_s - evals * validation_s
  planned_s = step_s * (1 + margin)
  fits = int(left // planned_s) if planned_s > 0 else max_steps
  steps = min(max_steps, fits)
  if steps < min_steps:
    raise ValueError(
        f"train.time_budget_minutes={budget_s / 60:g} leaves {max(left, 0):.0f}"
        f" s for training after {elapsed_s:.0f} s of setup and measurement "
        f"and {evals} validations of {validation_s:.1f} s: {fits} steps of "
        f"{planned_s:.2f} s ({step_s:.2f} s timed + the {margin:.0%} "
        f"train.budget_margin), fewer than the {min_steps} needed (more than "
        "train.warmup_steps). Raise the budget, or lower train.batch_size or "
        "train.budget_evals.")
  every = math.ceil(steps / evals)
  return Plan(steps=steps, eval_every=every, checkpoint_every=every,
              budget_s=budget_s)


def measure(train_step: Callable, state, data_iter, shard: Callable,
            validate, calibration_steps: int) -> dict[str, float]:
  """Seconds of the first (compiling) step, of one step, of one validation.

  Trains on a copy of `state` (the train step donates it) and rewinds
  `data_iter`. `validate(state, max_items)` (train/loop.Validation, with
  `validate.items` examples in "val") runs twice on the untouched `state`
  over the split's first VALIDATION_SAMPLE images: the first pass compiles,
  the second is scaled to the split. Every process uses process 0's
  figures, so all plan the same steps. Logs what it measures as it goes.
  """
  if calibration_steps < 2:
    raise ValueError(f"train.budget_calibration_steps={calibration_steps}; "
                     "expected >= 2.")
  logging.info("Measuring this machine for the time budget: the first "
               "(compiling) step, %d steps, validation on %d of %d images.",
               calibration_steps, min(VALIDATION_SAMPLE, validate.items),
               validate.items)
  data_state = data_iter.get_state()
  copy = jax.tree.map(jnp.copy, state)
  start = time.perf_counter()
  copy, metrics = train_step(copy, shard(next(data_iter)))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(calibration_steps):
    copy, metrics = train_step(copy, shard(next(data_iter)))
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / calibration_steps
  del copy
  data_iter.set_state(data_state)
  logging.info("First step %.1f s, then %.3f s per step; timing validation.",
               compile_s, step_s)
  sample = min(VALIDATION_SAMPLE, validate.items)
  start = time.perf_counter()
  validate(state, sample)  # Compiles the validation's programs.
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  validate(state, sample)
  sample_s = time.perf_counter() - start
  validation_s = sample_s * validate.items / max(sample, 1)
  figures = from_process_0([compile_s, step_s, validation_s, first_s,
                            sample_s])
  return dict(zip(("compile_s", "step_s", "validation_s",
                   "validation_compile_s", "validation_sample_s"), figures),
              validation_sample=sample)


def from_process_0(figures: list[float]) -> list[float]:
  """Process 0's timings on every process, so that all plan alike."""
  values = np.asarray(figures, np.float64)
  if jax.process_count() > 1:
    values = np.asarray(multihost_utils.broadcast_one_to_all(values))
  return [float(v) for v in values]


def check_pace(plan: Plan, *, elapsed_s: float, pace_s: float,
               done_steps: int, recompile_s: float, margin: float) -> Plan:
  """`plan`, shortened if `pace_s` per step from here would overrun it.

  At `done_steps`, `elapsed_s` into the budget: the rest of the plan takes
  (steps - done) * pace + the validations left. Where that ends past the
  budget, the steps become done + what fits at pace * (1 + margin) after
  `recompile_s` (the shorter schedule compiles again) and the validations
  left, at least done + 1; the number of validations stays, spaced over the
  new length; checkpoints keep their interval. Either way the returned
  plan's `measured` records the pace (and what it replanned from).
  """
  evals = -(-plan.steps // plan.eval_every)
  evals_left = evals - done_steps // plan.eval_every
  validation_s = plan.measured.get("validation_s", 0.0)
  measured = {**plan.measured, "pace_s": pace_s, "pace_at_step": done_steps}
  projected_s = (elapsed_s + (plan.steps - done_steps) * pace_s
                 + evals_left * validation_s)
  if projected_s <= plan.budget_s:
    return dataclasses.replace(plan, measured=measured)
  left = plan.budget_s - elapsed_s - recompile_s - evals_left * validation_s
  fits = max(0, int(left // (pace_s * (1 + margin))))
  steps = min(plan.steps, max(done_steps + 1, done_steps + fits))
  measured.update(replanned_from=plan.steps, projected_s=projected_s)
  return dataclasses.replace(plan, steps=steps,
                             eval_every=math.ceil(steps / evals),
                             measured=measured)


def load(workdir: str | Path) -> Plan | None:
  """The plan saved in <workdir>/budget.json, or None."""
  path = Path(workdir) / FILENAME
  if not path.is_file():
    return None
  values = json.loads(path.read_text())
  return Plan(**{f.name: values[f.name] for f in dataclasses.fields(Plan)})


def save(workdir: str | Path, plan: Plan, **extra) -> None:
  """Writes the plan (and `extra` keys) atomically; process 0 only."""
  if jax.process_index() != 0:
    return
  atomic.write_json(Path(workdir) / FILENAME,
                    {**dataclasses.asdict(plan), **extra})


def log(plan: Plan) -> None:
  """Logs a plan: steps, validations, the measurements it came from."""
  m = plan.measured
  logging.info(
      "Budget %.1f min: %d steps (first step %.1f s, then %.3f s per step; "
      "validation %.1f s), validations and checkpoints: %d, every %d steps.",
      plan.budget_s / 60, plan.steps, m.get("compile_s", 0),
      m.get("step_s", 0), m.get("validation_s", 0),
      -(-plan.steps // plan.eval_every), plan.eval_every)
