"""Building blocks shared by the zoo's architectures."""

from __future__ import annotations

import math
from typing import Sequence

import jax
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


def conv(cin: int, cout: int, kernel: int, stride: int = 1, *, groups: int = 1,
         bias: bool = False, dilation: int = 1, dtype, rngs: nnx.Rngs
         ) -> nnx.Conv:
  """A conv with PyTorch's symmetric padding (k // 2 * dilation per side).

  Flax's "SAME" pads strided convs asymmetrically; symmetric padding keeps
  imported torchvision/timm weights numerically identical and the feature
  grid aligned with the input (pixel centres at stride * i).
  """
  pad = (kernel // 2) * dilation
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                  kernel_dilation=(dilation, dilation), use_bias=bias,
                  dtype=dtype, rngs=rngs)


def drop_path(rate: float, rngs: nnx.Rngs, rank: int = 4) -> nnx.Dropout:
  """Stochastic depth: drops a residual branch for whole samples.

  nnx.Dropout with every non-batch axis broadcast, which rescales kept
  samples by 1 / (1 - rate) as timm's DropPath does. Active only when called
  with deterministic=False (train).
  """
  return nnx.Dropout(rate, broadcast_dims=tuple(range(1, rank)), rngs=rngs)


def normalise_input(x: jnp.ndarray, mean, std, dtype) -> jnp.ndarray:
  """(x - mean) / std per channel, cast to the compute dtype."""
  return ((x - mean) / std).astype(dtype)


def per_channel(values: Sequence[float], channels: int, name: str) -> jax.Array:
  """A per-channel constant from 1 value (broadcast) or one per channel."""
  values = tuple(float(v) for v in values)
  if len(values) == 1:
    values = values * channels
  if len(values) != channels:
    raise ValueError(f"{name} has {len(values)} values for {channels} input "
                     "channels; give 1 or one per channel.")
  return jnp.asarray(values, jnp.float32)


class ConvNormAct(nnx.Module):
  """kxk conv (symmetric padding, optional dilation / depthwise-separable)
  -> norm -> ReLU. The decoders' basic layer."""

  def __init__(self, cin: int, cout: int, kernel: int, norm: str,
               groups: int, dtype, *, dilation: int = 1,
               separable: bool = False, rngs: nnx.Rngs):
    self.depthwise = (conv(cin, cin, kernel, groups=cin, dilation=dilation,
                           dtype=dtype, rngs=rngs) if separable else None)
    self.conv = conv(cin, cout, 1 if separable else kernel,
                     dilation=1 if separable else dilation,
                     bias=norm == "none", dtype=dtype, rngs=rngs)
    self.norm = Norm(cout, norm, groups, dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.depthwise is not None:
      x = self.depthwise(x)
    return nnx.relu(self.norm(self.conv(x), train))


def upsample(x: jnp.ndarray, size: tuple[int, int],
             method: str = "bilinear") -> jnp.ndarray:
  """Resizes (B, h, w, C) to (B, *size, C); "nearest" by an integer factor is
  an exact repeat, "bilinear" uses half-pixel centres (torch's
  align_corners=False)."""
  h, w = x.shape[1:3]
  if (h, w) == tuple(size):
    return x
  if method == "nearest" and size[0] % h == 0 and size[1] % w == 0:
    return jnp.repeat(jnp.repeat(x, size[0] // h, axis=1), size[1] // w, axis=2)
  return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method)
