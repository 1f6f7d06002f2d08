"""EfficientNet-B0 (Tan & Le 2019), the edge-sized encoder, torchvision layout.

MBConv blocks (1x1 expansion -> depthwise kxk -> squeeze-and-excitation ->
1x1 projection, SiLU, residual with stochastic depth when shape allows),
a 3x3/2 stem, and with head=True the 1x1 conv to 1280 channels before
pooling. Parameter count with a 1000-class head: 5,288,548 (torchvision).
Features at strides 2..32 are the outputs of stages 1, 2, 3, 5 and 7
(16, 24, 40, 112, 320 channels), as segmentation encoders use them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models.layers import Norm, conv, drop_path
from chameleon_jax.registry import ENCODERS

# (expansion, kernel, stride, in, out, repeats) per stage (B0).
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
          (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
          (6, 3, 1, 192, 320, 1))
FEATURE_STAGES = (0, 1, 2, 4, 6)  # Last stage at each stride 2, 4, 8, 16, 32.


class ConvNormAct(nnx.Module):
  """Conv, normalisation, SiLU (optional): EfficientNet's basic layer."""

  def __init__(self, cin, cout, kernel, stride, norm, groups_norm, dtype, *,
               groups=1, act=True, rngs):
    self.conv = conv(cin, cout, kernel, stride, groups=groups, dtype=dtype,
                     rngs=rngs)
    self.norm = Norm(cout, norm, groups_norm, dtype, rngs=rngs)
    self.act = act

  def __call__(self, x, train):
    x = self.norm(self.conv(x), train)
    return nnx.silu(x) if self.act else x


class MBConv(nnx.Module):
  """Inverted residual block: expansion, depthwise conv, squeeze-excitation,
  projection; stochastic depth on the residual.
  """

  def __init__(self, expansion, kernel, stride, cin, cout, norm, norm_groups,
               dtype, drop, *, rngs):
    hidden = cin * expansion
    self.expand = (ConvNormAct(cin, hidden, 1, 1, norm, norm_groups, dtype,
                               rngs=rngs) if expansion != 1 else None)
    self.depthwise = ConvNormAct(hidden, hidden, kernel, stride, norm,
                                 norm_groups, dtype, groups=hidden, rngs=rngs)
    squeeze = max(1, cin // 4)
    self.se_reduce = nnx.Linear(hidden, squeeze, dtype=dtype, rngs=rngs)
    self.se_expand = nnx.Linear(squeeze, hidden, dtype=dtype, rngs=rngs)
    self.project = ConvNormAct(hidden, cout, 1, 1, norm, norm_groups, dtype,
                               act=False, rngs=rngs)
    self.residual = stride == 1 and cin == cout
    self.drop = drop_path(drop, rngs) if (drop > 0 and self.residual) else None

  def __call__(self, x, train):
    y = x if self.expand is None else self.expand(x, train)
    y = self.depthwise(y, train)
    s = jnp.mean(y, axis=(1, 2), keepdims=True)
    y = y * jax.nn.sigmoid(self.se_expand(nnx.silu(self.se_reduce(s))))
    y = self.project(y, train)
    if not self.residual:
      return y
    if self.drop is not None:
      y = self.drop(y, deterministic=not train)
    return x + y


class EfficientNet(nnx.Module):
  """EfficientNet-B0 encoder (Tan & Le 2019), torchvision's layout; maps at
  strides 2-32 (the encoder contract, __init__.py).
  """

  def __init__(self, in_channels, norm, norm_groups, dtype, drop_path_rate,
               head, *, rngs):
    self.stem = ConvNormAct(in_channels, 32, 3, 2, norm, norm_groups, dtype,
                            rngs=rngs)
    total = sum(s[-1] for s in STAGES)
    index = 0
    self.stages = nnx.List()
    for expansion, kernel, stride, cin, cout, repeats in STAGES:
      blocks = nnx.List()
      for i in range(repeats):
        blocks.append(MBConv(expansion, kernel, stride if i == 0 else 1,
                             cin if i == 0 else cout, cout, norm, norm_groups,
                             dtype, drop_path_rate * index / total, rngs=rngs))
        index += 1
      self.stages.append(blocks)
    self.head_conv = (ConvNormAct(320, 1280, 1, 1, norm, norm_groups, dtype,
                                  rngs=rngs) if head else None)
    self.feature_channels = tuple(STAGES[i][4] for i in FEATURE_STAGES)
    self.feature_strides = (2, 4, 8, 16, 32)
    self.pooled_features = 1280

  def __call__(self, x, train=False):
    x = self.stem(x, train)
    features = []
    for i, blocks in enumerate(self.stages):
      for block in blocks:
        x = block(x, train)
      if i in FEATURE_STAGES:
        features.append(x)
    return features

  def embed(self, x, train=False):
    x = self.head_conv(self(x, train)[-1], train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


@ENCODERS.register("efficientnet_b0")
def efficientnet_b0(in_channels: int, *, rngs: nnx.Rngs, norm: str = "group",
                    norm_groups: int = 8, dtype=jnp.float32,
                    drop_path_rate: float = 0.2, head: bool = False
                    ) -> EfficientNet:
  """EfficientNet-B0; stochastic depth 0.2 (the paper's); GroupNorm with 8
  groups by default since its narrowest layers have 16 channels."""
  return EfficientNet(in_channels, norm, norm_groups, dtype, drop_path_rate,
                      head, rngs=rngs)
