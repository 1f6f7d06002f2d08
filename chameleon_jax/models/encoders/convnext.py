"""ConvNeXt (Liu et al. 2022): atto (CPU-sized), tiny, small, base.

torchvision's layout: a 4x4/4 stem conv + LayerNorm, stages of blocks
(7x7 depthwise conv -> LayerNorm -> 4x MLP with exact GELU -> layer scale,
stochastic depth on the residual), LayerNorm + 2x2/2 conv between stages and
a LayerNorm before the classifier. LayerNorm eps 1e-6 and layer scale 1e-6 as
in the paper. Parameter counts with a 1000-class head equal torchvision's
(tiny 28,589,128; small 50,223,688). ConvNeXt has no BatchNorm, so the
`norm` option does not apply (its LayerNorm is per pixel, batch-independent).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models.layers import drop_path
from chameleon_jax.registry import ENCODERS

# name -> (blocks per stage, widths); atto is timm's convnext_atto.
SIZES = {"convnext_atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
         "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
         "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
         "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024))}
EPS = 1e-6


def _ln(dim, dtype, rngs):
  return nnx.LayerNorm(dim, epsilon=EPS, dtype=dtype, rngs=rngs)


class Block(nnx.Module):
  """ConvNeXt block: 7x7 depthwise conv, LayerNorm, MLP (4x), layer scale,
  stochastic depth.
  """

  def __init__(self, dim, drop, dtype, *, rngs):
    self.dwconv = nnx.Conv(dim, dim, (7, 7), padding=((3, 3), (3, 3)),
                           feature_group_count=dim, dtype=dtype, rngs=rngs)
    self.norm = _ln(dim, dtype, rngs)
    self.fc1 = nnx.Linear(dim, 4 * dim, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(4 * dim, dim, dtype=dtype, rngs=rngs)
    self.layer_scale = nnx.Param(jnp.full((dim,), 1e-6, jnp.float32))
    self.drop = drop_path(drop, rngs) if drop > 0 else None

  def __call__(self, x, train):
    y = self.fc2(jax.nn.gelu(self.fc1(self.norm(self.dwconv(x))),
                             approximate=False))
    y = y * self.layer_scale.get_value().astype(y.dtype)
    if self.drop is not None:
      y = self.drop(y, deterministic=not train)
    return x + y


class ConvNeXt(nnx.Module):
  """ConvNeXt encoder (Liu et al. 2022), torchvision's layout: a 4x4 stem
  and four stages at strides 4-32 (the encoder contract, __init__.py).
  """

  def __init__(self, depths, dims, in_channels, dtype, drop_path_rate, head,
               *, rngs):
    self.stem_conv = nnx.Conv(in_channels, dims[0], (4, 4), strides=(4, 4),
                              padding="VALID", dtype=dtype, rngs=rngs)
    self.stem_norm = _ln(dims[0], dtype, rngs)
    self.down_norms = nnx.List()
    self.down_convs = nnx.List()
    self.stages = nnx.List()
    total, index = sum(depths), 0
    for s, (n, dim) in enumerate(zip(depths, dims)):
      if s:
        self.down_norms.append(_ln(dims[s - 1], dtype, rngs))
        self.down_convs.append(nnx.Conv(dims[s - 1], dim, (2, 2),
                                        strides=(2, 2), padding="VALID",
                                        dtype=dtype, rngs=rngs))
      blocks = nnx.List()
      for _ in range(n):
        blocks.append(Block(dim, drop_path_rate * index / max(total - 1, 1),
                            dtype, rngs=rngs))
        index += 1
      self.stages.append(blocks)
    self.head_norm = _ln(dims[-1], dtype, rngs) if head else None
    self.feature_channels = tuple(dims)
    self.feature_strides = (4, 8, 16, 32)
    self.pooled_features = dims[-1]

  def __call__(self, x, train=False):
    x = self.stem_norm(self.stem_conv(x))
    features = []
    for s, blocks in enumerate(self.stages):
      if s:
        x = self.down_convs[s - 1](self.down_norms[s - 1](x))
      for block in blocks:
        x = block(x, train)
      features.append(x)
    return features

  def embed(self, x, train=False):
    pooled = jnp.mean(self(x, train)[-1], axis=(1, 2))
    return self.head_norm(pooled).astype(jnp.float32)


def _register(name):
  depths, dims = SIZES[name]

  @ENCODERS.register(name)
  def build(in_channels: int, *, rngs: nnx.Rngs, norm: str = "layer",
            norm_groups: int = 32, dtype=jnp.float32,
            drop_path_rate: float = 0.1, head: bool = False) -> ConvNeXt:
    if norm not in ("layer", "group"):  # "group": the zoo-wide default.
      raise ValueError(f"{name} uses LayerNorm; norm={norm!r} does not apply "
                       "(use 'layer').")
    del norm_groups
    return ConvNeXt(depths, dims, in_channels, dtype, drop_path_rate, head,
                    rngs=rngs)

  build.__doc__ = (f"{name}: depths {depths}, widths {dims}; stochastic depth "
                   "0.1 by default (the paper's value for tiny).")
  return build


for _name in SIZES:
  _register(_name)
