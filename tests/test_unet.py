"""UNet: shapes, numbers and invariants, not only shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from chameleon_jax.models import build_model
from chameleon_jax.registry import MODELS


def _params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _expected_unet_params(cin, widths, k, norm):
  """Independent count: conv3x3 blocks, transposed convs, 1x1 head."""
  def block(a, b):
    convs = 9 * a * b + 9 * b * b + (2 * b if norm == "none" else 0)
    return convs + (4 * b if norm != "none" else 0)  # scale + bias, twice.
  total, c = 0, cin
  for w in widths:
    total += block(c, w)
    c = w
  for low, w in zip(widths[:0:-1], widths[-2::-1]):
    total += 4 * low * w + w + block(2 * w, w)
  return total + widths[0] * k + k


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_parameter_count_matches_independent_formula(norm):
  model = build_model("unet", num_classes=4, in_channels=3, widths=(8, 16, 32),
                      norm=norm)
  assert _params(model) == _expected_unet_params(3, (8, 16, 32), 4, norm)


def test_registered_and_shapes_at_two_sizes():
  assert "unet" in MODELS
  model = build_model("unet", num_classes=3, in_channels=1, widths=(8, 16, 32))
  for h, w in ((32, 32), (48, 64)):
    y = model(jnp.zeros((2, h, w, 1)))
    assert y.shape == (2, h, w, 3) and y.dtype == jnp.float32
  with pytest.raises(ValueError, match="multiple of 4"):
    model(jnp.zeros((1, 30, 32, 1)))


def test_groupnorm_model_treats_images_independently():
  model = build_model("unet", num_classes=2, in_channels=1, widths=(8, 16))
  x = jax.random.uniform(jax.random.key(0), (3, 16, 16, 1))
  together = model(x)
  alone = model(x[1:2])
  np.testing.assert_allclose(together[1:2], alone, atol=1e-5)


def test_translation_equivariance_in_the_interior():
  """A conv net commutes with shifts by its stride (away from borders)."""
  model = build_model("unet", num_classes=2, in_channels=1, widths=(8, 16),
                      norm="none")
  x = jax.random.uniform(jax.random.key(1), (1, 48, 48, 1))
  y = model(x)
  y_shift = model(jnp.roll(x, 2, axis=1))
  np.testing.assert_allclose(jnp.roll(y, 2, axis=1)[:, 12:36, 12:36],
                             y_shift[:, 12:36, 12:36], atol=1e-5)


def test_normalisation_inside_the_model():
  model = build_model("unet", num_classes=2, in_channels=2, widths=(8, 16),
                      input_mean=(0.2, 0.4), input_std=(0.5, 0.25))
  assert np.allclose(model.mean.get_value(), [0.2, 0.4])
  with pytest.raises(ValueError, match="input_mean has 3 values for 2"):
    build_model("unet", num_classes=2, in_channels=2, widths=(8, 16),
                input_mean=(0.1, 0.2, 0.3))


def test_gradients_are_finite_and_nonzero_under_jit():
  model = build_model("unet", num_classes=3, in_channels=1, widths=(8, 16))
  x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 1))

  @nnx.jit
  def grads(m):
    return nnx.grad(lambda m: (m(x, train=True) ** 2).mean())(m)

  g = jax.tree.leaves(nnx.state(grads(model), nnx.Param))
  assert all(bool(jnp.isfinite(v).all()) for v in g)
  assert sum(float(jnp.abs(v).sum()) for v in g) > 0


def test_bfloat16_compute_keeps_float32_params_and_close_outputs():
  f32 = build_model("unet", num_classes=2, in_channels=1, widths=(8, 16))
  bf16 = build_model("unet", num_classes=2, in_channels=1, widths=(8, 16),
                     dtype="bfloat16")
  assert all(v.dtype == jnp.float32
             for v in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  x = jax.random.uniform(jax.random.key(3), (1, 16, 16, 1))
  a, b = f32(x), bf16(x)
  assert b.dtype == jnp.float32
  assert float(jnp.abs(a - b).max()) < 0.1 * float(jnp.abs(a).max()) + 0.05


def test_batchnorm_updates_statistics_only_in_training():
  model = build_model("unet", num_classes=2, in_channels=1, widths=(8, 16),
                      norm="batch")
  before = model.down[0].norm1.layer.mean.get_value().copy()
  x = 3.0 + jax.random.uniform(jax.random.key(4), (4, 16, 16, 1))
  model(x, train=False)
  np.testing.assert_array_equal(model.down[0].norm1.layer.mean.get_value(), before)
  model(x, train=True)
  assert not np.allclose(model.down[0].norm1.layer.mean.get_value(), before)


@pytest.mark.parametrize("dtype,tol", [(None, 1e-5), (jnp.bfloat16, 2e-2)])
def test_upconv2x2_is_flax_transposed_convolution(dtype, tol):
  """The same parameters and outputs and gradients as
  nnx.ConvTranspose((2, 2), strides=(2, 2)), odd sizes included."""
  from chameleon_jax.models.layers import UpConv2x2
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 7, 6)),
                  jnp.float32)
  ref = nnx.ConvTranspose(6, 3, (2, 2), strides=(2, 2), dtype=dtype,
                          rngs=nnx.Rngs(0))
  ours = UpConv2x2(6, 3, dtype=dtype, rngs=nnx.Rngs(0))
  ref.bias.set_value(jnp.arange(3.0))  # a bias that shows
  ours.bias.set_value(jnp.arange(3.0))
  assert jax.tree.map(jnp.shape, nnx.state(ref)) == \
      jax.tree.map(jnp.shape, nnx.state(ours))
  np.testing.assert_array_equal(ref.kernel.get_value(), ours.kernel.get_value())
  assert ours(x).dtype == ref(x).dtype
  np.testing.assert_allclose(np.asarray(ours(x), np.float32),
                             np.asarray(ref(x), np.float32), atol=tol, rtol=tol)
  weights = jnp.asarray(np.random.default_rng(1).standard_normal((2, 10, 14, 3)))

  def grads(layer):
    graphdef, params = nnx.split(layer)
    return jax.grad(lambda p, v: (nnx.merge(graphdef, p)(v).astype(jnp.float32)
                                  * weights).sum(), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(ref))):
    np.testing.assert_allclose(np.asarray(a, np.float32),
                               np.asarray(b, np.float32), atol=tol * 10,
                               rtol=tol)


def test_max_pool2x2_is_flax_max_pool():
  from chameleon_jax.models.layers import max_pool2x2
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 6, 3)),
                  jnp.float32)
  ref = lambda v: nnx.max_pool(v, (2, 2), strides=(2, 2))  # noqa: E731
  np.testing.assert_array_equal(max_pool2x2(x), ref(x))
  # Without ties the gradients are the same: 1 at each window's maximum.
  np.testing.assert_array_equal(jax.grad(lambda v: max_pool2x2(v).sum())(x),
                                jax.grad(lambda v: ref(v).sum())(x))
  with pytest.raises(ValueError, match="even H and W.*7x6"):
    max_pool2x2(x[:, :7])
