"""UNet (Ronneberger et al. 2015) in Flax NNX, sized for small real-world data."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models.layers import (ConvBlock, UpConv2x2, max_pool2x2,
                                         normalise_input, per_channel)
from chameleon_jax.registry import MODELS


class UNet(nnx.Module):
  """Encoder-decoder with skip connections; returns float32 logits (B, H, W, K).

  Inputs are images in [0, 1] (B, H, W, C); per-channel normalisation
  (x - mean) / std happens inside the model so that attacks and exported
  models work in pixel space. H and W must be multiples of 2**(depth - 1).
  Parameters are float32; `dtype` sets the compute dtype (bfloat16 for mixed
  precision).
  """

  def __init__(self, num_classes: int, in_channels: int,
               widths: Sequence[int], norm: str, norm_groups: int,
               input_mean: Sequence[float], input_std: Sequence[float],
               dtype: str, *, rngs: nnx.Rngs):
    if len(widths) < 2:
      raise ValueError(f"UNet needs at least 2 levels, got widths={widths}.")
    compute = jnp.dtype(dtype)
    self.stride = 2 ** (len(widths) - 1)
    self.num_classes = num_classes
    self.mean = nnx.Variable(per_channel(input_mean, in_channels, "input_mean"))
    self.std = nnx.Variable(per_channel(input_std, in_channels, "input_std"))
    self.down = nnx.List()
    cin = in_channels
    for w in widths:
      self.down.append(ConvBlock(cin, w, norm, norm_groups, compute, rngs=rngs))
      cin = w
    self.up = nnx.List()
    self.merge = nnx.List()
    for w_low, w in zip(widths[:0:-1], widths[-2::-1]):
      self.up.append(UpConv2x2(w_low, w, dtype=compute, rngs=rngs))
      self.merge.append(ConvBlock(2 * w, w, norm, norm_groups, compute,
                                  rngs=rngs))
    self.head = nnx.Conv(widths[0], num_classes, (1, 1), dtype=compute,
                         rngs=rngs)
    self.compute_dtype = compute

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    h, w = x.shape[1:3]
    if h % self.stride or w % self.stride:
      raise ValueError(f"UNet input size {h}x{w} must be a multiple of "
                       f"{self.stride} (2**(depth-1)).")
    x = normalise_input(x, self.mean.get_value(), self.std.get_value(),
                        self.compute_dtype)
    skips = []
    for i, block in enumerate(self.down):
      if i:
        x = max_pool2x2(x)
      x = block(x, train)
      skips.append(x)
    for up, merge, skip in zip(self.up, self.merge, skips[-2::-1]):
      x = merge(jnp.concatenate([up(x), skip], axis=-1), train)
    return self.head(x).astype(jnp.float32)


@MODELS.register("unet")
def unet(num_classes: int, in_channels: int, *, rngs: nnx.Rngs,
         encoder: str | None = None,
         widths: Sequence[int] = (16, 32, 64, 128), norm: str | None = None,
         norm_groups: int | None = None, input_mean: Sequence[float] = (0.5,),
         input_std: Sequence[float] = (0.25,), dtype: str = "float32",
         decoder_channels: Sequence[int] | None = None,
         drop_path_rate: float | None = None,
         deep_supervision: bool = False) -> nnx.Module:
  """UNet, plain or on any encoder.

  Args:
    num_classes: output classes (background included).
    in_channels: input channels (1 for grey, 3 for RGB, any number).
    rngs: parameter initialisation.
    encoder: None for the plain UNet (this module); a registered encoder
      name ("resnet34", "convnext_atto", ...) for that encoder with the UNet
      decoder (`decoder_channels`, SMP's defaults), built like every other
      architecture's (segmentation.py).
    widths: the plain UNet's channels per level. Default (16, 32, 64, 128):
      four levels give enough receptive field for 96-256 px crops and stay
      small enough for CPU development and a few hundred images.
    norm: "group", "batch" or "none". None: the plain UNet uses GroupNorm
      (statistics per image, so behaviour does not depend on the per-device
      batch, which is small on real-world segmentation data); with an
      encoder, the encoder's own default.
    norm_groups: GroupNorm groups; None: 8 for the plain UNet (its narrowest
      level has 16 channels), the encoder's own default otherwise.
    input_mean, input_std: per-channel normalisation of [0, 1] inputs,
      done inside the model (one value: every channel).
    dtype: computation dtype ("float32", "bfloat16"); parameters float32.
    decoder_channels: the UNet decoder's widths (with an encoder; None: the
      decoder's default, models/decoders/unet.py).
    drop_path_rate: stochastic depth of the encoder (with an encoder).
    deep_supervision: auxiliary outputs for training (with an encoder).

  Raises:
    ValueError: deep_supervision or drop_path_rate without an encoder.

  Example:
    >>> model = build_model("unet", num_classes=2, in_channels=1)
    >>> model(jnp.zeros((1, 96, 96, 1))).shape
    (1, 96, 96, 2)
  """
  if encoder is None:
    if deep_supervision or drop_path_rate:
      raise ValueError("deep_supervision / drop_path_rate need an encoder; "
                       "the plain UNet (encoder=None) has neither.")
    return UNet(num_classes, in_channels, tuple(widths), norm or "group",
                norm_groups or 8, input_mean, input_std, dtype, rngs=rngs)
  from chameleon_jax.models.segmentation import build_segmentation  # pylint: disable=import-outside-toplevel
  return build_segmentation(
      "unet", num_classes, in_channels, rngs=rngs, encoder=encoder, norm=norm,
      norm_groups=norm_groups, drop_path_rate=drop_path_rate,
      input_mean=input_mean, input_std=input_std, dtype=dtype,
      deep_supervision=deep_supervision,
      decoder_kwargs={"decoder_channels": decoder_channels})
