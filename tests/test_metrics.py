"""Metric sums against a direct NumPy computation; summaries on known values."""

import jax.numpy as jnp
import numpy as np

from chameleon_jax.metrics import segmentation as metrics


def test_sums_match_numpy():
  rng = np.random.default_rng(0)
  b, h, w, k = 4, 8, 8, 3
  logits = rng.normal(size=(b, h, w, k)).astype(np.float32)
  labels = rng.integers(0, k, (b, h, w))
  labels[1] = 0  # A defect-free image ...
  labels[2, :2] = 255  # ... some ignored pixels ...
  weight = np.array([1, 1, 1, 0], np.float32)  # ... and a padding example.
  sums, per_image = metrics.segmentation_sums(
      jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weight))
  pred = logits.argmax(-1)
  expected = np.zeros((k, k), np.int64)
  for i in range(3):
    for t, p in zip(labels[i].ravel(), pred[i].ravel()):
      if t != 255:
        expected[t, p] += 1
  np.testing.assert_array_equal(sums["confusion"], expected)
  assert int(sums["num_images"]) == 3
  assert int(sums["num_defect_free_images"]) == 1
  assert int(sums["num_false_alarms"]) == int((pred[1] > 0).any())
  gt, pr = labels[0] > 0, pred[0] > 0
  np.testing.assert_allclose(per_image["dice"][0],
                             2 * (gt & pr).sum() / (gt.sum() + pr.sum()),
                             rtol=1e-6)


def test_min_defect_area_controls_false_alarms():
  labels = jnp.zeros((1, 4, 4), jnp.int32)
  logits = jnp.zeros((1, 4, 4, 2)).at[0, 0, :2, 1].set(5.0)  # 2 fg pixels.
  one = jnp.ones((1,))
  assert int(metrics.segmentation_sums(logits, labels, one, 2)[0][
      "num_false_alarms"]) == 1
  assert int(metrics.segmentation_sums(logits, labels, one, 3)[0][
      "num_false_alarms"]) == 0


def test_summary_on_known_confusion():
  sums = {"confusion": np.array([[90, 2, 0], [3, 5, 0], [0, 0, 0]]),
          "num_images": 10, "num_defect_images": 4,
          "defect_image_dice_sum": 2.0, "num_defect_free_images": 6,
          "num_false_alarms": 3}
  out = metrics.summarize(sums, ["bg", "a", "b"])
  assert out["iou/a"] == 5 / 10 and out["dice/a"] == 10 / 15
  assert np.isnan(out["iou/b"])  # Absent everywhere: excluded from the mean.
  assert out["mean_defect_iou"] == 0.5
  assert out["false_alarm_rate"] == 0.5 and out["defect_image_dice"] == 0.5
  total = metrics.add_sums(metrics.add_sums(None, sums), sums)
  assert metrics.summarize(total, ["bg", "a", "b"])["iou/a"] == 0.5


def test_defect_components_are_eight_connected_per_class_and_found():
  from chameleon_jax.metrics.images import defect_components
  labels = np.zeros((10, 12), np.uint8)
  labels[1, 1] = labels[2, 2] = 1  # Diagonal: one component of class 1.
  labels[6:9, 6:10] = 1  # 12 px, class 1.
  labels[1:3, 8:11] = 2  # 6 px, class 2, touching nothing.
  labels[5, 0] = 255  # Not labelled: no component.
  pred = np.zeros_like(labels)
  pred[8, 9] = 3  # A predicted defect pixel (any class) on the 12 px one.
  pred[0, 0] = 1  # Beside the diagonal pair, not on it.
  assert defect_components(pred, labels) == [(1, 2, False), (1, 12, True),
                                             (2, 6, False)]
  assert defect_components(pred, np.zeros_like(labels)) == []
