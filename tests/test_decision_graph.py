"""The served decision rule (decision_graph.py) against its specification,
`DecisionRule.apply` (NumPy + SciPy), image by image."""

import jax
import numpy as np
import pytest
from scipy import ndimage

from chameleon_jax.evaluation.decision import DecisionRule
from chameleon_jax.evaluation.decision_graph import (apply_rule,
                                                     label_components,
                                                     propagate)


def _same_partition(labels: np.ndarray, reference: np.ndarray) -> bool:
  """Two labellings describe the same components (0 = background in both)."""
  if not np.array_equal(labels > 0, reference > 0):
    return False
  pairs = np.unique(np.stack([labels[labels > 0], reference[labels > 0]]),
                    axis=1)
  return (len(np.unique(pairs[0])) == pairs.shape[1]
          == len(np.unique(pairs[1])))


def _spiral(size: int) -> np.ndarray:
  """A one-pixel-wide square spiral with one-pixel gaps: one component whose
  only path is about size² / 2 pixels long."""
  mask = np.zeros((size, size), bool)
  top, left, bottom, right = 0, 0, size - 1, size - 1
  while top <= bottom and left <= right:
    mask[top, left:right + 1] = True
    mask[top:bottom + 1, right] = True
    if top + 2 <= bottom:
      mask[bottom, left:right + 1] = True
    if left + 2 <= right and top + 2 <= bottom:
      mask[top + 2:bottom + 1, left] = True
    top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    if top <= bottom:
      mask[top - 1, left] = True  # The bridge into the next ring.
  return mask


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_components_match_scipy(density):
  rng = np.random.default_rng(int(density * 100))
  masks = rng.random((3, 37, 53)) < density
  labels = np.asarray(jax.jit(label_components)(masks))
  for mask, got in zip(masks, labels):
    reference, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    assert _same_partition(got, reference)
    for component in np.unique(got[got > 0]):  # 1 + its largest index.
      assert component == np.flatnonzero(got.ravel() == component).max() + 1


def test_components_of_a_spiral_are_exact():
  mask = _spiral(64)
  reference, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
  labels, rounds = jax.jit(propagate)(mask[None])
  assert n == 1 and _same_partition(np.asarray(labels[0]), reference)
  # Pointer jumping: far fewer rounds than the path's ~2,000 pixels.
  assert int(rounds) < 200, int(rounds)


def _probabilities(rng, batch, height, width, classes):
  """Smooth random fields, so thresholds cut blobs of many sizes."""
  logits = ndimage.gaussian_filter(
      rng.normal(size=(batch, height, width, classes)) * 6, (0, 2, 2, 0))
  logits[..., 0] += 1.0  # Mostly background.
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


RULES = {
    "argmax-like": DecisionRule(threshold=0.5),
    "area": DecisionRule(threshold=0.3, min_area=16),
    "hysteresis": DecisionRule(threshold=0.25, min_area=4, seed_threshold=0.7),
    "per class": DecisionRule(threshold=0.3, min_area=8, seed_threshold=0.5,
                              class_seed_thresholds=(0.4, 0.8, 0.6),
                              class_min_areas=(2, 32, 8)),
    "per class areas only": DecisionRule(threshold=0.45,
                                         class_min_areas=(64, 1, 16)),
}


@pytest.mark.parametrize("name", RULES)
def test_rule_matches_the_specification(name):
  rule = RULES[name]
  rng = np.random.default_rng(len(name))
  probs = _probabilities(rng, 4, 41, 67, 4)
  valid = rng.random(probs.shape[:3]) > 0.05
  class_map, alarm, score = jax.jit(lambda p, v: apply_rule(rule, p, v))(
      probs, valid)
  kept_any = 0
  for i in range(len(probs)):
    want = rule.apply(probs[i], valid[i])
    np.testing.assert_array_equal(np.asarray(class_map[i]), want)
    assert bool(alarm[i]) == bool(want.any())
    p_defect = 1.0 - probs[i, ..., 0]
    assert float(score[i]) == (p_defect[want > 0].max() if want.any() else 0)
    kept_any += int(want.any())
  # The fields are not trivial: some images alarm, and the rule removes
  # some of what the plain threshold marks.
  assert kept_any
  assert (np.asarray(class_map) > 0).sum() < (
      (1 - probs[..., 0] >= rule.threshold) & valid).sum() or (
          name == "argmax-like")


def test_rule_without_valid_mask_and_empty_images():
  rule = RULES["hysteresis"]
  probs = np.zeros((2, 16, 16, 2), np.float32)
  probs[..., 0] = 1.0
  probs[1, 4:9, 4:9] = (0.1, 0.9)  # One 25-pixel defect in image 1.
  class_map, alarm, score = apply_rule(rule, probs)
  assert list(np.asarray(alarm)) == [False, True]
  assert np.asarray(class_map[1]).sum() == 25 and not np.asarray(
      class_map[0]).any()
  np.testing.assert_allclose(np.asarray(score), [0.0, 0.9], rtol=1e-6)
