"""Building blocks shared by the zoo's architectures."""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

NORMS = ("group", "batch", "none")


class Norm(nnx.Module):
  """GroupNorm (default: batch-size independent) or BatchNorm.

  BatchNorm statistics are taken over the global batch: under `jit` with a
  batch-sharded input, XLA reduces across devices, so it is synchronised.
  """

  def __init__(self, features: int, kind: str, groups: int, dtype, *,
               rngs: nnx.Rngs):
    if kind not in NORMS:
      raise ValueError(f"norm={kind!r}; expected one of {NORMS}.")
    self.kind = kind
    if kind == "group":
      self.layer = nnx.GroupNorm(features, num_groups=math.gcd(features, groups),
                                 dtype=dtype, rngs=rngs)
    elif kind == "batch":
      self.layer = nnx.BatchNorm(features, momentum=0.9, dtype=dtype, rngs=rngs)
    else:
      self.layer = None

  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.kind == "batch":
      return self.layer(x, use_running_average=not train)
    return x if self.layer is None else self.layer(x)


class ConvBlock(nnx.Module):
  """Two (3x3 conv -> norm -> ReLU) layers."""

  def __init__(self, cin: int, cout: int, norm: str, groups: int, dtype, *,
               rngs: nnx.Rngs):
    bias = norm == "none"
    self.conv1 = nnx.Conv(cin, cout, (3, 3), use_bias=bias, dtype=dtype,
                          rngs=rngs)
    self.norm1 = Norm(cout, norm, groups, dtype, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=bias, dtype=dtype,
                          rngs=rngs)
    self.norm2 = Norm(cout, norm, groups, dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nnx.relu(self.norm1(self.conv1(x), train))
    return nnx.relu(self.norm2(self.conv2(x), train))
