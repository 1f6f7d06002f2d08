"""ResNet-18/34/50/101 (He et al. 2016), torchvision layout ("v1.5").

The stride-2 of a bottleneck stage sits on its 3x3 conv, as in torchvision,
and parameter names follow torchvision's (conv1, bn1, layer1..4, downsample)
so that state dicts map one to one (models/weights.py). With norm="batch"
and a 1000-class head the parameter counts are torchvision's exactly
(tests/test_zoo.py); GroupNorm has the same parameters (a scale and a bias
per channel) and is the real-world default (small per-device batches).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models.layers import Norm, conv, drop_path
from chameleon_jax.registry import ENCODERS

# name -> (block, blocks per stage)
DEPTHS = {"resnet18": ("basic", (2, 2, 2, 2)),
          "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3)),
          "resnet101": ("bottleneck", (3, 4, 23, 3))}
WIDTHS = (64, 128, 256, 512)


class Downsample(nnx.Module):
  """1x1 strided conv + norm: the projection shortcut of a ResNet block."""

  def __init__(self, cin, cout, stride, norm, groups, dtype, *, rngs):
    self.conv = conv(cin, cout, 1, stride, dtype=dtype, rngs=rngs)
    self.norm = Norm(cout, norm, groups, dtype, rngs=rngs)

  def __call__(self, x, train):
    return self.norm(self.conv(x), train)


class Block(nnx.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion) block."""

  def __init__(self, kind, cin, width, stride, norm, groups, dtype, drop, *,
               rngs):
    expansion = 4 if kind == "bottleneck" else 1
    cout = width * expansion
    if kind == "basic":
      specs = [(cin, width, 3, stride), (width, width, 3, 1)]
    else:
      specs = [(cin, width, 1, 1), (width, width, 3, stride),
               (width, cout, 1, 1)]
    self.convs = nnx.List([conv(a, b, k, s, dtype=dtype, rngs=rngs)
                           for a, b, k, s in specs])
    self.norms = nnx.List([Norm(b, norm, groups, dtype, rngs=rngs)
                           for _, b, _, _ in specs])
    self.downsample = (Downsample(cin, cout, stride, norm, groups, dtype,
                                  rngs=rngs)
                       if stride != 1 or cin != cout else None)
    self.drop = drop_path(drop, rngs) if drop > 0 else None
    self.out_channels = cout

  def __call__(self, x, train):
    shortcut = x if self.downsample is None else self.downsample(x, train)
    for i, (c, n) in enumerate(zip(self.convs, self.norms)):
      x = n(c(x), train)
      if i < len(self.convs) - 1:
        x = nnx.relu(x)
    if self.drop is not None:
      x = self.drop(x, deterministic=not train)
    return nnx.relu(x + shortcut)


class ResNet(nnx.Module):
  """ResNet encoder (He et al. 2016), basic or bottleneck blocks in
  torchvision's layout; maps at strides 4-32 (the encoder contract).
  """

  def __init__(self, kind, depths, in_channels, norm, norm_groups, dtype,
               drop_path_rate, *, rngs):
    self.conv1 = conv(in_channels, 64, 7, 2, dtype=dtype, rngs=rngs)
    self.bn1 = Norm(64, norm, norm_groups, dtype, rngs=rngs)
    self.stages = nnx.List()
    total, index, cin = sum(depths), 0, 64
    channels = [64]
    for stage, (n, width) in enumerate(zip(depths, WIDTHS)):
      blocks = nnx.List()
      for i in range(n):
        stride = 2 if (i == 0 and stage > 0) else 1
        rate = drop_path_rate * index / max(total - 1, 1)
        blocks.append(Block(kind, cin, width, stride, norm, norm_groups,
                            dtype, rate, rngs=rngs))
        cin = blocks[-1].out_channels
        index += 1
      self.stages.append(blocks)
      channels.append(cin)
    self.feature_channels = tuple(channels)
    self.feature_strides = (2, 4, 8, 16, 32)
    self.pooled_features = cin

  def __call__(self, x, train=False):
    x = nnx.relu(self.bn1(self.conv1(x), train))
    features = [x]
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for blocks in self.stages:
      for block in blocks:
        x = block(x, train)
      features.append(x)
    return features

  def embed(self, x, train=False):
    return jnp.mean(self(x, train)[-1].astype(jnp.float32), axis=(1, 2))


def _register(name):
  kind, depths = DEPTHS[name]

  @ENCODERS.register(name)
  def build(in_channels: int, *, rngs: nnx.Rngs, norm: str = "group",
            norm_groups: int = 32, dtype=jnp.float32,
            drop_path_rate: float = 0.0, head: bool = False) -> ResNet:
    del head  # The pooled head is parameter-free.
    return ResNet(kind, depths, in_channels, norm, norm_groups, dtype,
                  drop_path_rate, rngs=rngs)

  build.__doc__ = (
      f"{name}: {kind} blocks {depths}, torchvision layout.\n\n"
      "  norm 'group' with norm_groups=32 by default: statistics per image,\n"
      "  so behaviour does not depend on the per-device batch, small (2-8)\n"
      "  on real-world segmentation data; norm='batch' to load torchvision\n"
      "  BatchNorm checkpoints (configs/batchnorm_encoders.gin).\n"
      "  drop_path_rate 0 (none) by default.")
  return build


for _name in DEPTHS:
  _register(_name)
