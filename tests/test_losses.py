"""Dice + CE against independent float64 NumPy references, vectors, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from chameleon_jax.losses import build_loss, segmentation as seg


def _softmax64(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def np_cross_entropy(logits, labels, ignore=255, weights=None, smoothing=0.0):
  logits = np.asarray(logits, np.float64)
  k = logits.shape[-1]
  valid = labels != ignore
  total = 0.0
  wsum = 0.0
  logp = np.log(_softmax64(logits))
  for idx in zip(*np.nonzero(valid)):
    t = labels[idx]
    target = np.full(k, smoothing / k)
    target[t] += 1 - smoothing
    w = 1.0 if weights is None else weights[t]
    total += w * -(target * logp[idx]).sum()
    wsum += w
  return total / max(wsum, 1e-12)


def np_dice(logits, labels, ignore=255, include_background=False,
            over="batch", nr=1e-5, dr=1e-5):
  p = _softmax64(np.asarray(logits, np.float64))
  k = p.shape[-1]
  valid = (labels != ignore)
  losses = []
  units = [slice(None)] if over == "batch" else [slice(i, i + 1)
                                                 for i in range(len(labels))]
  for unit in units:
    row = []
    for c in range(0 if include_background else 1, k):
      pc = p[unit][..., c] * valid[unit]
      gc = ((labels[unit] == c) & valid[unit]).astype(np.float64)
      row.append(1 - (2 * (pc * gc).sum() + nr) / (pc.sum() + gc.sum() + dr))
    losses.append(row)
  return float(np.mean(losses))


def _random_case(seed, b=2, h=6, w=5, k=4, ignore_share=0.2):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, (b, h, w, k)).astype(np.float32)
  labels = rng.integers(0, k, (b, h, w))
  labels[rng.random((b, h, w)) < ignore_share] = 255
  return logits, labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 5])
def test_cross_entropy_matches_float64_reference(seed, k):
  logits, labels = _random_case(seed, k=k)
  weights = np.linspace(0.5, 2.0, k)
  for kwargs, ref in (
      ({}, {}),
      ({"class_weights": weights}, {"weights": weights}),
      ({"label_smoothing": 0.1}, {"smoothing": 0.1}),
  ):
    got = seg.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), **kwargs)
    np.testing.assert_allclose(got, np_cross_entropy(logits, labels, **ref),
                               rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("over", ["batch", "image"])
@pytest.mark.parametrize("include_background", [False, True])
def test_dice_matches_float64_reference(seed, over, include_background):
  logits, labels = _random_case(seed)
  got = seg.soft_dice(jnp.asarray(logits), jnp.asarray(labels),
                      reduction_over=over,
                      include_background=include_background)
  ref = np_dice(logits, labels, over=over,
                include_background=include_background)
  np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_valid_pixel_mean_reference_vector():
  """losses.md: logits [-9, 9, 1, 9, -9], targets [0, 1, ignore, 1, 0], soft
  targets 0.1/0.9 -> 0.9001 over the 4 valid pixels. Two-class softmax on
  [0, z] is the sigmoid of z; smoothing 0.2 over 2 classes gives 0.1/0.9."""
  z = np.array([-9.0, 9.0, 1.0, 9.0, -9.0], np.float32)
  logits = jnp.stack([jnp.zeros_like(z), z], -1).reshape(1, 1, 5, 2)
  labels = jnp.array([0, 1, 255, 1, 0]).reshape(1, 1, 5)
  got = seg.cross_entropy(logits, labels, label_smoothing=0.2)
  np.testing.assert_allclose(got, 0.9001, atol=1e-4)


def test_soft_dice_score_reference_vector():
  """losses.md: P = [1, 1, 0, 0], G = [1, 1, 1, 1] -> Dice 2/3."""
  big = 30.0  # Softmax of +-30 is 0/1 to float32 precision.
  p = np.array([1, 1, 0, 0])
  logits = jnp.asarray(np.stack([big * (1 - p), big * p], -1).reshape(1, 1, 4, 2),
                       jnp.float32)
  labels = jnp.ones((1, 1, 4), jnp.int32)
  loss = seg.soft_dice(logits, labels, smooth_nr=0, smooth_dr=0)
  np.testing.assert_allclose(1 - loss, 2 / 3, atol=1e-6)


def test_empty_target_policy():
  labels = jnp.zeros((2, 8, 8), jnp.int32)  # No defect anywhere.
  empty_pred = jnp.stack([jnp.full((2, 8, 8), 20.0), jnp.full((2, 8, 8), -20.0)], -1)
  false_pos = empty_pred.at[0, :4, :4].set(jnp.array([-20.0, 20.0]))
  for over in ("batch", "image"):
    assert float(seg.soft_dice(empty_pred, labels, reduction_over=over)) < 1e-3
    loss = float(seg.soft_dice(false_pos, labels, reduction_over=over))
    assert loss > (0.99 if over == "batch" else 0.49)


def test_all_ignored_is_zero_and_finite():
  logits = jnp.ones((1, 4, 4, 3))
  labels = jnp.full((1, 4, 4), 255)
  loss_fn = build_loss("dice_ce")
  value, grad = jax.value_and_grad(loss_fn)(logits, labels)
  assert float(value) < 1e-4
  assert bool(jnp.isfinite(grad).all())


def test_gradient_matches_finite_differences_in_float64():
  logits, labels = _random_case(7, b=1, h=3, w=3, k=3)
  with jax.enable_x64():
    loss_fn = build_loss("dice_ce", smooth_nr=1e-3, smooth_dr=1e-3)
    x = jnp.asarray(logits, jnp.float64)
    f = lambda z: loss_fn(z, jnp.asarray(labels))
    grad = np.asarray(jax.grad(f)(x))
    eps = 1e-6
    flat = np.asarray(x).ravel()
    for i in range(0, flat.size, 3):
      plus, minus = flat.copy(), flat.copy()
      plus[i] += eps
      minus[i] -= eps
      fd = (float(f(jnp.asarray(plus.reshape(x.shape))))
            - float(f(jnp.asarray(minus.reshape(x.shape))))) / (2 * eps)
      np.testing.assert_allclose(grad.ravel()[i], fd, rtol=1e-5, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6),
       k=st.integers(2, 4), scale=st.sampled_from([1.0, 1e4]),
       seed=st.integers(0, 2**16), ignore=st.floats(0, 1))
def test_stable_on_random_shapes_masks_and_extreme_logits(b, h, w, k, scale,
                                                          seed, ignore):
  logits, labels = _random_case(seed, b, h, w, k, ignore_share=ignore)
  logits = jnp.asarray(logits * scale)
  for dtype in (jnp.float32, jnp.bfloat16):
    value, grad = jax.value_and_grad(build_loss("dice_ce"))(
        logits.astype(dtype), jnp.asarray(labels))
    assert bool(jnp.isfinite(value)) and bool(jnp.isfinite(grad).all())


def test_options_are_refused_with_clear_errors():
  logits, labels = _random_case(0, k=3)
  with pytest.raises(ValueError, match="reduction_over='pixel'"):
    seg.soft_dice(jnp.asarray(logits), jnp.asarray(labels),
                  reduction_over="pixel")
  with pytest.raises(ValueError, match="class_weights has 2 entries for 3"):
    seg.cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                      class_weights=[1.0, 2.0])
  with pytest.raises(TypeError, match="no argument"):
    build_loss("dice_ce", smoth=1.0)
