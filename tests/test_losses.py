"""Loss zoo against published vectors and an independent float64 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chameleon_jax.losses import build_loss, deep_supervision, from_frequencies
from chameleon_jax.losses.boundary import chessboard_distance
from tests import loss_reference as ref

TOL = dict(rtol=1e-6, atol=1e-9)


def case(seed, mode="multiclass", b=2, h=6, w=5, k=4, ignore=0.2, empty=False):
  rng = np.random.default_rng(seed)
  k = 1 if mode == "binary" else k
  pred = rng.normal(0, 2, (b, h, w, k))
  if mode == "multiclass":
    target = rng.integers(0, k, (b, h, w))
    if empty:
      target[:] = 0
    target[rng.random((b, h, w)) < ignore] = 255
  else:
    shape = (b, h, w) if mode == "binary" else (b, h, w, k)
    target = (rng.random(shape) < 0.3).astype(np.int64)
    if empty:
      target[:] = 0
    target[rng.random(shape) < ignore] = 255
  return pred, target


def run64(name, pred, target, **kwargs):
  with jax.enable_x64():
    return float(build_loss(name, **kwargs)(jnp.asarray(pred, jnp.float64),
                                            jnp.asarray(target)))


# --- Published test vectors (../shared/reference/losses.md) -----------------

MONAI_X = np.array([[1.0, -1.0], [-1.0, 1.0]]).reshape(1, 2, 2, 1)
MONAI_T = np.array([[1, 0], [1, 1]]).reshape(1, 2, 2)


@pytest.mark.parametrize("name,kwargs,expected", [
    ("dice", dict(smooth_nr=1e-6, smooth_dr=1e-6), 0.307576),
    ("dice", dict(smooth_nr=1e-6, smooth_dr=1e-6, variant="squared"), 0.178337),
    ("jaccard", dict(), 0.470451),
])
def test_monai_dice_vectors(name, kwargs, expected):
  got = build_loss(name, mode="binary", reduce_over="image", **kwargs)(
      jnp.asarray(MONAI_X, jnp.float32), jnp.asarray(MONAI_T))
  np.testing.assert_allclose(got, expected, atol=1e-5)


def _probs(values):
  return jnp.asarray(values, jnp.float32).reshape(1, 1, -1, 1)


def _labels(values):
  return jnp.asarray(values).reshape(1, 1, -1)


def test_tversky_vector():
  loss = build_loss("tversky", mode="binary", from_logits=False, smooth_nr=0,
                    smooth_dr=0, alpha=0.3, beta=0.7)
  np.testing.assert_allclose(loss(_probs([1, 1, 0, 0]), _labels([1, 0, 1, 1])),
                             0.629630, atol=1e-5)


@pytest.mark.parametrize("alpha,expected", [(None, 0.173287), (0.25, 0.043322)])
def test_focal_vectors(alpha, expected):
  loss = build_loss("focal", mode="binary", alpha=alpha)
  np.testing.assert_allclose(loss(_probs([0.0]), _labels([1])), expected,
                             atol=1e-5)


def test_smp_dice_vectors_and_our_empty_policy():
  kw = dict(mode="binary", from_logits=False, smooth_nr=0, smooth_dr=1e-7)
  fp_on_empty = (_probs([1, 1, 1]), _labels([0, 0, 0]))
  # SMP zeroes classes absent from the batch: "zero" reproduces it ...
  assert float(build_loss("dice", empty_target="zero", **kw)(*fp_on_empty)) == 0.0
  # ... our default penalises those false positives instead.
  np.testing.assert_allclose(build_loss("dice", **kw)(*fp_on_empty), 1.0,
                             atol=1e-6)
  np.testing.assert_allclose(
      build_loss("dice", **kw)(_probs([1, 0, 1]), _labels([0, 1, 0])), 1.0,
      atol=1e-6)
  score = 1 - build_loss("dice", **kw)(_probs([1, 1, 0, 0]), _labels([1, 1, 1, 1]))
  np.testing.assert_allclose(score, 2 / 3, atol=1e-6)
  jac = 1 - build_loss("jaccard", **kw)(_probs([1, 1, 0, 0]), _labels([1, 1, 1, 1]))
  np.testing.assert_allclose(jac, 0.5, atol=1e-6)


def test_valid_pixel_mean_vector():
  """SMP soft BCE, smoothing 0.1 (targets 0.1/0.9) = our e = 0.2 over 2
  outcomes; the mean over the 4 valid pixels is 0.9001, not 0.7201."""
  loss = build_loss("cross_entropy", mode="binary", label_smoothing=0.2)
  got = loss(_probs([-9.0, 9.0, 1.0, 9.0, -9.0]), _labels([0, 1, 255, 1, 0]))
  np.testing.assert_allclose(got, 0.9001, atol=1e-4)


def test_lovasz_hinge_on_empty_target_is_relu_one_plus_max_logit():
  x = _probs([-3.0, 0.5, -1.0])
  got = build_loss("lovasz", mode="binary")(x, _labels([0, 0, 0]))
  np.testing.assert_allclose(got, 1.5, atol=1e-6)


def test_class_rebalancing():
  np.testing.assert_allclose(from_frequencies([0.9, 0.1], rebalance=0.0), [1, 1])
  full = from_frequencies([0.9, 0.1], rebalance=1.0, max_ratio=None)
  np.testing.assert_allclose(full, np.array([1 / 0.9, 1 / 0.1]) * 2 / (1 / 0.9 + 10))
  clipped = from_frequencies([0.99, 0.01], rebalance=1.0, max_ratio=10)
  assert clipped[1] / clipped[0] == pytest.approx(10)
  with pytest.raises(ValueError, match="rebalance"):
    from_frequencies([0.5, 0.5], rebalance=2)


# --- Against the float64 NumPy reference -------------------------------------

REGION_KINDS = [("dice", {}, "dice"), ("dice", {"variant": "squared"}, "squared"),
                ("dice", {"variant": "log"}, "log"), ("jaccard", {}, "jaccard"),
                ("tversky", {}, "tversky"), ("focal_tversky", {}, "focal_tversky")]


@pytest.mark.parametrize("name,extra,kind", REGION_KINDS)
@pytest.mark.parametrize("mode", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("reduce_over", ["batch", "image"])
@pytest.mark.parametrize("empty_target", ["penalize", "zero", "exclude"])
def test_region_losses_match_reference(name, extra, kind, mode, reduce_over,
                                       empty_target):
  for seed in range(2):
    pred, target = case(seed, mode, empty=seed == 1 and mode != "multiclass")
    got = run64(name, pred, target, mode=mode, reduce_over=reduce_over,
                empty_target=empty_target, **extra)
    want = ref.region(pred, target, mode=mode, reduce_over=reduce_over,
                      empty_target=empty_target, kind=kind)
    np.testing.assert_allclose(got, want, **TOL)


def test_region_options_background_weights_smoothing():
  pred, target = case(3, "multiclass", k=3)
  for include in (False, True):
    got = run64("dice", pred, target, include_background=include,
                class_weights=[0.5, 1.0, 3.0], smooth_nr=0.1, smooth_dr=0.3)
    want = ref.region(pred, target, include_background=include,
                      class_weights=[0.5, 1.0, 3.0], nr=0.1, dr=0.3)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("weight_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("reduce_over", ["batch", "image"])
def test_generalized_dice_matches_reference(weight_type, reduce_over):
  pred, target = case(4, "multiclass", k=4)
  target[0][target[0] == 2] = 0  # Class 2 absent from image 0.
  got = run64("generalized_dice", pred, target, weight_type=weight_type,
              reduce_over=reduce_over)
  want = ref.generalized_dice(pred, target, weight_type=weight_type,
                              reduce_over=reduce_over)
  np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("k", [2, 5])
def test_cross_entropy_matches_reference(k):
  pred, target = case(5, "multiclass", k=k)
  weights = np.linspace(0.5, 2.0, k)
  np.testing.assert_allclose(run64("cross_entropy", pred, target),
                             ref.cross_entropy(pred, target), **TOL)
  np.testing.assert_allclose(
      run64("cross_entropy", pred, target, class_weights=list(weights),
            label_smoothing=0.1),
      ref.cross_entropy(pred, target, weights, 0.1), **TOL)


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_binary_cross_entropy_matches_reference(mode):
  pred, target = case(6, mode)
  np.testing.assert_allclose(
      run64("cross_entropy", pred, target, mode=mode, label_smoothing=0.1),
      ref.binary_cross_entropy(pred, target, mode, 0.1), **TOL)


@pytest.mark.parametrize("mode,alpha", [("binary", None), ("binary", 0.25),
                                        ("multilabel", 0.5),
                                        ("multiclass", None),
                                        ("multiclass", [0.2, 0.3, 0.5, 1.0])])
def test_focal_matches_reference(mode, alpha):
  pred, target = case(7, mode)
  np.testing.assert_allclose(
      run64("focal", pred, target, mode=mode, alpha=alpha, gamma=1.5),
      ref.focal(pred, target, mode, gamma=1.5, alpha=alpha), **TOL)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_hinge_matches_reference(per_image):
  pred, target = case(8, "binary", h=7, w=6)
  got = run64("lovasz", pred, target, mode="binary",
              reduce_over="image" if per_image else "batch")
  np.testing.assert_allclose(got, ref.lovasz(pred, target, "binary", per_image),
                             **TOL)


@pytest.mark.parametrize("reduce_over", ["batch", "image"])
@pytest.mark.parametrize("empty_target,present_only", [("penalize", False),
                                                       ("exclude", True)])
def test_lovasz_softmax_matches_reference(empty_target, present_only,
                                          reduce_over):
  pred, target = case(9, "multiclass", b=3, k=4)
  target[target == 3] = 0  # Class 3 absent: "present" mode skips it.
  target[1][target[1] == 2] = 1  # Images with 2, 1 and 2 present classes:
  target[2][target[2] == 1] = 0  # per image, present classes are averaged
  target[2][target[2] == 2] = 0  # within each image first (an image with
  target[2][0, 0] = 2            # none would count 0).
  got = run64("lovasz", pred, target, empty_target=empty_target,
              reduce_over=reduce_over)
  want = ref.lovasz(pred, target, "multiclass", per_image=reduce_over ==
                    "image", present_only=present_only)
  np.testing.assert_allclose(got, want, **TOL)


def test_chessboard_distance_is_exact():
  rng = np.random.default_rng(0)
  mask = rng.random((2, 12, 9, 1)) < 0.05
  mask[1] = False
  mask[1, 5, 4] = True
  from scipy import ndimage
  got = np.asarray(chessboard_distance(jnp.asarray(mask), 30))
  for b in range(2):
    want = ndimage.distance_transform_cdt(~mask[b, ..., 0], metric="chessboard")
    np.testing.assert_array_equal(got[b, ..., 0], want)


@pytest.mark.parametrize("empty", [False, True])
def test_boundary_matches_reference(empty):
  pred, target = case(10, "multiclass", h=12, w=10, k=3, empty=empty)
  got = run64("boundary", pred, target, max_distance=5)
  np.testing.assert_allclose(got, ref.boundary(pred, target, max_distance=5),
                             **TOL)


def test_compound_and_deep_supervision():
  pred, target = case(11, "multiclass")
  terms = [{"name": "dice", "weight": 0.7},
           {"name": "focal", "weight": 0.3, "kwargs": {"gamma": 1.0}}]
  x, t = jnp.asarray(pred, jnp.float32), jnp.asarray(target)
  combined = build_loss("compound", terms=terms)(x, t)
  expected = (0.7 * build_loss("dice")(x, t)
              + 0.3 * build_loss("focal", gamma=1.0)(x, t))
  np.testing.assert_allclose(combined, expected, rtol=1e-6)
  dice_ce = build_loss("dice_ce", dice_weight=2.0, ce_weight=0.5)(x, t)
  np.testing.assert_allclose(
      dice_ce, 2 * build_loss("dice")(x, t) + 0.5 * build_loss("cross_entropy")(x, t),
      rtol=1e-6)
  ds = deep_supervision(build_loss("dice"))
  np.testing.assert_allclose(ds([x], t), build_loss("dice")(x, t), rtol=1e-6)
  half = x[:, ::2, ::2]
  np.testing.assert_allclose(
      ds([x, half], t),
      (build_loss("dice")(x, t) + 0.5 * build_loss("dice")(half, t[:, ::2, ::2]))
      / 1.5, rtol=1e-6)


def test_classification_shapes_match_reference():
  """(B, K) logits: CE with smoothing and weights, focal, multilabel BCE."""
  rng = np.random.default_rng(12)
  logits = rng.normal(0, 2, (16, 5))
  labels = rng.integers(0, 5, (16,))
  labels[3] = 255
  weights = list(np.linspace(0.5, 2.0, 5))
  np.testing.assert_allclose(
      run64("cross_entropy", logits, labels, class_weights=weights,
            label_smoothing=0.1),
      ref.cross_entropy(logits, labels, np.array(weights), 0.1), **TOL)
  np.testing.assert_allclose(run64("focal", logits, labels),
                             ref.focal(logits, labels, "multiclass"), **TOL)
  multi = (rng.random((16, 5)) < 0.3).astype(np.int64)
  np.testing.assert_allclose(
      run64("cross_entropy", logits, multi, mode="multilabel"),
      ref.binary_cross_entropy(logits, multi, "multilabel"), **TOL)
  np.testing.assert_allclose(
      run64("focal", logits, multi, mode="multilabel", alpha=0.25),
      ref.focal(logits, multi, "multilabel", alpha=0.25), **TOL)
