"""White-box attacks and ensembles: exact against float64 NumPy, and invariants.

The reference model is a per-pixel two-layer network (1x1 convolutions) with
normalisation inside, small enough to back-propagate by hand in NumPy; for
classification its pixel logits are averaged over the image.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from chameleon_jax.data.labels import IGNORE_INDEX
from chameleon_jax.models import build_model
from chameleon_jax.registry import ATTACKS
from chameleon_jax.robustness import attacks
from chameleon_jax.robustness.ensemble import Ensemble, combine
from chameleon_jax.model_io import state as state_lib

MEAN, STD = 0.5, 0.25


def _params(seed=0, channels=3, hidden=6, classes=3):
  rng = np.random.default_rng(seed)
  return {"w1": rng.normal(0, 1.0, (channels, hidden)),
          "b1": rng.normal(0, 0.1, hidden),
          "w2": rng.normal(0, 1.0, (hidden, classes)),
          "b2": rng.normal(0, 0.1, classes)}


def _jax_pixel_logits(p):
  p = {k: jnp.asarray(v) for k, v in p.items()}

  def logits(x):
    h = jnp.tanh(((x - MEAN) / STD) @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]

  return logits


def _np_grad(p, x, target, task):
  """d(sum of per-example losses)/dx in float64, by hand."""
  z = (x - MEAN) / STD
  h = np.tanh(z @ p["w1"] + p["b1"])
  logits = h @ p["w2"] + p["b2"]
  if task == "classification":
    img = logits.mean((1, 2))
    prob = np.exp(img - img.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    d_img = prob - np.eye(img.shape[-1])[target]
    d_logits = np.broadcast_to(d_img[:, None, None, :] / np.prod(x.shape[1:3]),
                               logits.shape)
  else:
    valid = target != IGNORE_INDEX
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    onehot = np.eye(logits.shape[-1])[np.where(valid, target, 0)]
    count = np.maximum(valid.sum((1, 2)), 1)[:, None, None, None]
    d_logits = (prob - onehot) * valid[..., None] / count
  d_h = d_logits @ p["w2"].T
  return (d_h * (1 - h ** 2)) @ p["w1"].T / STD


def _np_pgd_linf(p, x, target, task, eps, alpha, steps, targeted=False):
  adv = x.copy()
  for _ in range(steps):
    g = _np_grad(p, adv, target, task) * (-1 if targeted else 1)
    adv = adv + alpha * np.sign(g)
    adv = np.clip(np.clip(adv, x - eps, x + eps), 0, 1)
  return adv


def _loss(task, logits_fn):
  if task == "classification":
    return attacks.classification_loss(lambda x: logits_fn(x).mean((1, 2)))
  return attacks.segmentation_loss(logits_fn)


def _data(seed=0, b=3, h=5, w=6, c=3, classes=3):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (b, h, w, c))
  masks = rng.integers(0, classes, (b, h, w))
  masks[0, :2] = IGNORE_INDEX
  labels = rng.integers(0, classes, b)
  return x, masks, labels


@pytest.mark.parametrize("task", ["classification", "segmentation"])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_linf_equals_float64_numpy_exactly(task, targeted):
  p = _params()
  x, masks, labels = _data()
  target = labels if task == "classification" else masks
  eps, alpha, steps = 8 / 255, 2 / 255, 7
  expected = _np_pgd_linf(p, x, target, task, eps, alpha, steps, targeted)
  with jax.enable_x64(True), jax.default_matmul_precision("highest"):
    loss = _loss(task, _jax_pixel_logits(p))
    got = attacks.pgd(loss, jnp.asarray(x), jnp.asarray(target), eps,
                      steps=steps, alpha=alpha, random_start=False,
                      targeted=targeted)
    got = np.asarray(got)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
  assert np.abs(got - x).max() > 0


def test_fgsm_is_x_plus_eps_sign_grad_clipped():
  p = _params(1)
  x, masks, _ = _data(1)
  loss = attacks.segmentation_loss(_jax_pixel_logits(p))
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(masks)
  grad = jax.grad(lambda z: loss(z, mj).sum())(xj)
  eps = 4 / 255
  expected = jnp.clip(xj + eps * jnp.sign(grad), 0, 1)
  np.testing.assert_array_equal(attacks.fgsm(loss, xj, mj, eps), expected)
  np.testing.assert_array_equal(ATTACKS.build("fgsm")(loss, xj, mj, eps),
                                expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("steps", [1, 4])
def test_pgd_iterates_stay_in_the_ball_and_in_the_box(norm, steps):
  p = _params(2)
  x, masks, _ = _data(2)
  x[1] = np.where(x[1] > 0.5, 1.0, 0.0)  # Saturated pixels test the box.
  loss = attacks.segmentation_loss(_jax_pixel_logits(p))
  xj = jnp.asarray(x, jnp.float32)
  for eps in (0.0, 2 / 255, 16 / 255, 1.5):
    adv = attacks.pgd(loss, xj, jnp.asarray(masks), eps, jax.random.key(3),
                      steps=steps, alpha_ratio=0.6, norm=norm,
                      random_start=True)
    delta = np.asarray(adv - xj, np.float64).reshape(len(x), -1)
    assert np.asarray(adv).min() >= 0 and np.asarray(adv).max() <= 1
    if norm == "linf":
      assert np.abs(delta).max() <= eps + 1e-6
    else:
      assert np.sqrt((delta ** 2).sum(1)).max() <= eps * (1 + 1e-5) + 1e-6


def test_l2_step_then_project_then_clip():
  """One L2 iteration in the documented order (torchattacks, foolbox)."""
  p = _params(3)
  x, masks, _ = _data(3)
  loss = attacks.segmentation_loss(_jax_pixel_logits(p))
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(masks)
  eps, alpha = 0.05, 0.2  # The step leaves the ball: projection matters.
  g = np.asarray(jax.grad(lambda z: loss(z, mj).sum())(xj), np.float64)
  g_norm = np.sqrt((g ** 2).reshape(3, -1).sum(1))[:, None, None, None]
  step = x + alpha * g / (g_norm + 1e-10)
  d = step - x
  d_norm = np.sqrt((d ** 2).reshape(3, -1).sum(1))[:, None, None, None]
  expected = np.clip(x + d * np.minimum(1, eps / d_norm), 0, 1)
  got = attacks.pgd(loss, xj, mj, eps, steps=1, alpha=alpha, norm="l2",
                    random_start=False)
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-6)


def test_untargeted_raises_and_targeted_lowers_the_loss():
  p = _params(4)
  x, masks, _ = _data(4)
  loss = attacks.segmentation_loss(_jax_pixel_logits(p))
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(masks)
  adv = attacks.pgd(loss, xj, mj, 8 / 255, jax.random.key(0))
  assert (loss(adv, mj) > loss(xj, mj)).all()
  goal = attacks.defects_to_background(mj)
  assert ((goal == 0) | (goal == IGNORE_INDEX)).all()
  assert (np.asarray(goal == IGNORE_INDEX) == (masks == IGNORE_INDEX)).all()
  adv_t = attacks.pgd(loss, xj, goal, 8 / 255, jax.random.key(0),
                      targeted=True)
  assert (loss(adv_t, goal) < loss(xj, goal)).all()


def test_ignored_pixels_do_not_contribute():
  p = _params(5)
  x, masks, _ = _data(5)
  loss = attacks.segmentation_loss(_jax_pixel_logits(p))
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(masks)
  adv = np.asarray(attacks.fgsm(loss, xj, mj, 8 / 255))
  ignored = masks == IGNORE_INDEX
  assert ignored.any()
  # The per-pixel model: an ignored pixel's input has no gradient at all.
  np.testing.assert_array_equal(adv[ignored], x.astype(np.float32)[ignored])
  # The loss is the mean over valid pixels only (float64 reference).
  logits = np.asarray(_jax_pixel_logits(p)(jnp.asarray(x)), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, np.where(ignored, 0, masks)[..., None],
                            -1)[..., 0]
  expected = [nll[i][~ignored[i]].mean() for i in range(len(x))]
  np.testing.assert_allclose(loss(xj, mj), expected, rtol=1e-5)
  # An image with every pixel ignored has loss 0 and is left alone.
  all_ignored = jnp.full_like(mj, IGNORE_INDEX)
  assert float(loss(xj, all_ignored).sum()) == 0.0
  np.testing.assert_array_equal(attacks.fgsm(loss, xj, all_ignored, 0.1), xj)


def test_per_example_keys_make_random_starts_batch_independent():
  p = _params(7)
  x, masks, _ = _data(7)
  loss = attacks.segmentation_loss(_jax_pixel_logits(p))
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(masks)
  keys = jax.random.split(jax.random.key(5), 3)
  full = attacks.pgd(loss, xj, mj, 8 / 255, keys, steps=2)
  part = attacks.pgd(loss, xj[1:], mj[1:], 8 / 255, keys[1:], steps=2)
  np.testing.assert_allclose(full[1:], part, atol=1e-6)
  with pytest.raises(ValueError, match="2 attack keys for 3 images"):
    attacks.pgd(loss, xj, mj, 8 / 255, keys[:2])


def test_multi_eps_equals_separate_calls():
  p = _params(6)
  x, masks, _ = _data(6)
  loss = attacks.segmentation_loss(_jax_pixel_logits(p))
  xj, mj = jnp.asarray(x, jnp.float32), jnp.asarray(masks)
  attack = ATTACKS.build("pgd", steps=3)
  eps = [0.0, 2 / 255, 8 / 255]
  key = jax.random.key(1)
  batched = jax.jit(lambda x_, t: attacks.multi_eps(attack, loss, x_, t,
                                                    jnp.asarray(eps), key))(
                                                        xj, mj)
  assert batched.shape == (3,) + xj.shape
  np.testing.assert_array_equal(batched[0], xj)
  for i, e in enumerate(eps):
    np.testing.assert_allclose(batched[i], attack(loss, xj, mj, e, key),
                               atol=1e-6)


def test_bim_steps_rule_and_registry_errors():
  assert attacks.bim_steps(8 / 255) == 10 and attacks.bim_steps(1 / 255) == 1
  assert sorted(ATTACKS.names()) == ["bim", "fgsm", "pgd"]
  with pytest.raises(TypeError, match="no argument"):
    ATTACKS.build("pgd", stepz=3)
  loss = attacks.segmentation_loss(_jax_pixel_logits(_params()))
  x = jnp.zeros((1, 2, 2, 3))
  t = jnp.zeros((1, 2, 2), jnp.int32)
  with pytest.raises(ValueError, match="norm 'l1'"):
    attacks.pgd(loss, x, t, 0.1, norm="l1", random_start=False)
  with pytest.raises(ValueError, match="PRNG key"):
    attacks.pgd(loss, x, t, 0.1)


# --- ensembles -------------------------------------------------------------------

def test_combine_rules():
  logits = jnp.asarray([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]],
                        [[0.0, 1.5, 0.0]]])  # 3 members, 1 example, 3 classes
  np.testing.assert_allclose(combine(logits, "logits"), logits.mean(0))
  probs = jax.nn.softmax(logits, -1).mean(0)
  np.testing.assert_allclose(jnp.exp(combine(logits, "probs")), probs,
                             rtol=1e-6)
  assert int(combine(logits, "vote").argmax(-1)[0]) == 1  # 2 of 3 votes
  # A tie between two classes goes to the higher mean probability.
  tie = jnp.asarray([[[3.0, 0.0]], [[0.0, 0.1]]])
  assert int(combine(tie, "vote").argmax(-1)[0]) == 0
  with pytest.raises(ValueError, match="method 'max'"):
    combine(logits, "max")


def _unet_member(seed):
  model = build_model("unet", num_classes=3, in_channels=1, seed=seed,
                      widths=(4, 8), norm_groups=2)
  graphdef, state = state_lib.create(model, optax.sgd(0.1), use_ema=False)
  return graphdef, state


@pytest.mark.parametrize("method", ["logits", "probs", "vote"])
@pytest.mark.parametrize("gradient", ["combined", "member_sum"])
def test_attacking_identical_members_equals_attacking_one(method, gradient):
  graphdef, state = _unet_member(0)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(2, 8, 8, 1)), jnp.float32)
  masks = jnp.asarray(rng.integers(0, 3, (2, 8, 8)))
  single = Ensemble([graphdef])
  triple = Ensemble([graphdef] * 3, method)
  one = attacks.pgd(single.attack_loss([state], attacks.segmentation_loss),
                    x, masks, 4 / 255, steps=3, random_start=False)
  three = attacks.pgd(
      triple.attack_loss([state] * 3, attacks.segmentation_loss,
                         gradient=gradient),
      x, masks, 4 / 255, steps=3, random_start=False)
  np.testing.assert_array_equal(one, three)
  np.testing.assert_array_equal(triple.logits([state] * 3, x).argmax(-1),
                                single.logits([state], x).argmax(-1))


def test_transfer_target_uses_one_member_and_errors_are_clear():
  members = [_unet_member(s) for s in (0, 1)]
  ens = Ensemble([g for g, _ in members], "probs")
  states = [s for _, s in members]
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(1, 8, 8, 1)),
                  jnp.float32)
  masks = jnp.zeros((1, 8, 8), jnp.int32)
  via_ens = ens.attack_loss(states, attacks.segmentation_loss, "member:1")
  alone = Ensemble([members[1][0]]).attack_loss([states[1]],
                                                attacks.segmentation_loss)
  np.testing.assert_allclose(via_ens(x, masks), alone(x, masks), rtol=1e-6)
  with pytest.raises(ValueError, match="2 members"):
    ens.attack_loss(states, attacks.segmentation_loss, "member:2")
  with pytest.raises(ValueError, match="gradient 'mean'"):
    ens.attack_loss(states, attacks.segmentation_loss, gradient="mean")
  with pytest.raises(ValueError, match="method 'median'"):
    Ensemble([members[0][0]], "median")
