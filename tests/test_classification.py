"""Image classification end to end: metrics from sums, and main.py."""

import json

import numpy as np
import pytest

from chameleon_jax.metrics.classification import (
    classification_sums, summarize_classification)
from tests.conftest import run_main


def test_metrics_from_a_known_confusion_matrix():
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 0])
  preds = np.array([0, 0, 1, 0, 1, 2, 2, 2, 0, 2])
  logits = np.eye(3)[preds] * 5.0
  weight = np.ones(10)
  weight[-1] = 0  # A padding example: not counted.
  sums, per_image = classification_sums(logits, labels, weight)
  expected = np.array([[3, 1, 0], [0, 1, 1], [1, 0, 2]])
  np.testing.assert_array_equal(sums["confusion"], expected)
  m = summarize_classification(sums, ("ok", "scratch", "dent"))
  assert m["num_images"] == 9
  assert m["accuracy"] == pytest.approx(6 / 9)
  assert m["recall/ok"] == pytest.approx(3 / 4)
  assert m["recall/scratch"] == pytest.approx(1 / 2)
  assert m["precision/dent"] == pytest.approx(2 / 3)
  assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 3) / 3)
  assert m["false_alarm_rate"] == pytest.approx(1 / 4)  # ok -> scratch.
  assert m["defect_recall"] == pytest.approx(4 / 5)  # dent -> ok is missed.
  np.testing.assert_array_equal(per_image["pred"], preds)


@pytest.mark.e2e
def test_classification_through_main(tmp_path):
  workdir = str(tmp_path / "run")
  run_main("--config=tests/tiny_config.py:classification",
           f"--workdir={workdir}", "--mode=ingest,train,eval",
           "--config.train.steps=10")
  metrics = json.loads((tmp_path / "run/eval/test_metrics.json").read_text())
  confusion = np.array(metrics["confusion"])
  assert confusion.shape == (4, 4)
  assert confusion.sum() == metrics["num_images"] > 0
  rows = json.loads((tmp_path / "run/eval/test_per_image.json").read_text())
  assert len(rows) == confusion.sum()
  correct = sum(r["label"] == r["pred"] for r in rows)
  assert correct == np.trace(confusion)
  assert metrics["accuracy"] == pytest.approx(correct / len(rows))
  assert (tmp_path / "run/eval/test_confusion.png").stat().st_size > 1000
  refused = run_main("--config=tests/tiny_config.py:classification",
                     f"--workdir={workdir}", "--mode=predict", check=False)
  assert refused.returncode != 0 and "segmentation only" in refused.stderr
