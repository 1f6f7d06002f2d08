"""FPN (Kirillov et al. 2019, panoptic FPN head as in SMP) and the SegFormer
all-MLP decoder (Xie et al. 2021), over the stride 4-32 encoder features.

FPN: 1x1 laterals to `pyramid_channels`, a top-down pathway (nearest x2 +
add), per level a stack of 3x3 conv-norm-ReLU + x2 upsampling down to stride
4, summed, then dropout. SegFormer: each level linearly projected to
`embed_dim`, bilinearly resized to stride 4, concatenated and fused by a
1x1 conv-norm-ReLU, then dropout. Both predict at stride 4 (the model
upsamples logits bilinearly). Deep-supervision outputs: the pyramid levels
at strides 8, 16, 32.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from chameleon_jax.registry import DECODERS
from chameleon_jax.models.layers import ConvNormAct, conv, upsample


def _levels(feature_strides: Sequence[int], name: str) -> list[int]:
  """Indices of the stride 4, 8, 16, 32 features."""
  index = {s: i for i, s in enumerate(feature_strides)}
  missing = [s for s in (4, 8, 16, 32) if s not in index]
  if missing:
    raise ValueError(f"{name} needs encoder features at strides 4, 8, 16, 32; "
                     f"the encoder gives {tuple(feature_strides)}.")
  return [index[s] for s in (4, 8, 16, 32)]


@DECODERS.register("fpn")
class FPNDecoder(nnx.Module):
  """Feature pyramid (Kirillov et al.'s panoptic FPN head, as SMP's).

  Args:
    feature_channels, feature_strides: the encoder's maps (strides 4-32).
    norm, norm_groups, dtype, rngs: as the model's.
    pyramid_channels: lateral width (256, SMP's and the paper's).
    segmentation_channels: per-level head width (128).
    dropout: before the head (0.2: small datasets need it more than large).
  """

  def __init__(self, feature_channels: Sequence[int],
               feature_strides: Sequence[int], *, norm: str, norm_groups: int,
               dtype, rngs: nnx.Rngs, pyramid_channels: int = 256,
               segmentation_channels: int = 128, dropout: float = 0.2):
    self.levels = _levels(feature_strides, "FPN")
    self.laterals = nnx.List([
        conv(feature_channels[i], pyramid_channels, 1, bias=True, dtype=dtype,
             rngs=rngs) for i in self.levels])
    self.branches = nnx.List()
    for level in range(4):  # Stride 4 * 2**level -> stride 4.
      layers = nnx.List()
      for k in range(max(level, 1)):
        layers.append(ConvNormAct(
            pyramid_channels if k == 0 else segmentation_channels,
            segmentation_channels, 3, norm, norm_groups, dtype, rngs=rngs))
      self.branches.append(layers)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.out_channels, self.out_stride = segmentation_channels, 4
    self.aux_channels = [pyramid_channels] * 3
    self.aux_strides = [8, 16, 32]

  def __call__(self, features, train):
    feats = [features[i] for i in self.levels]
    pyramid = [None] * 4
    pyramid[3] = self.laterals[3](feats[3])
    for level in (2, 1, 0):
      above = pyramid[level + 1]
      pyramid[level] = self.laterals[level](feats[level]) + upsample(
          above, feats[level].shape[1:3], "nearest")
    total = 0.0
    for level, layers in enumerate(self.branches):
      x = pyramid[level]
      for layer in layers:
        x = layer(x, train)
        if level:
          x = upsample(x, (2 * x.shape[1], 2 * x.shape[2]), "bilinear")
      total = total + x
    return self.dropout(total, deterministic=not train), pyramid[1:]


@DECODERS.register("segformer")
class SegFormerDecoder(nnx.Module):
  """SegFormer's all-MLP head: every level projected to `embed_dim` (256,
  the paper's for the small sizes), upsampled to stride 4 and fused;
  `dropout` 0.1 before the head."""

  def __init__(self, feature_channels: Sequence[int],
               feature_strides: Sequence[int], *, norm: str, norm_groups: int,
               dtype, rngs: nnx.Rngs, embed_dim: int = 256,
               dropout: float = 0.1):
    self.levels = _levels(feature_strides, "SegFormer")
    self.projections = nnx.List([
        nnx.Linear(feature_channels[i], embed_dim, dtype=dtype, rngs=rngs)
        for i in self.levels])
    self.fuse = ConvNormAct(4 * embed_dim, embed_dim, 1, norm, norm_groups,
                            dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.out_channels, self.out_stride = embed_dim, 4
    self.aux_channels = [embed_dim] * 3
    self.aux_strides = [8, 16, 32]

  def __call__(self, features, train):
    feats = [features[i] for i in self.levels]
    size = feats[0].shape[1:3]
    projected = [p(f) for p, f in zip(self.projections, feats)]
    x = jnp.concatenate([upsample(p, size) for p in projected], axis=-1)
    x = self.dropout(self.fuse(x, train), deterministic=not train)
    return x, projected[1:]
