"""Decision rules on segmentation output (evaluation/decision.py)."""

import numpy as np
import pytest

from chameleon_jax.data.labels import IGNORE_INDEX
from chameleon_jax.evaluation import decision


def _items(seed=0, n=24, k=3, size=(20, 24)):
  """Random images: half with a defect blob, probabilities that roughly
  find it plus random specks; some pixels ignored."""
  rng = np.random.default_rng(seed)
  items = []
  for i in range(n):
    labels = np.zeros(size, np.int32)
    if i % 2:
      y, x = rng.integers(2, size[0] - 6), rng.integers(2, size[1] - 6)
      labels[y:y + rng.integers(2, 5), x:x + rng.integers(2, 5)] = \
          rng.integers(1, k)
    labels[:, -2:] = IGNORE_INDEX
    logits = rng.normal(0, 1, size + (k,))
    logits[..., 0] += 2.0
    logits[labels > 0, 0] -= rng.uniform(1, 4)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    items.append((i, probs.astype(np.float16), labels))
  return items


def test_rule_removes_small_components_and_keeps_classes():
  probs = np.zeros((6, 8, 3), np.float32)
  probs[..., 0] = 1
  probs[1:4, 1:4] = [0.1, 0.2, 0.7]  # 9 px of class 2
  probs[5, 7] = [0.2, 0.8, 0.0]  # 1 px speck of class 1
  valid = np.ones((6, 8), bool)
  pred = decision.DecisionRule(0.5, 1).apply(probs, valid)
  assert (pred == 2).sum() == 9 and pred[5, 7] == 1
  pred = decision.DecisionRule(0.5, 2).apply(probs, valid)
  assert (pred == 2).sum() == 9 and pred[5, 7] == 0
  assert decision.DecisionRule(0.95, 1).apply(probs, valid).max() == 0
  valid[1:4, 1:4] = False  # Ignored pixels never become defects.
  assert (decision.DecisionRule(0.5, 1).apply(probs, valid) == 2).sum() == 0


def test_calibration_grid_equals_applying_each_rule():
  items = _items()
  rule, table = decision.calibrate(items, max_false_alarm=0.25,
                                   thresholds=(0.3, 0.5, 0.7),
                                   min_areas=(1, 3, 9))
  assert len(table) == 18  # 6 (threshold <= seed) pairs x 3 areas.
  assert all(r["seed_threshold"] >= r["threshold"] for r in table)
  for row in table:  # The fast grid against the plain rule, one by one.
    metrics, _, _ = decision.evaluate(
        decision.DecisionRule(row["threshold"], row["min_area"],
                              row["seed_threshold"]), items,
        ["bg", "a", "b"])
    assert row["defect_image_dice"] == pytest.approx(
        metrics["defect_image_dice"], abs=1e-12)
    assert row["false_alarm_rate"] == pytest.approx(
        metrics["false_alarm_rate"], abs=1e-12)
  allowed = [r for r in table if r["false_alarm_rate"] <= 0.25]
  best = max(allowed, key=lambda r: r["defect_image_dice"])
  assert decision.chosen_row(rule, table)["defect_image_dice"] == best[
      "defect_image_dice"]
  assert rule.seed_threshold >= rule.threshold
  # Seeds equal to the thresholds reproduce the single-threshold rules.
  for row in (r for r in table if r["seed_threshold"] == r["threshold"]):
    plain, _, _ = decision.evaluate(
        decision.DecisionRule(row["threshold"], row["min_area"]), items,
        ["bg", "a", "b"])
    assert row["defect_image_dice"] == pytest.approx(
        plain["defect_image_dice"], abs=1e-12)


def test_seed_threshold_keeps_whole_components_that_reach_it():
  """Hysteresis: a component above `threshold` is kept whole if its peak
  reaches `seed_threshold`, removed whole if not."""
  probs = np.zeros((6, 10, 2), np.float32)
  probs[..., 0] = 1
  probs[1:4, 1:4, 1] = 0.6  # A 9 px blob at 0.6 with a 0.9 peak ...
  probs[2, 2, 1] = 0.9
  probs[1:4, 6:9, 1] = 0.6  # ... and a 9 px blob that never passes 0.6.
  probs[..., 0] = 1 - probs[..., 1]
  valid = np.ones((6, 10), bool)
  pred = decision.DecisionRule(0.5, 1, seed_threshold=0.8).apply(probs, valid)
  assert pred[1:4, 1:4].all() and not pred[1:4, 6:9].any()
  assert (decision.DecisionRule(0.8, 1).apply(probs, valid) > 0).sum() == 1
  assert (decision.DecisionRule(0.5, 1, 0.95).apply(probs, valid) > 0).sum() \
      == 0
  with pytest.raises(ValueError, match="increasing"):
    decision.calibrate(_items(), 0.2, seed_thresholds=(0.9, 0.5))


def test_no_rule_within_budget_falls_back_to_fewest_alarms():
  items = _items(seed=1)
  rule, table = decision.calibrate(items, max_false_alarm=-1.0,
                                   thresholds=(0.1, 0.9), min_areas=(1, 50))
  fewest = min(r["false_alarm_rate"] for r in table)
  chosen = decision.chosen_row(rule, table)
  assert chosen["false_alarm_rate"] == fewest


def test_summary_counts_images_and_classes():
  items = _items(seed=2, k=3)
  metrics, results, maps = decision.evaluate(decision.DecisionRule(0.5, 1),
                                             items, ["bg", "a", "b"])
  confusion = np.array(metrics["image_confusion"])
  assert confusion.sum() == len(items)
  assert confusion[0].sum() == metrics["num_defect_free_images"] == 12
  assert confusion[0, 1:].sum() / 12 == metrics["false_alarm_rate"]
  assert confusion[1:, 1:].sum() / 12 == metrics["defect_recall"]
  assert set(maps) == {i for i, _, _ in items}
  dice = [r["dice"] for r in results if r["defect"]]
  assert metrics["defect_image_dice"] == pytest.approx(np.mean(dice))


def test_flip_tta_is_the_mean_over_four_flips():
  import jax
  import jax.numpy as jnp
  from chameleon_jax.models import build_model
  from chameleon_jax.model_io import state as state_lib
  from chameleon_jax.train import steps
  import optax
  model = build_model("unet", num_classes=3, in_channels=1, widths=(4, 8),
                      norm="group")
  graphdef, state = state_lib.create(model, optax.sgd(0.1), use_ema=False)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 24, 1))
  plain = steps.make_predict_fn(graphdef)
  tta = steps.make_predict_fn(graphdef, flips=True)
  expected = sum(jnp.flip(plain(state, jnp.flip(x, a)), a)
                 for a in ((1,), (2,), (1, 2))) + plain(state, x)
  np.testing.assert_allclose(tta(state, x), expected / 4, atol=1e-6)
  assert not np.allclose(tta(state, x), plain(state, x), atol=1e-4)


@pytest.mark.e2e
def test_calibrated_eval_through_main(tmp_path):
  import json
  from tests.conftest import run_main
  args = ["--config=tests/tiny_config.py", f"--workdir={tmp_path}",
          f"--config.data.root={tmp_path / 'data'}"]
  run_main(*args, "--mode=ingest,train", "--config.train.steps=10")
  run_main(*args, "--mode=eval", "--config.eval.decision=calibrated",
           "--config.eval.flip_tta=True", "--config.eval.max_false_alarm=0.2")
  metrics = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
  chosen = json.loads((tmp_path / "eval" / "decision.json").read_text())
  assert chosen["chosen_on"] == "val"
  assert (metrics["decision_threshold"], metrics["decision_min_area"]) == (
      chosen["rule"]["threshold"], chosen["rule"]["min_area"])
  # Issue 39, trap 8: one naming scheme; every argmax-mask figure is
  # argmax/..., the unprefixed ones are the rule's.
  assert "argmax/defect_image_dice" in metrics and \
      "argmax/iou/background" in metrics
  assert not [k for k in metrics if k.startswith(
      ("iou/", "mean_defect", "pixel_accuracy"))], sorted(metrics)
  assert "dice/background" in metrics and "argmax/dice/background" in metrics
  n = len(decision.THRESHOLDS)
  assert len(chosen["grid"]) == n * (n + 1) // 2 * len(decision.MIN_AREAS)
  assert metrics["decision_seed_threshold"] == chosen["rule"][
      "seed_threshold"] >= metrics["decision_threshold"]
  feasible = [r for r in chosen["grid"] if r["false_alarm_rate"] <= 0.2]
  if feasible:  # The best validation Dice within the budget was chosen,
    assert chosen["validation"]["defect_image_dice"] == max(
        r["defect_image_dice"] for r in feasible)
  else:  # or, where no rule keeps to it, the one with the fewest alarms.
    assert chosen["validation"]["false_alarm_rate"] == min(
        r["false_alarm_rate"] for r in chosen["grid"])
  per_image = json.loads((tmp_path / "eval" / "test_per_image.json")
                         .read_text())
  alarms = sum(r["false_alarm"] for r in per_image)
  clean = sum(not r["defect"] for r in per_image)
  assert metrics["false_alarm_rate"] == alarms / clean
  # Per class: never below the shared rule on val; one value per defect class.
  result = run_main(*args, "--mode=eval", "--config.eval.decision=calibrated",
                    "--config.eval.flip_tta=True",
                    "--config.eval.max_false_alarm=0.2",
                    "--config.eval.per_class_rule=True")
  assert "Per-class rule search" in result.stderr  # The option reached it.
  per_class = json.loads((tmp_path / "eval" / "decision.json").read_text())
  assert per_class["validation"]["defect_image_dice"] >= chosen[
      "validation"]["defect_image_dice"]
  k = len(json.loads((tmp_path / "model.json").read_text())["class_names"])
  for key in ("class_seed_thresholds", "class_min_areas"):
    assert len(per_class["rule"].get(key) or [None] * (k - 1)) == k - 1
  # --mode=predict applies the same rule (and flips) to new images.
  from chameleon_jax.data import synthetic
  synthetic.write_folder(synthetic.SyntheticSpec(num_images=2, seed=5,
                                                 min_size=(32, 32),
                                                 max_size=(32, 32)),
                         tmp_path / "new")
  run_main(*args, "--mode=predict", "--config.eval.decision=calibrated",
           "--config.eval.flip_tta=True",
           f"--config.predict.input_dir={tmp_path / 'new' / 'images'}")
  assert len(list((tmp_path / "predictions").glob("*_mask.png"))) == 2
  (tmp_path / "eval" / "decision.json").unlink()
  result = run_main(*args, "--mode=predict", "--config.eval.decision=calibrated",
                    f"--config.predict.input_dir={tmp_path / 'new' / 'images'}",
                    check=False)
  assert result.returncode != 0 and "decision.json is missing" in result.stderr


@pytest.mark.e2e
def test_best_checkpoint_by_calibrated_score(tmp_path):
  """With a calibrated decision, each evaluation reports the rule chosen on
  val, and train.best_metric="calibrated/score" keeps the step whose
  calibrated figure is highest; a metric no evaluation reports is refused."""
  import json
  from tests.conftest import run_main
  args = ["--config=tests/tiny_config.py", f"--workdir={tmp_path}",
          f"--config.data.root={tmp_path / 'data'}"]
  run_main(*args, "--mode=ingest,train", "--config.train.steps=15",
           "--config.train.eval_every=5", "--config.eval.decision=calibrated",
           "--config.eval.max_false_alarm=0.3",
           "--config.train.best_metric=calibrated/score")
  rows = [json.loads(line) for line in
          (tmp_path / "metrics.jsonl").read_text().splitlines()]
  val = [r for r in rows if r["split"] == "val"]
  assert [r["step"] for r in val] == [5, 10, 15]
  for r in val:
    within = r["calibrated/false_alarm_rate"] <= 0.3
    assert r["calibrated/score"] == (r["calibrated/defect_image_dice"]
                                     if within else
                                     -r["calibrated/false_alarm_rate"])
  score = {r["step"]: r["calibrated/score"] for r in val}
  kept = [int(p.name) for p in (tmp_path / "best").iterdir()
          if p.name.isdigit()]
  assert len(kept) == 1 and score[kept[0]] == max(score.values())
  result = run_main(*args, "--mode=train", "--config.train.steps=20",
                    "--config.train.best_metric=calibrated/score",
                    check=False)
  assert result.returncode != 0
  assert "calibrated/score" in result.stderr and "decision" in result.stderr


def test_worst_misses_break_dice_ties_by_defect_area():
  from chameleon_jax.evaluation import report
  per_image = {"dice": np.array([0.0, 0.5, 0.0, 0.0, 0.0, 0.0]),
               "defect": np.array([True, True, True, False, True, False]),
               "gt_area": np.array([10, 50, 400, 0, 40, 0]),
               "false_alarm": np.array([False, False, False, True, False,
                                        True]),
               "pred_area": np.array([0, 9, 0, 3, 0, 7])}
  missed, alarms = report.worst(per_image, 3)
  assert missed.tolist() == [2, 4, 0]  # Dice 0, largest defect first.
  assert alarms.tolist() == [5, 3]
  _, results, _ = decision.evaluate(decision.DecisionRule(0.5, 1), _items(),
                                    ["bg", "a", "b"])
  assert all((r["gt_area"] > 0) == r["defect"] for r in results)


def test_best_metric_missing_from_validation_is_refused(tmp_path):
  from chameleon_jax.model_io.checkpoint import Checkpointer
  checkpointer = Checkpointer(tmp_path, every_steps=1, keep=1,
                              best_metric="mean_defect_iuo")  # Misspelt.
  with pytest.raises(KeyError, match="mean_defect_iuo.*mean_defect_iou"):
    checkpointer.save_best(1, None, {}, {"mean_defect_iou": 0.5})
  checkpointer.close()


def _sized_classes(n=4):
  """Clean images with a confident 6-px speck of class 2; defect images
  with a 3-px blob of class 1 or a 30-px region of class 2: no shared
  minimum area keeps the blobs and drops the specks."""
  items = []
  def image(labels, regions):
    probs = np.zeros(labels.shape + (3,), np.float32)
    probs[..., 0] = 1.0
    for (ys, xs), k in regions:
      probs[ys, xs] = 0.0
      probs[ys, xs, 0], probs[ys, xs, k] = 0.05, 0.95
    items.append((len(items), probs.astype(np.float16), labels))
  for _ in range(2 * n):
    image(np.zeros((16, 16), np.int32), [((slice(2, 4), slice(2, 5)), 2)])
  for _ in range(n):
    labels = np.zeros((16, 16), np.int32)
    labels[5, 5:8] = 1
    image(labels, [((5, slice(5, 8)), 1)])
  for _ in range(n):
    labels = np.zeros((16, 16), np.int32)
    labels[8:13, 4:10] = 2
    image(labels, [((slice(8, 13), slice(4, 10)), 2)])
  return items


def test_component_class_is_the_class_with_most_mass():
  probs = np.zeros((1, 4, 3), np.float32)
  probs[0] = [[0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7], [1, 0, 0]]
  components = np.array([[1, 1, 1, 0]])
  assert decision.component_classes(probs, components, 1).tolist() == [2]


def test_per_class_rule_keeps_small_blobs_and_drops_large_specks():
  items = _sized_classes()
  names = ["bg", "blob", "band"]
  shared, table = decision.calibrate(items, 0.0, thresholds=(0.5,))
  assert shared.class_min_areas is None and shared.min_area == 8
  shared_metrics, _, _ = decision.evaluate(shared, items, names)
  assert shared_metrics["defect_image_dice"] == pytest.approx(0.5)
  rule, table = decision.calibrate(items, 0.0, thresholds=(0.5,),
                                   per_class=True)
  assert rule.class_min_areas[0] <= 3 < 6 < rule.class_min_areas[1]
  row = decision.chosen_row(rule, table)
  assert row["class_min_areas"] == list(rule.class_min_areas)
  metrics, _, _ = decision.evaluate(rule, items, names)
  assert metrics["defect_image_dice"] == pytest.approx(1.0)
  assert metrics["false_alarm_rate"] == 0.0
  assert row["defect_image_dice"] == pytest.approx(1.0, abs=1e-12)
  assert row["false_alarm_rate"] == 0.0


def test_per_class_search_reproduces_applying_the_rule():
  items = _sized_classes() + [(i + 100, p, m) for i, p, m in _items(seed=3)]
  rule, table = decision.calibrate(items, 0.3, thresholds=(0.3, 0.5, 0.7),
                                   min_areas=(1, 3, 9), per_class=True)
  assert rule.class_min_areas is not None  # The search moved.
  row = decision.chosen_row(rule, table)
  metrics, _, _ = decision.evaluate(rule, items, ["bg", "a", "b"])
  assert row["defect_image_dice"] == pytest.approx(
      metrics["defect_image_dice"], abs=1e-12)
  assert row["false_alarm_rate"] == pytest.approx(
      metrics["false_alarm_rate"], abs=1e-12)
  shared, _ = decision.calibrate(items, 0.3, thresholds=(0.3, 0.5, 0.7),
                                 min_areas=(1, 3, 9))
  assert row["defect_image_dice"] >= decision.chosen_row(
      shared, table)["defect_image_dice"]


def test_per_class_rule_survives_json(tmp_path):
  items = _sized_classes()
  rule, table = decision.calibrate(items, 0.0, thresholds=(0.5,),
                                   per_class=True)
  (tmp_path / "eval").mkdir()
  decision.save_rule(tmp_path / "eval" / "decision.json", rule, table, 0.0,
                     "val")
  loaded = decision.load_rule(tmp_path)
  assert loaded == rule and isinstance(loaded.class_min_areas, tuple)
  assert decision.chosen_row(loaded, table)["class_min_areas"] == list(
      rule.class_min_areas)


def test_per_class_moves_below_the_minimum_gain_are_not_taken():
  items = _sized_classes()
  band = items[-1]  # Many more bands: the blobs' gain falls under 0.005.
  items += [(len(items) + i, band[1], band[2]) for i in range(1000)]
  gain = 4 / (4 + 1004)  # Dice 1 instead of 0 on 4 of 1008 defect images.
  assert gain < decision.PER_CLASS_MIN_GAIN
  rule, _ = decision.calibrate(items, 0.0, thresholds=(0.5,), per_class=True)
  assert rule.class_min_areas is None and rule.min_area == 8
