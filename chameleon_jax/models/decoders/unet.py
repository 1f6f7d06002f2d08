"""UNet and UNet++ decoders over any encoder's feature pyramid.

UNet (Ronneberger et al. 2015, SMP's variant): from the deepest feature,
each block upsamples x2 (nearest), concatenates the encoder feature at that
stride when there is one, and applies two 3x3 conv-norm-ReLU layers, until
stride 1. UNet++ (Zhou et al. 2018): nested dense skip pathways; node
(i, j) sees every node (i, 0..j-1) and the upsampled node (i+1, j-1).
Deep-supervision outputs are the decoder's intermediate maps (UNet: strides
2, 4, 8; UNet++: the nested nodes at the finest level).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from chameleon_jax.registry import DECODERS
from chameleon_jax.models.layers import ConvNormAct, upsample


class _TwoConv(nnx.Module):
  def __init__(self, cin, cout, norm, groups, dtype, *, rngs):
    self.a = ConvNormAct(cin, cout, 3, norm, groups, dtype, rngs=rngs)
    self.b = ConvNormAct(cout, cout, 3, norm, groups, dtype, rngs=rngs)

  def __call__(self, x, train):
    return self.b(self.a(x, train), train)


def _up2(x):
  return upsample(x, (2 * x.shape[1], 2 * x.shape[2]), "nearest")


@DECODERS.register("unet")
class UNetDecoder(nnx.Module):
  """UNet decoder: upsample x2, concatenate the encoder's map of that
  stride, two conv-norm-act; `decoder_channels` per step, SMP's defaults
  (256, 128, 64, 32, 16), down to stride 1.

  Raises:
    ValueError: fewer decoder_channels than upsampling steps.
  """

  def __init__(self, feature_channels: Sequence[int],
               feature_strides: Sequence[int], *, norm: str, norm_groups: int,
               dtype, rngs: nnx.Rngs,
               decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)):
    steps = int(math.log2(feature_strides[-1]))
    if len(decoder_channels) < steps:
      raise ValueError(f"decoder_channels {tuple(decoder_channels)} has "
                       f"{len(decoder_channels)} entries; the encoder's "
                       f"stride {feature_strides[-1]} needs {steps}.")
    self.skip_at = {s: i for i, s in enumerate(feature_strides[:-1])}
    self.blocks = nnx.List()
    cin, stride = feature_channels[-1], feature_strides[-1]
    self.aux_channels, self.aux_strides = [], []
    for width in decoder_channels[:steps]:
      stride //= 2
      skip = feature_channels[self.skip_at[stride]] if stride in self.skip_at else 0
      self.blocks.append(_TwoConv(cin + skip, width, norm, norm_groups, dtype,
                                  rngs=rngs))
      cin = width
      if stride in (2, 4, 8):
        self.aux_channels.insert(0, width)
        self.aux_strides.insert(0, stride)
    self.out_channels, self.out_stride = cin, 1
    self.feature_strides = tuple(feature_strides)

  def __call__(self, features, train):
    x, stride = features[-1], self.feature_strides[-1]
    aux = []
    for block in self.blocks:
      x, stride = _up2(x), stride // 2
      if stride in self.skip_at:
        x = jnp.concatenate([x, features[self.skip_at[stride]]], axis=-1)
      x = block(x, train)
      if stride in (2, 4, 8):
        aux.insert(0, x)
    return x, aux


@DECODERS.register("unetplusplus")
class UNetPlusPlusDecoder(nnx.Module):
  """UNet++ (Zhou et al.): nested dense skip paths between the encoder's
  levels; `decoder_channels` as UNetDecoder's, whose intermediate nodes are
  the deep-supervision outputs.

  Raises:
    ValueError: fewer decoder_channels than encoder levels.
  """

  def __init__(self, feature_channels: Sequence[int],
               feature_strides: Sequence[int], *, norm: str, norm_groups: int,
               dtype, rngs: nnx.Rngs,
               decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)):
    levels = len(feature_channels)
    if len(decoder_channels) < levels:
      raise ValueError(f"decoder_channels {tuple(decoder_channels)} needs "
                       f"{levels} entries, one per encoder level.")
    # Level i's nested nodes have the width of decoder_channels[-1 - i].
    width = [decoder_channels[len(decoder_channels) - 1 - i]
             for i in range(levels)]
    self.nodes = nnx.Dict()
    for j in range(1, levels):
      for i in range(levels - j):
        below = feature_channels[i + 1] if j == 1 else width[i + 1]
        cin = feature_channels[i] + (j - 1) * width[i] + below
        self.nodes[f"{i}_{j}"] = _TwoConv(cin, width[i], norm, norm_groups,
                                          dtype, rngs=rngs)
    # Further x2 steps from the finest encoder stride down to stride 1.
    self.tail = nnx.List()
    cin = width[0]
    for _ in range(int(math.log2(feature_strides[0]))):
      self.tail.append(_TwoConv(cin, width[0], norm, norm_groups, dtype,
                                rngs=rngs))
    self.levels = levels
    self.out_channels, self.out_stride = width[0], 1
    self.aux_channels = [width[0]] * (levels - 2)
    self.aux_strides = [feature_strides[0]] * (levels - 2)

  def __call__(self, features, train):
    grid = {(i, 0): f for i, f in enumerate(features)}
    for j in range(1, self.levels):
      for i in range(self.levels - j):
        inputs = [grid[(i, k)] for k in range(j)] + [_up2(grid[(i + 1, j - 1)])]
        grid[(i, j)] = self.nodes[f"{i}_{j}"](jnp.concatenate(inputs, -1),
                                              train)
    x = grid[(0, self.levels - 1)]
    for block in self.tail:
      x = block(_up2(x), train)
    return x, [grid[(0, j)] for j in range(1, self.levels - 1)]
