"""benchmarks/ensemble_decision.py: averaging members' probabilities."""

import numpy as np
import pytest

from benchmarks.ensemble_decision import mean_items


def _items(seed, n=3):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    p = rng.dirichlet(np.ones(3), size=(4, 5)).astype(np.float16)
    out.append((i, p, np.full((4, 5), i)))
  return out


def test_mean_of_members_is_the_pixelwise_mean_in_float32():
  a, b = _items(0), _items(1)
  mean = mean_items([a, b])
  assert [i for i, _, _ in mean] == [0, 1, 2]
  for (_, pa, labels), (_, pb, _), (_, pm, lm) in zip(a, b, mean):
    assert pm.dtype == np.float32
    np.testing.assert_allclose(
        pm, (pa.astype(np.float64) + pb.astype(np.float64)) / 2, rtol=1e-6)
    np.testing.assert_array_equal(lm, labels)
    np.testing.assert_allclose(pm.sum(-1), 1.0, atol=2e-3)  # float16 inputs.


def test_one_member_is_itself():
  a = _items(2)
  for (_, p, _), (_, q, _) in zip(a, mean_items([a])):
    np.testing.assert_array_equal(q, p.astype(np.float32))


def test_members_must_cover_the_same_images_in_order():
  a, b = _items(0), _items(1)
  with pytest.raises(ValueError, match="image order"):
    mean_items([a, b[::-1]])
  with pytest.raises(ValueError):
    mean_items([a, b[:2]])
