"""Issue 39's traps on a user's own data, one test each (written to fail on
the code before the fix): data where every image has a defect."""

import json

from tests.conftest import run_main

CONFIG = "--config=tests/tiny_config.py"


def test_every_image_defective_trains_evaluates_and_says_what_is_unmeasurable(
    tmp_path):
  """No defect-free image (as in NEU-Seg, BSData, road cracks): the
  rare_defects preset's defect-image share cannot be honoured and is
  adapted with the reason logged (training runs), and the false-alarm rate
  is reported as not measurable instead of 0.000."""
  workdir = tmp_path / "run"
  result = run_main(
      CONFIG, f"--workdir={workdir}", "--mode=ingest,train,eval",
      f"--config.data.root={tmp_path / 'data'}",
      "--config.data.source_kwargs.empty_fraction=0.0",
      "--config.data.defect_image_fraction=0.5",
      "--config.data.defect_class_balance=True",
      "--config.eval.decision=calibrated", "--config.train.steps=6")
  assert "defect_image_fraction=0.5" in result.stderr
  assert "no defect-free image" in result.stderr
  metrics = json.loads((workdir / "eval" / "test_metrics.json").read_text())
  assert metrics["num_defect_free_images"] == 0
  assert metrics["false_alarm_rate"] is None
  assert "false_alarm_rate: not measurable (no defect-free image)" in (
      result.stdout)
  assert "false_alarm_rate: 0.0000" not in result.stdout


def test_rates_without_their_images_are_undefined_not_zero():
  import math

  import numpy as np

  from chameleon_jax import atomic
  from chameleon_jax.metrics import classification, segmentation
  sums = {"confusion": np.eye(2) * 10, "defect_image_dice_sum": 3.0,
          "num_defect_images": 4, "num_false_alarms": 0,
          "num_defect_free_images": 0, "num_images": 4}
  out = segmentation.summarize(sums, ("background", "pit"))
  assert math.isnan(out["false_alarm_rate"])
  assert out["defect_image_dice"] == 0.75
  clean_only = segmentation.summarize(
      {**sums, "num_defect_images": 0, "defect_image_dice_sum": 0.0,
       "num_defect_free_images": 4, "num_false_alarms": 1},
      ("background", "pit"))
  assert math.isnan(clean_only["defect_image_dice"])
  assert clean_only["false_alarm_rate"] == 0.25
  cls = classification.summarize_classification(
      {"confusion": np.array([[0, 0], [1, 3]]), "num_images": 4},
      ("ok", "defect"))
  assert math.isnan(cls["false_alarm_rate"]) and cls["defect_recall"] == 0.75
  assert atomic.json_ready({"a": float("nan"), "b": [np.float32(0.5)],
                            "c": np.int64(2)}) == {"a": None, "b": [0.5],
                                                   "c": 2}
