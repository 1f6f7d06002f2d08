"""benchmarks/flops.py: the FLOP count recorded next to GPU timings."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.flops import program_flops


def _conv(w, x):
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_counts_a_convolution_exactly():
  # 2 FLOPs per multiply-add: batch * H' * W' * Cout * (kh * kw * Cin), with
  # VALID padding (XLA leaves padded taps out of the count).
  w = jnp.ones((3, 3, 4, 5))
  x = jnp.ones((2, 8, 8, 4))
  assert program_flops(_conv, w, x) == 2 * 2 * 6 * 6 * 5 * 3 * 3 * 4


def test_host_count_equals_the_compiled_count_on_cpu():
  """Without `compiled`, the program is compiled for the CPU from shapes
  alone (the path taken on GPUs); it must count what the CPU compile of the
  same program counts, here for a gradient through the convolution."""
  grad = jax.jit(jax.grad(lambda w, x: jnp.sum(_conv(w, x) ** 2)))
  w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 4, 5)),
                  jnp.float32)
  x = jnp.ones((2, 8, 8, 4))
  compiled = grad.lower(w, x).compile()
  from_shapes = program_flops(grad, w, x)
  assert from_shapes == program_flops(grad, w, x, compiled=compiled)
  assert from_shapes > 2 * program_flops(_conv, w, x)  # forward + 2 grads
