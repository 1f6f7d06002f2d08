"""image_topk: the top-k MIL image loss against a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chameleon_jax.losses import build_loss
from tests.test_losses import case, run64


def reference(pred, target, k, mode="multiclass", ignore_index=255):
  """Per-image loss in float64 NumPy, written from the definition."""
  pred = np.asarray(pred, np.float64)
  losses = []
  for p, t in zip(pred, target):
    valid = t != ignore_index
    if mode == "multiclass":
      m = p.max(-1, keepdims=True)
      lse = np.log(np.exp(p[..., 1:] - m).sum(-1)) + m[..., 0]
      d = lse - p[..., 0]
    else:
      d = p[..., 0]
    d = d[valid]
    if d.size == 0:
      losses.append(None)
      continue
    score = np.sort(d)[::-1][:k].mean()
    y = float((t[valid] > 0).any())
    losses.append(y * np.log1p(np.exp(-score))
                  + (1 - y) * np.log1p(np.exp(score)))
  return losses


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_matches_float64_reference(mode, k):
  pred, target = case(5, mode, b=4, h=5, w=6, k=4, ignore=0.3)
  target[1] = np.where(target[1] == 255, 255, 0)  # a defect-free image
  per_image = reference(pred, target, k, mode)
  expected = np.mean([v for v in per_image if v is not None])
  got = run64("image_topk", pred, target, mode=mode, k=k)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  with jax.enable_x64():
    none = build_loss("image_topk", mode=mode, k=k, reduction="none")(
        jnp.asarray(pred, jnp.float64), jnp.asarray(target))
  np.testing.assert_allclose(np.asarray(none), per_image, rtol=1e-12)


def test_two_channel_softmax_equals_binary_sigmoid():
  # p(defect) = softmax(z)[1] = sigmoid(z1 - z0): the same image score.
  pred, target = case(6, "multiclass", b=3, h=4, w=4, k=2, ignore=0.1)
  binary = pred[..., 1:] - pred[..., :1]
  a = run64("image_topk", pred, target, k=3)
  b = run64("image_topk", binary, target, mode="binary", k=3)
  np.testing.assert_allclose(a, b, rtol=1e-12)


def test_ignored_pixels_and_fully_ignored_images_change_nothing():
  pred, target = case(7, "multiclass", b=3, h=5, w=5, k=3, ignore=0.2)
  base = run64("image_topk", pred, target, k=4)
  loud = pred.copy()
  loud[target == 255] = np.array([-50.0, 50.0, 50.0])  # confident "defect"
  np.testing.assert_allclose(run64("image_topk", loud, target, k=4), base,
                             rtol=1e-12)
  extra_pred = np.concatenate([pred, pred[:1]])
  extra_target = np.concatenate([target, np.full_like(target[:1], 255)])
  np.testing.assert_allclose(
      run64("image_topk", extra_pred, extra_target, k=4), base, rtol=1e-12)
  assert run64("image_topk", pred, np.full_like(target, 255), k=4) == 0.0


def test_gradient_reaches_only_the_top_k_pixels_and_lowers_them_on_clean_images():
  rng = np.random.default_rng(8)
  pred = rng.normal(0, 1, (1, 6, 6, 1))
  target = np.zeros((1, 6, 6), np.int64)
  loss = build_loss("image_topk", mode="binary", k=5)
  grad = np.asarray(jax.grad(lambda z: loss(z, jnp.asarray(target)))(
      jnp.asarray(pred, jnp.float32)))[0, ..., 0]
  top = np.argsort(pred.ravel())[::-1][:5]
  assert set(np.flatnonzero(grad)) == set(top)
  assert (grad.ravel()[top] > 0).all()  # gradient descent lowers them
  target[0, 0, 0] = 1
  grad = np.asarray(jax.grad(lambda z: loss(z, jnp.asarray(target)))(
      jnp.asarray(pred, jnp.float32)))[0, ..., 0]
  assert (grad.ravel()[top] < 0).all()  # an image with a defect raises them


def test_refusals_name_the_problem():
  pred, target = case(9, "multiclass", b=1, h=2, w=2, k=3)
  with pytest.raises(ValueError, match="k=5 exceeds the 4 pixels"):
    build_loss("image_topk", k=5)(jnp.asarray(pred), jnp.asarray(target))
  with pytest.raises(ValueError, match="k must be >= 1"):
    build_loss("image_topk", k=0)(jnp.asarray(pred), jnp.asarray(target))
  with pytest.raises(ValueError, match="needs logits"):
    build_loss("image_topk", from_logits=False)(jnp.asarray(pred),
                                                jnp.asarray(target))
  ml_pred, ml_target = case(9, "multilabel", b=1, h=2, w=2, k=3)
  with pytest.raises(ValueError, match="mode='binary' or 'multiclass'"):
    build_loss("image_topk", mode="multilabel", k=2)(
        jnp.asarray(ml_pred), jnp.asarray(ml_target))
  with pytest.raises(TypeError, match="does not take"):
    build_loss("image_topk", empty_target="exclude")


def test_dice_ce_image_is_dice_ce_plus_weighted_image_term():
  pred, target = case(10, "multiclass", b=3, h=5, w=6, k=4, ignore=0.2)
  region = {"reduce_over": "image", "empty_target": "exclude"}
  expected = (run64("dice_ce", pred, target, **region)
              + 0.5 * run64("image_topk", pred, target, k=3))
  got = run64("dice_ce_image", pred, target, image_weight=0.5, k=3, **region)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  terms = [{"name": "dice_ce", "kwargs": region},
           {"name": "image_topk", "weight": 0.5, "kwargs": {"k": 3}}]
  np.testing.assert_allclose(run64("compound", pred, target, terms=terms),
                             expected, rtol=1e-12)
