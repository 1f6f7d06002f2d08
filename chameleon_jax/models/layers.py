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


def max_pool2x2(x: jnp.ndarray) -> jnp.ndarray:
  """`nnx.max_pool(x, (2, 2), strides=(2, 2))` for even H and W, as the
  elementwise maximum of the window's four strided views.

  The same forward values. XLA:CPU runs the window reduction's backward
  (select-and-scatter) several times slower than PyTorch's pooling
  (benchmarks/step_components.py); this one's is compares and selects.
  Where a window holds equal maxima the gradient is shared among them
  instead of going to the first (after a ReLU such ties are zeros, whose
  gradient the ReLU stops anyway). Not a reshape and `max`: that one's
  gradient (shared by the count of ties) came out NaN under XLA:CPU's
  optimisation level 0, the test suite's (tests/test_steps.py).

  Raises:
    ValueError: H or W is odd.
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"max_pool2x2 needs even H and W, got {h}x{w}.")
  top = jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2])
  bottom = jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2])
  return jnp.maximum(top, bottom)


class UpConv2x2(nnx.ConvTranspose):
  """`nnx.ConvTranspose(cin, cout, (2, 2), strides=(2, 2))` as one matmul.

  With stride equal to the kernel the output windows do not overlap: output
  pixel (2i + a, 2j + b) is x[i, j] @ kernel[1 - a, 1 - b] + bias (Flax's
  "SAME" transposed convolution takes the kernel turned by 180 degrees;
  tested against it). The same parameters (names, shapes, initialisation) as
  the transposed convolution, so checkpoints and weight imports are
  unchanged; XLA:CPU ran the convolution form's forward + backward many
  times slower than PyTorch's (benchmarks/step_components.py).
  """

  def __init__(self, in_features: int, out_features: int, *, dtype=None,
               rngs: nnx.Rngs):
    super().__init__(in_features, out_features, (2, 2), strides=(2, 2),
                     dtype=dtype, rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.kernel.get_value()
    bias = self.bias.get_value() if self.bias is not None else None
    dtype = self.dtype or jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    n, h, w, _ = x.shape
    y = jnp.einsum("nhwc,abcd->nhawbd", x, kernel[::-1, ::-1],
                   precision=self.precision)
    y = y.reshape(n, 2 * h, 2 * w, kernel.shape[-1])
    return y if bias is None else y + bias.astype(dtype)
