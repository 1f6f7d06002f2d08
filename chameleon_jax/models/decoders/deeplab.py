"""DeepLabV3+ decoder (Chen et al. 2018) over any encoder's features.

ASPP on the deepest feature: a 1x1 branch, one 3x3 (depthwise-separable)
branch per atrous rate, and image pooling, projected to `channels` with
dropout; upsampled to stride 4 and concatenated with the stride-4 feature
reduced to 48 channels, then two separable 3x3 conv-norm-ReLU layers.
Rates are configurable: the paper's (6, 12, 18) are for output stride 16 on
513 px crops; at stride 32 on 128-256 px defect crops the deepest map is
4-8 px wide, so the default is (1, 2, 3) (rates beyond the map's size only
see padding). Predicts at stride 4; the deep-supervision output is the ASPP.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from chameleon_jax.registry import DECODERS
from chameleon_jax.models.layers import ConvNormAct, upsample


@DECODERS.register("deeplabv3plus")
class DeepLabV3PlusDecoder(nnx.Module):
  """DeepLabV3+: ASPP on the stride-32 map, fused with the stride-4 map.

  Args:
    feature_channels, feature_strides: the encoder's maps (needs stride 4).
    norm, norm_groups, dtype, rngs: as the model's.
    channels: ASPP and decoder width (256, the paper's).
    atrous_rates: ASPP dilations. Default (1, 2, 3), for output stride 32 on
      128-320 px defect images: the deepest map is 4-10 px wide, so the
      paper's (6, 12, 18) (for stride 16 on 513 px) would only see padding.
    dropout: before the head (0.1).

  Raises:
    ValueError: the encoder gives no stride-4 map.
  """

  def __init__(self, feature_channels: Sequence[int],
               feature_strides: Sequence[int], *, norm: str, norm_groups: int,
               dtype, rngs: nnx.Rngs, channels: int = 256,
               atrous_rates: Sequence[int] = (1, 2, 3),
               dropout: float = 0.1):
    if 4 not in feature_strides:
      raise ValueError("DeepLabV3+ needs a stride-4 encoder feature; the "
                       f"encoder gives {tuple(feature_strides)}.")
    self.low = feature_strides.index(4)
    cin = feature_channels[-1]
    self.aspp_1x1 = ConvNormAct(cin, channels, 1, norm, norm_groups, dtype,
                                rngs=rngs)
    self.aspp_atrous = nnx.List([
        ConvNormAct(cin, channels, 3, norm, norm_groups, dtype, dilation=r,
                    separable=True, rngs=rngs) for r in atrous_rates])
    self.aspp_pool = ConvNormAct(cin, channels, 1, norm, norm_groups, dtype,
                                 rngs=rngs)
    self.aspp_project = ConvNormAct((2 + len(atrous_rates)) * channels,
                                    channels, 1, norm, norm_groups, dtype,
                                    rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.low_project = ConvNormAct(feature_channels[self.low], 48, 1, norm,
                                   norm_groups, dtype, rngs=rngs)
    self.refine = nnx.List([
        ConvNormAct(channels + 48, channels, 3, norm, norm_groups, dtype,
                    separable=True, rngs=rngs),
        ConvNormAct(channels, channels, 3, norm, norm_groups, dtype,
                    separable=True, rngs=rngs)])
    self.out_channels, self.out_stride = channels, 4
    self.aux_channels = [channels]
    self.aux_strides = [feature_strides[-1]]

  def __call__(self, features, train):
    x = features[-1]
    pooled = self.aspp_pool(jnp.mean(x, axis=(1, 2), keepdims=True), train)
    branches = ([self.aspp_1x1(x, train)] +
                [b(x, train) for b in self.aspp_atrous] +
                [jnp.broadcast_to(pooled, x.shape[:3] + pooled.shape[3:])])
    aspp = self.dropout(self.aspp_project(jnp.concatenate(branches, -1), train),
                        deterministic=not train)
    low = features[self.low]
    y = jnp.concatenate([upsample(aspp, low.shape[1:3]),
                         self.low_project(low, train)], axis=-1)
    for layer in self.refine:
      y = layer(y, train)
    return y, [aspp]
