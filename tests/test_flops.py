"""listing.program_flops: FLOPs of a program, the same on every backend."""

import jax
import jax.numpy as jnp
import numpy as np

from chameleon_jax.models.listing import program_flops


def _conv(w, x):
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _depthwise(w, x):
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


def test_counts_a_convolution_exactly():
  # 2 FLOPs per multiply-add: batch * H' * W' * Cout * (kh * kw * Cin), with
  # VALID padding (XLA leaves padded taps out of the count).
  w = jnp.ones((3, 3, 4, 5))
  x = jnp.ones((2, 8, 8, 4))
  assert program_flops(_conv, w, x) == 2 * 2 * 6 * 6 * 5 * 3 * 3 * 4


def test_gradient_costs_twice_the_forward_for_depthwise_convolutions():
  """Each convolution's two gradients (input, kernel) cost one forward each
  (the forward itself is dead code: only the gradients are returned). The
  count is the program's: XLA:CPU's compiled count of the same depthwise
  gradient is several times higher (its rewrite), which is why the count is
  taken before any backend compiles it."""
  rng = np.random.default_rng(0)
  for conv, w in ((_conv, rng.normal(size=(3, 3, 4, 5))),
                  (_depthwise, rng.normal(size=(3, 3, 1, 8)))):
    w = jnp.asarray(w, jnp.float32)
    x = jnp.ones((2, 16, 16, w.shape[2] * (8 if conv is _depthwise else 1)))
    forward = program_flops(conv, w, x)
    grads = program_flops(jax.grad(lambda w, x, c=conv: jnp.sum(c(w, x)),
                                   argnums=(0, 1)), w, x)
    # Two gradient convolutions, plus elementwise work.
    assert 2 * forward <= grads < 2.1 * forward, (conv.__name__, forward,
                                                  grads)


def test_a_jitted_program_with_donation_counts_like_its_function():
  f = jax.jit(lambda w, x: _conv(w, x) * 2, donate_argnums=1)
  w, x = jnp.ones((3, 3, 4, 5)), jnp.ones((2, 8, 8, 4))
  conv = program_flops(_conv, w, x)
  assert program_flops(f, w, x) == conv + 2 * 6 * 6 * 5  # + the product.
