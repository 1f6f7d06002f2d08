"""Vision Transformer (Dosovitskiy et al. 2021): Ti/16, S/16, B/16, timm layout.

Patch embedding (16x16/16 conv), class token, learned position embeddings
for a 224x224 grid that are resampled (bicubic) to any input grid, pre-norm
blocks (LayerNorm eps 1e-6, multi-head attention with a fused qkv, 4x MLP
with exact GELU, stochastic depth), final LayerNorm; the classifier reads
the class token. Parameter counts with a 1000-class head equal timm's
(Ti 5,717,416; S 22,050,664; B 86,567,656).

For dense prediction (head=False) the stride-16 tokens become a feature
pyramid at strides 4, 8, 16, 32 (ViTDet's simple pyramid: two or one 2x2
transposed convs, identity, 2x2 max pool), so every decoder can use a ViT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models.layers import drop_path
from chameleon_jax.registry import ENCODERS

SIZES = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}
PATCH, DEPTH, GRID = 16, 12, 14  # 224 / 16 = 14 positions per side.


class Attention(nnx.Module):
  """Multi-head self-attention with a fused qkv projection (timm's layout)."""

  def __init__(self, dim, heads, dtype, *, rngs):
    self.heads = heads
    self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    b, n, d = x.shape
    q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3, self.heads,
                                            d // self.heads), 3, axis=2)
    out = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    return self.proj(out.reshape(b, n, d))


class Block(nnx.Module):
  """Pre-norm transformer block: attention and MLP, stochastic depth."""

  def __init__(self, dim, heads, drop, dtype, *, rngs):
    self.norm1 = nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.attn = Attention(dim, heads, dtype, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.fc1 = nnx.Linear(dim, 4 * dim, dtype=dtype, rngs=rngs)
    self.fc2 = nnx.Linear(4 * dim, dim, dtype=dtype, rngs=rngs)
    self.drop = drop_path(drop, rngs, rank=3) if drop > 0 else None

  def _drop(self, y, train):
    return y if self.drop is None else self.drop(y, deterministic=not train)

  def __call__(self, x, train):
    x = x + self._drop(self.attn(self.norm1(x)), train)
    y = self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))
    return x + self._drop(y, train)


class ViT(nnx.Module):
  """ViT encoder (patch 16), timm's layout; position embeddings resampled
  to the input size; a simple feature pyramid gives maps at strides 4-32.
  """

  def __init__(self, dim, heads, in_channels, dtype, drop_path_rate, head, *,
               rngs):
    init = nnx.initializers.truncated_normal(0.02)
    self.patch_embed = nnx.Conv(in_channels, dim, (PATCH, PATCH),
                                strides=(PATCH, PATCH), padding="VALID",
                                dtype=dtype, rngs=rngs)
    self.cls_token = nnx.Param(init(rngs.params(), (1, 1, dim)))
    self.pos_embed = nnx.Param(init(rngs.params(), (1, 1 + GRID * GRID, dim)))
    self.blocks = nnx.List([
        Block(dim, heads, drop_path_rate * i / (DEPTH - 1), dtype, rngs=rngs)
        for i in range(DEPTH)])
    self.norm = nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.compute_dtype = dtype
    if head:
      self.up4 = self.up4b = self.up8 = None
      self.feature_channels = (dim,)
      self.feature_strides = (16,)
    else:
      conv_t = lambda a, b: nnx.ConvTranspose(a, b, (2, 2), strides=(2, 2),
                                              dtype=dtype, rngs=rngs)
      self.up4, self.up4b = conv_t(dim, dim // 2), conv_t(dim // 2, dim // 4)
      self.up8 = conv_t(dim, dim // 2)
      self.feature_channels = (dim // 4, dim // 2, dim, dim)
      self.feature_strides = (4, 8, 16, 32)
    self.pooled_features = dim

  def position_embedding(self, gh: int, gw: int) -> jax.Array:
    """The position embeddings for a gh x gw patch grid (class token first)."""
    pos = self.pos_embed.get_value()
    if (gh, gw) == (GRID, GRID):
      return pos
    grid = pos[:, 1:].reshape(1, GRID, GRID, -1)
    grid = jax.image.resize(grid, (1, gh, gw, grid.shape[-1]), "bicubic")
    return jnp.concatenate([pos[:, :1], grid.reshape(1, gh * gw, -1)], axis=1)

  def tokens(self, x, train):
    b, h, w, _ = x.shape
    if h % PATCH or w % PATCH:
      raise ValueError(f"ViT input {h}x{w} must be a multiple of {PATCH}.")
    x = self.patch_embed(x)
    gh, gw = x.shape[1:3]
    x = x.reshape(b, gh * gw, -1)
    cls = jnp.broadcast_to(self.cls_token.get_value(), (b, 1, x.shape[-1]))
    x = jnp.concatenate([cls.astype(x.dtype), x], axis=1)
    x = x + self.position_embedding(gh, gw).astype(x.dtype)
    for block in self.blocks:
      x = block(x, train)
    return self.norm(x), (gh, gw)

  def __call__(self, x, train=False):
    tokens, (gh, gw) = self.tokens(x, train)
    grid = tokens[:, 1:].reshape(x.shape[0], gh, gw, -1)
    if self.up8 is None:
      return [grid]
    return [self.up4b(jax.nn.gelu(self.up4(grid), approximate=False)),
            self.up8(grid), grid,
            nnx.max_pool(grid, (2, 2), strides=(2, 2))]

  def embed(self, x, train=False):
    return self.tokens(x, train)[0][:, 0].astype(jnp.float32)


def _register(name):
  dim, heads = SIZES[name]

  @ENCODERS.register(name)
  def build(in_channels: int, *, rngs: nnx.Rngs, norm: str = "layer",
            norm_groups: int = 32, dtype=jnp.float32,
            drop_path_rate: float = 0.1, head: bool = False) -> ViT:
    if norm not in ("layer", "group"):
      raise ValueError(f"{name} uses LayerNorm; norm={norm!r} does not apply "
                       "(use 'layer').")
    del norm_groups
    return ViT(dim, heads, in_channels, dtype, drop_path_rate, head,
               rngs=rngs)

  build.__doc__ = (f"{name}/16: width {dim}, {heads} heads, depth {DEPTH}; "
                   "LayerNorm; stochastic depth 0.1 by default (the rate "
                   "of the small sizes that small data can train).")
  return build


for _name in SIZES:
  _register(_name)
