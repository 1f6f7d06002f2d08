"""benchmarks/signal_probe.py: per-image defect signal figures."""

import numpy as np

from benchmarks.signal_probe import image_signal, summarize
from chameleon_jax.data.labels import IGNORE_INDEX


def _probs(p_defect):
  p = np.asarray(p_defect, np.float32)
  return np.stack([1 - p, p], -1)


def test_defect_image_figures():
  p = np.full((4, 5), 0.1)
  p[0, :2] = [0.9, 0.3]
  p[3, 4] = 0.6  # A false positive outside the mask.
  labels = np.zeros((4, 5), int)
  labels[0, :2] = 1
  labels[2, 2] = IGNORE_INDEX
  s = image_signal(_probs(p), labels)
  np.testing.assert_allclose(s["mask_mean_p"], 0.6, rtol=1e-6)
  assert s["mask_share_p50"] == 0.5
  outside = np.sort(np.r_[np.full(16, 0.1), 0.6])  # 17 valid pixels outside.
  np.testing.assert_allclose(s["outside_p99"], np.quantile(outside, 0.99),
                             rtol=1e-6)


def test_clean_image_figures_ignore_padding():
  p = np.zeros((5, 6))
  p[0, 0:2] = 0.7  # A 2-pixel component.
  p[4, 4:6] = 0.8  # 2 pixels, joined diagonally (8-connected)...
  p[3, 3] = 0.55  # ...to this one: 3 pixels (4-connected it would be 2).
  p[2, 5] = 0.99  # Padding: ignored.
  labels = np.zeros((5, 6), int)
  labels[2, 5] = IGNORE_INDEX
  s = image_signal(_probs(p), labels)
  np.testing.assert_allclose(s["peak_p"], 0.8, rtol=1e-6)
  assert s["largest_component_p50"] == 3
  assert image_signal(_probs(np.zeros((3, 3))), np.zeros((3, 3), int)) == {
      "peak_p": 0.0, "largest_component_p50": 0.0}


def test_summary_medians_per_folder():
  rows = [("Free", {"peak_p": v, "largest_component_p50": 0.0})
          for v in (0.2, 0.9, 0.4)]
  rows.append(("Crack", {"mask_mean_p": 0.5, "mask_share_p50": 1.0,
                         "outside_p99": 0.1}))
  lines = summarize(rows)
  assert lines[0].split()[:2] == ["Crack", "n=1"]
  assert "peak_p 0.4 " in lines[1] and "n=3" in lines[1]


def test_a_defect_folder_with_an_empty_mask_gets_both_lines():
  rows = [("Uneven", {"peak_p": 0.3, "largest_component_p50": 0.0}),
          ("Uneven", {"mask_mean_p": 0.2, "mask_share_p50": 0.0,
                      "outside_p99": 0.4}),
          ("Uneven", {"mask_mean_p": 0.4, "mask_share_p50": 0.5,
                      "outside_p99": float("nan")})]
  defect, clean = summarize(rows)
  assert "n=2" in defect and "mask_mean_p 0.3 " in defect
  assert "outside_p99 0.4" in defect  # NaN (no pixel outside) is skipped.
  assert "n=1" in clean and "peak_p 0.3 " in clean
