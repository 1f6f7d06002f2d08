"""Loss zoo: gradients vs finite differences, stability, option refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from chameleon_jax.losses import build_loss
from chameleon_jax.registry import LOSSES
from tests.test_losses import case

SMOOTH_LOSSES = [("cross_entropy", {}), ("focal", {}), ("dice", {}),
                 ("dice", {"variant": "log"}), ("jaccard", {}), ("tversky", {}),
                 ("focal_tversky", {}), ("generalized_dice", {}),
                 ("boundary", {"max_distance": 3}), ("dice_ce", {}),
                 ("dice_focal", {}), ("image_topk", {"k": 2}),
                 ("dice_ce_image", {"k": 2})]
EVERY_LOSS = SMOOTH_LOSSES + [("lovasz", {})]


@pytest.mark.parametrize("name,kwargs", SMOOTH_LOSSES)
def test_gradient_matches_finite_differences(name, kwargs):
  pred, target = case(21, "multiclass", b=1, h=4, w=3, k=3)
  with jax.enable_x64():
    loss = build_loss(name, smooth_nr=1e-3, smooth_dr=1e-3, **kwargs) if name in (
        "dice", "jaccard", "tversky", "focal_tversky", "generalized_dice",
        "dice_ce", "dice_focal", "dice_ce_image") else build_loss(name, **kwargs)
    x = jnp.asarray(pred, jnp.float64)
    f = lambda z: loss(z, jnp.asarray(target))
    grad = np.asarray(jax.grad(f)(x)).ravel()
    flat = np.asarray(x).ravel()
    eps = 1e-6
    for i in range(0, flat.size, 4):
      plus, minus = flat.copy(), flat.copy()
      plus[i] += eps
      minus[i] -= eps
      fd = (float(f(jnp.asarray(plus.reshape(x.shape))))
            - float(f(jnp.asarray(minus.reshape(x.shape))))) / (2 * eps)
      np.testing.assert_allclose(grad[i], fd, rtol=1e-5, atol=1e-8)


def test_lovasz_gradient_matches_finite_differences_away_from_ties():
  pred, target = case(22, "binary", b=1, h=4, w=4, ignore=0.0)
  with jax.enable_x64():
    loss = build_loss("lovasz", mode="binary")
    x = jnp.asarray(pred, jnp.float64)
    f = lambda z: loss(z, jnp.asarray(target))
    grad = np.asarray(jax.grad(f)(x)).ravel()
    flat = np.asarray(x).ravel()
    for i in range(flat.size):
      plus, minus = flat.copy(), flat.copy()
      plus[i] += 1e-7
      minus[i] -= 1e-7
      fd = (float(f(jnp.asarray(plus.reshape(x.shape))))
            - float(f(jnp.asarray(minus.reshape(x.shape))))) / 2e-7
      np.testing.assert_allclose(grad[i], fd, rtol=1e-5, atol=1e-8)


def _finite(name, kwargs, pred, target, dtype, jit=False):
  # Eager dispatch reuses each operation's compilation across calls of one
  # shape; jit compiles one program, cheaper where every call is a new shape.
  fn = jax.value_and_grad(build_loss(name, **kwargs))
  value, grad = (jax.jit(fn) if jit else fn)(jnp.asarray(pred).astype(dtype),
                                             jnp.asarray(target))
  return bool(jnp.isfinite(value)) and bool(jnp.isfinite(grad).all())


@pytest.mark.parametrize("name,kwargs", EVERY_LOSS)
@pytest.mark.parametrize("situation", ["all_empty", "all_ignored",
                                       "all_foreground", "extreme_logits"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_no_nan_or_inf_in_hard_cases(name, kwargs, situation, dtype):
  pred, target = case(23, "multiclass", k=3, ignore=0.0)
  if situation == "all_empty":
    target[:] = 0
  elif situation == "all_ignored":
    target[:] = 255
  elif situation == "all_foreground":
    target[:] = 2
  else:
    pred = np.sign(pred) * 1e4
  assert _finite(name, kwargs, pred, target, dtype)


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5),
       k=st.integers(2, 4), scale=st.sampled_from([1.0, 1e4]),
       seed=st.integers(0, 2**16), ignore=st.floats(0, 1),
       mode=st.sampled_from(["multiclass", "binary", "multilabel"]),
       name=st.sampled_from(["cross_entropy", "focal", "dice", "tversky",
                             "focal_tversky", "lovasz", "dice_ce"]))
def test_property_finite_on_random_shapes_and_masks(b, h, w, k, scale, seed,
                                                   ignore, mode, name):
  pred, target = case(seed, mode, b, h, w, k, ignore=ignore)
  assert _finite(name, {"mode": mode}, pred * scale, target, jnp.float32,
                 jit=True)


def test_every_registered_loss_is_covered_here():
  covered = {name for name, _ in EVERY_LOSS} | {"compound"}
  assert covered == set(LOSSES.names())


def test_options_are_refused_with_clear_errors():
  with pytest.raises(TypeError, match=r"loss 'dice' does not take \['label_smoothing'\]"):
    build_loss("dice", label_smoothing=0.1)
  with pytest.raises(TypeError, match=r"'focal' does not take \['class_weights'\]"):
    build_loss("focal", class_weights=[1, 2])
  with pytest.raises(ValueError, match="reduce_over='pixel'"):
    build_loss("dice", reduce_over="pixel")
  with pytest.raises(ValueError, match="empty_target='drop'"):
    build_loss("tversky", empty_target="drop")
  with pytest.raises(ValueError, match="include_background applies to mode='multiclass'"):
    build_loss("dice", mode="binary", include_background=True)
  pred, target = case(0, "multiclass", k=3)
  with pytest.raises(ValueError, match="class_weights has 2 entries for 3"):
    build_loss("cross_entropy", class_weights=[1.0, 2.0])(jnp.asarray(pred),
                                                          jnp.asarray(target))
  with pytest.raises(ValueError, match="binary: prediction"):
    build_loss("dice", mode="binary")(jnp.asarray(pred), jnp.asarray(target))
  with pytest.raises(ValueError, match="hinge needs logits"):
    build_loss("lovasz", mode="binary", from_logits=False)(
        jnp.asarray(pred[..., :1]), jnp.asarray(target.clip(0, 1)))
  with pytest.raises(ValueError, match="compound term 0"):
    build_loss("compound", terms=[{"nme": "dice"}])


@pytest.mark.parametrize("name", ["dice_ce", "dice_focal", "dice_ce_image"])
def test_compounds_refuse_reductions_they_cannot_keep(name):
  """A compound adds terms of different shapes under reduction="none"
  (per-unit Dice, per-pixel CE): refused by name, as is a compound term."""
  with pytest.raises(TypeError, match="does not take.*reduction"):
    build_loss(name, reduction="none")
  with pytest.raises(ValueError, match="reduction='sum'"):
    build_loss("compound", terms=[{"name": "dice",
                                   "kwargs": {"reduction": "sum"}}])


def test_dice_focal_refuses_class_weights_and_uses_softmax_focal():
  """dice_focal's focal term has no class weights to apply them to
  consistently; in multiclass mode it is the softmax focal loss (MONAI's
  DiceFocal uses a sigmoid one per channel: a different number)."""
  with pytest.raises(TypeError, match="does not take.*class_weights"):
    build_loss("dice_focal", class_weights=[1.0, 2.0, 3.0])
  pred, target = case(31, "multiclass", k=3)
  with jax.enable_x64():
    x, t = jnp.asarray(pred, jnp.float64), jnp.asarray(target)
    both = float(build_loss("dice_focal")(x, t))
    dice = float(build_loss("dice")(x, t))
    softmax_focal = float(build_loss("focal")(x, t))
    onehot = np.eye(3)[np.where(target == 255, 0, target)]
    p = 1 / (1 + np.exp(-pred))
    pt = np.where(onehot == 1, p, 1 - p)
    sigmoid_focal = -((1 - pt) ** 2 * np.log(pt)).mean(-1)
    sigmoid_focal = sigmoid_focal[target != 255].mean()
  np.testing.assert_allclose(both, dice + softmax_focal, rtol=1e-12)
  assert abs(both - (dice + sigmoid_focal)) > 1e-3


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky",
                                  "generalized_dice", "dice_ce"])
def test_no_smoothing_and_an_empty_unit_give_finite_gradients(name):
  """smooth_nr = smooth_dr = 0 (the SMP setting) with a class absent from
  target and prediction (probabilities exactly 0): 0/0 must not make the
  image's gradient NaN (SMP clamps the denominator)."""
  probs = np.zeros((1, 4, 4, 3))
  probs[..., 0] = 0.7
  probs[..., 1] = 0.3  # Class 2: probability exactly 0, absent from target.
  target = np.zeros((1, 4, 4), np.int64)
  target[0, :2] = 1
  loss = build_loss(name, from_logits=False, smooth_nr=0.0, smooth_dr=0.0,
                    **({"include_background": True} if name != "dice_ce"
                       else {}))
  value, grad = jax.value_and_grad(lambda p: loss(p, jnp.asarray(target)))(
      jnp.asarray(probs, jnp.float32))
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
