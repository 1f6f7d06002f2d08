"""Sliding-window inference: exact reassembly, interior equality, no seams."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chameleon_jax.evaluation.sliding_window import (importance_map,
                                                     sliding_window,
                                                     window_origins)

WINDOW = (32, 32)


def _local_model(radius_layers: int, seed: int = 0):
  """A fully convolutional net: 3x3 convs (zero padding) + softmax."""
  keys = jax.random.split(jax.random.key(seed), radius_layers + 1)
  kernels = [jax.random.normal(k, (3, 3, 2 if i else 1, 2)) * 0.5
             for i, k in enumerate(keys[:radius_layers])]

  def predict(x):
    for kernel in kernels:
      x = jnp.tanh(jax.lax.conv_general_dilated(
          x, kernel, (1, 1), "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return jax.nn.softmax(x * 3, axis=-1)

  return predict


def _image(shape=(128, 128), seed=1):
  return jax.random.uniform(jax.random.key(seed), shape + (1,))


def test_origins_cover_and_end_flush():
  assert window_origins(128, 32, 0.5) == [0, 16, 32, 48, 64, 80, 96]
  assert window_origins(100, 32, 0.5) == [0, 16, 32, 48, 64, 68]
  assert window_origins(20, 32, 0.5) == [0]
  with pytest.raises(ValueError, match="overlap"):
    window_origins(100, 32, 1.0)


def test_pointwise_model_is_reassembled_exactly():
  def predict(x):
    return jax.nn.softmax(jnp.concatenate([x, 1 - x], -1) * 4, -1)

  image = _image((100, 70))  # Not a multiple of the window or the stride.
  out = sliding_window(predict, image, WINDOW, overlap=0.5, batch_size=3)
  np.testing.assert_allclose(out, predict(image[None])[0], atol=1e-6)


def _clean(size: int, window: int, radius: int) -> np.ndarray:
  """Coordinates that every covering window sees with full context."""
  origins = window_origins(size, window, 0.5)
  clean = np.ones(size, bool)
  for c in range(size):
    for o in origins:
      if o <= c < o + window:
        if (c - o < radius and o > 0) or (
            o + window - 1 - c < radius and o + window < size):
          clean[c] = False
  return clean


def test_interior_equals_direct_prediction_at_4x_size():
  radius = 3
  predict = _local_model(radius)  # Receptive field: 3 px either side.
  image = _image((4 * WINDOW[0], 4 * WINDOW[1]))
  direct = np.asarray(predict(image[None])[0])
  out = np.asarray(sliding_window(predict, image, WINDOW, overlap=0.5))
  assert out.shape == direct.shape
  # Where every window covering a pixel sees its whole receptive field, the
  # blend of identical values is the direct prediction.
  rows = _clean(image.shape[0], WINDOW[0], radius)
  cols = _clean(image.shape[1], WINDOW[1], radius)
  assert rows.mean() > 0.5
  np.testing.assert_allclose(out[np.ix_(rows, cols)],
                             direct[np.ix_(rows, cols)], atol=1e-5)
  # Elsewhere the windows that cut the receptive field contribute only the
  # Gaussian's tail (< 0.5 % of the weight 2 px from their edge).
  np.testing.assert_allclose(out, direct, atol=5e-3)
  # Overlapping windows agree away from their edges: columns 19..23 seen by
  # the windows starting at columns 0 and 16.
  a = predict(image[None, 0:32, 0:32])[0, 8:24, 19:24]
  b = predict(image[None, 0:32, 16:48])[0, 8:24, 3:8]
  np.testing.assert_allclose(a, b, atol=1e-6)


def _seam_ratio(out: np.ndarray, edges: list[int]) -> float:
  """Mean |jump| across window boundaries / mean |jump| elsewhere (columns)."""
  jumps = np.abs(np.diff(out[..., 1], axis=1)).mean(axis=0)
  at = [e - 1 for e in edges if 0 < e < out.shape[1]]
  rest = np.delete(jumps, at)
  return float(jumps[at].mean() / rest.mean())


def test_no_seams_where_windows_meet():
  # Global context per window (like normalisation over the window): each
  # window shifts its output by its own mean, which tiles visibly when
  # windows are butted together without blending.
  def predict(x):
    shifted = x - x.mean(axis=(1, 2, 3), keepdims=True) * 4
    return jax.nn.softmax(jnp.concatenate([shifted, -shifted], -1), -1)

  image = 0.1 * _image((128, 128)) + jnp.linspace(0, 1, 128)[None, :, None]
  tiled = np.asarray(sliding_window(predict, image, WINDOW, overlap=0.0,
                                    blend="constant"))
  blended = np.asarray(sliding_window(predict, image, WINDOW, overlap=0.5))
  tile_edges = [32, 64, 96]
  window_edges = [16, 32, 48, 64, 80, 96, 112]
  assert _seam_ratio(tiled, tile_edges) > 3  # The check sees seams...
  assert _seam_ratio(blended, window_edges) < 1.3  # ...and finds none here.


def test_small_image_is_padded_and_cropped():
  predict = _local_model(1)
  out = sliding_window(predict, _image((20, 40)), WINDOW)
  assert out.shape == (20, 40, 2)
  np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, atol=1e-5)


def test_importance_map():
  weights = importance_map((32, 32), "gaussian")
  assert weights.max() == 1.0 and weights.min() > 0
  assert weights[15, 15] > weights[0, 15] > weights[0, 0]
  np.testing.assert_array_equal(importance_map((4, 4), "constant"), 1)
  with pytest.raises(ValueError, match="blend"):
    importance_map((4, 4), "median")
