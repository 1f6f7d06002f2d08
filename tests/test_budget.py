"""A training run sized to a wall-clock budget (train/budget.py)."""

import json
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chameleon_jax import components
from chameleon_jax.components import modes
from chameleon_jax.train import budget, loop
from configs import segmentation
from tests.conftest import checkpoint_digest, run_main

CONFIG = "--config=tests/tiny_config.py"


def _plan(**overrides):
  kwargs = dict(budget_s=600.0, elapsed_s=60.0, step_s=0.5, recompile_s=20.0,
                validation_s=30.0, evals=3, eval_share=0.5, margin=0.0,
                max_steps=5000, min_steps=51)
  return budget.plan_steps(**{**kwargs, **overrides})


def test_plan_fits_what_is_left_after_setup_recompile_and_validations():
  # 600 - 60 - 20 - 3 * 30 = 430 s at 0.5 s per step.
  plan = _plan()
  assert plan.steps == 860 and plan.budget_s == 600.0
  # Three validations: at 287 and 574, and at the end (the last step).
  assert plan.eval_every == plan.checkpoint_every == 287
  assert [s for s in range(1, 861) if s % 287 == 0] == [287, 574]


def test_plan_keeps_the_configured_steps_when_they_fit():
  assert _plan(max_steps=700).steps == 700
  assert _plan(max_steps=700, evals=1).eval_every == 700


def test_validations_are_fewer_where_they_would_take_more_than_their_share():
  # 10 % of 600 s is two validations of 30 s: the steps use the third's time.
  plan = _plan(eval_share=0.1)
  assert (plan.steps, plan.eval_every) == (920, 460)
  # Never fewer than the last one, which chooses the checkpoint.
  assert _plan(eval_share=0.01).eval_every == _plan(eval_share=0.01).steps
  # Never more than budget_evals.
  assert _plan(eval_share=1.0).eval_every == 287
  with pytest.raises(ValueError, match="budget_eval_share=0"):
    _plan(eval_share=0.0)


def test_the_margin_plans_each_step_longer_than_timed():
  # 430 s at 0.5 * 1.25 s per step.
  assert _plan(margin=0.25).steps == 688
  with pytest.raises(ValueError, match="budget_margin=-0.1"):
    _plan(margin=-0.1)


def test_a_budget_too_small_is_refused_with_its_figures():
  with pytest.raises(ValueError, match=r"time_budget_minutes=2 leaves 0 s.*"
                     r"30.0 s: -\d+ steps of 0.55 s \(0.50 s timed \+ the 10% "
                     r"train.budget_margin\), fewer than the 51"):
    _plan(budget_s=120.0, margin=0.1)
  with pytest.raises(ValueError, match="budget_evals=0"):
    _plan(evals=0)


def test_measure_trains_a_copy_and_rewinds_the_data():
  """What the identity test below checks end to end, on a toy step: the
  state handed in survives (the step donates its argument), the iterator is
  where it was, validation sees the untouched state once."""
  step = jax.jit(lambda w, x: (w + x.sum(), {"loss": x.sum()}),
                 donate_argnums=0)
  data = iter(grain.MapDataset.range(100)
              .map(lambda i: np.full((2,), i, np.float32)).to_iter_dataset())
  next(data)
  position = data.get_state()
  state = jnp.zeros(())
  seen = []

  def validate(s, max_items=None):  # 544 images; 2 ms each.
    seen.append((float(s), max_items))
    time.sleep(0.002 * (max_items or validate.items))

  validate.items = 544
  figures = budget.measure(step, state, data, jnp.asarray, validate, 4)
  assert set(figures) == {"compile_s", "step_s", "validation_s",
                          "validation_compile_s", "validation_sample_s",
                          "validation_sample"}
  assert all(v > 0 for v in figures.values())
  # Issue 39, trap 1: a bounded sample, timed twice, scaled to the split.
  sample = budget.VALIDATION_SAMPLE
  assert float(state) == 0.0 and seen == [(0.0, sample), (0.0, sample)]
  assert figures["validation_s"] == pytest.approx(
      figures["validation_sample_s"] * 544 / sample)
  assert figures["validation_s"] == pytest.approx(544 * 0.002, rel=0.5)
  assert data.get_state() == position and float(next(data)[0]) == 1.0
  validate.items = 5  # A split smaller than the sample: all of it.
  seen.clear()
  budget.measure(step, state, data, jnp.asarray, validate, 2)
  assert seen == [(0.0, 5), (0.0, 5)]
  with pytest.raises(ValueError, match="budget_calibration_steps=1"):
    budget.measure(step, state, data, jnp.asarray, validate, 1)


def _pace(plan, **overrides):
  kwargs = dict(elapsed_s=100.0, pace_s=0.5, done_steps=50, recompile_s=20.0,
                margin=0.0)
  return budget.check_pace(plan, **{**kwargs, **overrides})


def test_pace_within_the_plan_keeps_it_and_records_the_pace():
  plan = budget.Plan(steps=860, eval_every=287, checkpoint_every=287,
                     budget_s=600.0, measured={"validation_s": 30.0})
  # 100 + 810 * 0.5 + 3 * 30 = 595 s <= 600.
  checked = _pace(plan)
  assert (checked.steps, checked.eval_every) == (860, 287)
  assert checked.measured == {"validation_s": 30.0, "pace_s": 0.5,
                              "pace_at_step": 50}


def test_pace_that_would_overrun_shortens_the_plan():
  plan = budget.Plan(steps=860, eval_every=287, checkpoint_every=287,
                     budget_s=600.0, measured={"validation_s": 30.0})
  # At 0.6 s: 100 + 810 * 0.6 + 90 = 676 s. Left: 600 - 100 - 20 - 90 = 390
  # s at 0.6 * 1.1 = 0.66 s -> 590 steps, so 640 in all; 3 validations.
  checked = _pace(plan, pace_s=0.6, margin=0.1)
  assert (checked.steps, checked.eval_every, checked.checkpoint_every) == (
      640, 214, 287)
  assert checked.measured["replanned_from"] == 860
  assert checked.measured["projected_s"] == pytest.approx(676.0)
  # Validations already run are not counted again (eval_every 40: one done).
  small = budget.Plan(steps=120, eval_every=40, checkpoint_every=40,
                      budget_s=200.0, measured={"validation_s": 10.0})
  # 100 + 70 * 1.0 + 2 * 10 = 190 <= 200: kept; at 1.2 s: 204 > 200.
  assert _pace(small, pace_s=1.0, recompile_s=0.0).steps == 120
  assert _pace(small, pace_s=1.2, recompile_s=0.0).steps == 50 + 66
  # Nothing fits: one more step, not fewer than were run.
  assert _pace(plan, pace_s=5.0, elapsed_s=590.0).steps == 51


def test_the_loop_trains_a_shortened_plan_with_its_schedule(tmp_path,
                                                            monkeypatch):
  """In-process, with the pace check told to halve the plan: the run stops
  at the new length, logs the new schedule's learning rates after warmup,
  and saves the plan before going on."""
  from tests import tiny_config
  run_main(CONFIG, f"--workdir={tmp_path}", "--mode=ingest",
           f"--config.data.root={tmp_path / 'data'}")
  config = tiny_config.get_config()
  config.data.root = str(tmp_path / "data")
  config.data.num_workers = 0
  config.train.update(steps=60, warmup_steps=24, time_budget_minutes=10.0,
                      budget_evals=1, checkpoint_every=0)
  monkeypatch.setattr(budget, "measure", lambda *_: {
      "compile_s": 1.0, "step_s": 1e-3, "validation_s": 0.1})
  checked = []

  def halve(plan, **kwargs):
    result = budget.Plan(30, 30, plan.checkpoint_every, plan.budget_s,
                         {**plan.measured, "pace_s": kwargs["pace_s"],
                          "replanned_from": 60, "projected_s": 700.0})
    checked.append((plan, kwargs))
    return result

  monkeypatch.setattr(budget, "check_pace", halve)
  workdir = tmp_path / "run"
  modes.train(config, str(workdir))
  (plan, kwargs), = checked
  assert plan.steps == 60 and kwargs["done_steps"] == 24
  assert kwargs["pace_s"] > 0 and kwargs["recompile_s"] == 1.0
  rows = [json.loads(line) for line in
          (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(1, 31))
  settings = components.train_settings(config)
  _, long_schedule = loop.optimizer(settings, 60)
  _, short_schedule = loop.optimizer(settings, 30)
  lr = {r["step"]: r["learning_rate"] for r in train}
  assert lr[24] == pytest.approx(float(long_schedule(23)))  # Warmup: alike.
  assert lr[28] == pytest.approx(float(short_schedule(27)))
  assert lr[28] != pytest.approx(float(long_schedule(27)))
  saved = json.loads((workdir / budget.FILENAME).read_text())
  assert saved["steps"] == 30 and saved["measured"]["pace_s"] > 0


def _config(**train):
  config = segmentation.get_config()
  config.train.update(train)
  return components.train_settings(config)


def test_no_budget_is_the_config_schedule(tmp_path):
  plan = loop._plan(_config(steps=40, warmup_steps=4, eval_every=10),
                    str(tmp_path), 0.0,
                    measure=pytest.fail)
  assert (plan.steps, plan.eval_every, plan.budget_s) == (40, 10, 0.0)
  assert not (tmp_path / budget.FILENAME).exists()


def test_a_saved_plan_is_reused_without_measuring(tmp_path):
  saved = budget.Plan(steps=123, eval_every=41, checkpoint_every=41,
                      budget_s=300.0, measured={"step_s": 1.0})
  budget.save(tmp_path, saved)
  plan = loop._plan(_config(time_budget_minutes=5.0), str(tmp_path), 0.0,
                    measure=pytest.fail)
  assert plan == saved


def test_checkpoints_without_a_plan_are_refused(tmp_path):
  (tmp_path / "checkpoints" / "200").mkdir(parents=True)
  with pytest.raises(ValueError, match="trained without a time budget.*"
                     "time_budget_minutes=0"):
    loop._plan(_config(time_budget_minutes=5.0), str(tmp_path), 0.0,
               measure=pytest.fail)


@pytest.mark.e2e
def test_a_budgeted_run_trains_as_the_same_steps_without_a_budget(tmp_path):
  """The measurement trains a copy and rewinds the data, and the pace check
  at the end of warmup (step 30) keeps or shortens the plan: either way the
  budgeted run's parameters equal those of an unmeasured run of the length
  it ended with."""
  data = tmp_path / "data"
  run_main(CONFIG, f"--workdir={data}", "--mode=ingest",
           f"--config.data.root={data}")
  common = (CONFIG, f"--config.data.root={data}", "--mode=train",
            "--config.train.log_every=50", "--config.train.warmup_steps=30")
  run_main(*common, f"--workdir={tmp_path / 'budget'}",
           "--config.train.steps=100000",
           "--config.train.time_budget_minutes=0.75")
  record = json.loads((tmp_path / "budget" / budget.FILENAME).read_text())
  steps, every = record["steps"], record["eval_every"]
  assert {"compile_s", "step_s", "validation_s", "pace_s"} <= set(
      record["measured"]) and record["measured"]["pace_at_step"] == 30
  # 3 validations, or fewer where they would take over 10 % of the 45 s.
  measured = record["measured"]
  evals = max(1, min(3, int(4.5 // measured["validation_s"])))
  assert every == -(-steps // evals)
  # The plan is the budget's arithmetic on what was measured: the first
  # plan fits 45 s at the timed step (+5 %), one more step would not have
  # fitted even with no setup time, and the pace check only shortened it.
  planned = measured.get("replanned_from", steps)
  fixed_s = measured["compile_s"] + evals * measured["validation_s"]
  assert fixed_s + planned * measured["step_s"] * 1.05 <= 45.0
  assert planned < 100000  # The budget capped the run, not train.steps.
  assert steps <= planned and ("replanned_from" in measured) == (
      steps < planned)
  metrics = [json.loads(l) for l in
             (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics if m["split"] == "val"] == [
      every * k for k in range(1, evals)] + [steps]
  run_main(*common, f"--workdir={tmp_path / 'fixed'}",
           f"--config.train.steps={steps}", f"--config.train.eval_every={every}",
           f"--config.train.checkpoint_every={every}")
  assert checkpoint_digest(tmp_path / "budget") == checkpoint_digest(
      tmp_path / "fixed")
