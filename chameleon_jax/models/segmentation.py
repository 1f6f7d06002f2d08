"""Segmentation models: any encoder x any decoder, one constructor.

  build_model("fpn", encoder="resnet34", num_classes=2, in_channels=1)
  build_model("unet", encoder="convnext_atto", ...)   # encoder=None: the
                                                      # plain UNet (unet.py)

Architectures: unet, unetplusplus, fpn, deeplabv3plus, segformer. Every
encoder works with every decoder (ViT through its feature pyramid). Logits are
float32 (B, H, W, K) at the input size; H and W must be multiples of the
encoder's deepest stride (32; ViT: 32 as well, for its pyramid's pooled
level). With deep_supervision=True a training call returns
[logits, aux_1, ...] (aux at decreasing resolution, for
`losses.deep_supervision`, which the train step applies); inference returns
the logits alone.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models.classifier import build_encoder
from chameleon_jax.models.decoders import deeplab, fpn, unet  # noqa: F401  (register DECODERS)
from chameleon_jax.models.layers import conv, normalise_input, per_channel, upsample
from chameleon_jax.registry import DECODERS, MODELS

# Arguments every decoder takes from the encoder and the model; the rest of
# a decoder's keyword arguments are its options (defaults in its class).
_COMMON = {"self", "feature_channels", "feature_strides", "norm",
           "norm_groups", "dtype", "rngs"}


def decoder_options(architecture: str) -> list[str]:
  """The options of `architecture`'s decoder (its own keyword arguments)."""
  return sorted(set(DECODERS.parameters(architecture)) - _COMMON)


class SegmentationModel(nnx.Module):
  """encoder -> decoder -> 1x1 head, upsampled to the input size.

  Inputs are float pixels in [0, 1], (B, H, W, in_channels), normalised
  inside the model (input_mean / input_std). Outputs: float32 logits
  (B, H, W, num_classes); with deep supervision and train=True, the list
  [logits, aux_1, ...].
  """

  def __init__(self, encoder, decoder, num_classes: int, in_channels: int,
               input_mean: Sequence[float], input_std: Sequence[float],
               dtype, deep_supervision: bool, *, rngs: nnx.Rngs):
    self.mean = nnx.Variable(per_channel(input_mean, in_channels, "input_mean"))
    self.std = nnx.Variable(per_channel(input_std, in_channels, "input_std"))
    self.encoder, self.decoder = encoder, decoder
    self.head = conv(decoder.out_channels, num_classes, 1, bias=True,
                     dtype=dtype, rngs=rngs)
    self.aux_heads = nnx.List([
        conv(c, num_classes, 1, bias=True, dtype=dtype, rngs=rngs)
        for c in decoder.aux_channels] if deep_supervision else [])
    self.stride = max(encoder.feature_strides[-1], 32)
    self.num_classes = num_classes
    self.compute_dtype = jnp.dtype(dtype)

  def __call__(self, x: jnp.ndarray, train: bool = False) -> Any:
    h, w = x.shape[1:3]
    if h % self.stride or w % self.stride:
      raise ValueError(f"Input size {h}x{w} must be a multiple of "
                       f"{self.stride} (the encoder's deepest stride).")
    x = normalise_input(x, self.mean.get_value(), self.std.get_value(),
                        self.compute_dtype)
    y, aux = self.decoder(self.encoder(x, train), train)
    logits = upsample(self.head(y), (h, w)).astype(jnp.float32)
    if not (train and len(self.aux_heads)):
      return logits
    return [logits] + [head(a).astype(jnp.float32)
                       for head, a in zip(self.aux_heads, aux)]


def build_segmentation(architecture: str, num_classes: int, in_channels: int,
                       *, rngs: nnx.Rngs, encoder: str, norm: str | None,
                       norm_groups: int | None, drop_path_rate: float | None,
                       input_mean, input_std, dtype: str,
                       deep_supervision: bool, decoder_kwargs: dict
                       ) -> SegmentationModel:
  """`architecture`'s decoder on `encoder`: the encoder built exactly as
  `ENCODERS.build(encoder)` with the zoo-wide options that are not None,
  the decoder with GroupNorm (8 groups unless given) where the encoder
  normalises by layer or by default, and only the decoder options given
  (`decoder_kwargs`; the rest take the decoder's defaults)."""
  enc = build_encoder(encoder, in_channels, rngs=rngs, dtype=dtype, norm=norm,
                      norm_groups=norm_groups, drop_path_rate=drop_path_rate,
                      head=False)
  dec = DECODERS.build(
      architecture, feature_channels=enc.feature_channels,
      feature_strides=enc.feature_strides,
      norm="group" if norm in (None, "layer") else norm,
      norm_groups=norm_groups or 8, dtype=jnp.dtype(dtype), rngs=rngs,
      **{k: v for k, v in decoder_kwargs.items() if v is not None})
  return SegmentationModel(enc, dec, num_classes, in_channels, input_mean,
                           input_std, dtype, deep_supervision, rngs=rngs)


def _register(architecture: str):
  @MODELS.register(architecture)
  def build(num_classes: int, in_channels: int, *, rngs: nnx.Rngs,
            encoder: str = "resnet18", norm: str | None = None,
            norm_groups: int | None = None,
            drop_path_rate: float | None = None,
            input_mean: Sequence[float] = (0.5,),
            input_std: Sequence[float] = (0.25,), dtype: str = "float32",
            deep_supervision: bool = False, **decoder_kwargs: Any):
    unknown = sorted(set(decoder_kwargs) - set(decoder_options(architecture)))
    if unknown:
      raise TypeError(f"models {architecture!r} has no argument(s) {unknown}; "
                      f"decoder options: {decoder_options(architecture)}.")
    return build_segmentation(
        architecture, num_classes, in_channels, rngs=rngs, encoder=encoder,
        norm=norm, norm_groups=norm_groups, drop_path_rate=drop_path_rate,
        input_mean=input_mean, input_std=input_std, dtype=dtype,
        deep_supervision=deep_supervision, decoder_kwargs=decoder_kwargs)

  build.__doc__ = (
      f"{architecture} on any encoder (default resnet18).\n\n"
      "  Args: num_classes, in_channels, rngs; encoder (ENCODERS name);\n"
      "  norm, norm_groups, drop_path_rate (None: the encoder's defaults);\n"
      "  input_mean, input_std (per-channel normalisation of [0, 1]\n"
      "  inputs); dtype; deep_supervision; and the decoder's options\n"
      f"  {decoder_options(architecture)} (defaults: "
      f"decoders.{architecture}, models/decoders/).\n\n"
      "  Raises: TypeError for an option the decoder does not have.\n\n"
      f"  Example: build_model({architecture!r}, encoder='resnet34',\n"
      "  num_classes=2, in_channels=1)")
  return build


for _architecture in ("unetplusplus", "fpn", "deeplabv3plus", "segformer"):
  _register(_architecture)
