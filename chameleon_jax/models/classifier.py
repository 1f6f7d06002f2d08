"""Image classification: any registered encoder + a pooled linear head.

`build_model("classifier", encoder="resnet50", num_classes=6, in_channels=1)`
returns float32 logits (B, num_classes). Pixel values in [0, 1] are
normalised inside the model (input_mean / input_std per channel), as in every
zoo model, so attacks and exported graphs work in pixel space.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models.layers import normalise_input, per_channel
from chameleon_jax.registry import ENCODERS, MODELS


def build_encoder(name: str, in_channels: int, *, rngs: nnx.Rngs, dtype,
                  norm: str | None, norm_groups: int | None,
                  drop_path_rate: float | None, head: bool):
  """An encoder with the zoo-wide options; None keeps the encoder's default."""
  kwargs = {k: v for k, v in (("norm", norm), ("norm_groups", norm_groups),
                              ("drop_path_rate", drop_path_rate))
            if v is not None}
  return ENCODERS.build(name, in_channels=in_channels, rngs=rngs,
                        dtype=jnp.dtype(dtype), head=head, **kwargs)


class Classifier(nnx.Module):
  """Encoder + global average pooling + linear head; float32 logits
  (B, num_classes) from [0, 1] pixels normalised inside the model.
  """

  def __init__(self, encoder, num_classes: int, in_channels: int,
               input_mean: Sequence[float], input_std: Sequence[float],
               dtype, *, rngs: nnx.Rngs):
    self.mean = nnx.Variable(per_channel(input_mean, in_channels, "input_mean"))
    self.std = nnx.Variable(per_channel(input_std, in_channels, "input_std"))
    self.encoder = encoder
    self.head = nnx.Linear(encoder.pooled_features, num_classes, rngs=rngs)
    self.num_classes = num_classes
    self.compute_dtype = jnp.dtype(dtype)

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = normalise_input(x, self.mean.get_value(), self.std.get_value(),
                        self.compute_dtype)
    return self.head(self.encoder.embed(x, train)).astype(jnp.float32)


@MODELS.register("classifier")
def classifier(num_classes: int, in_channels: int, *, rngs: nnx.Rngs,
               encoder: str = "resnet18", norm: str | None = None,
               norm_groups: int | None = None,
               drop_path_rate: float | None = None,
               input_mean: Sequence[float] = (0.5,),
               input_std: Sequence[float] = (0.25,),
               dtype: str = "float32") -> Classifier:
  """Encoder + global pooling + linear head. Options left None take the
  encoder's own default (GroupNorm for CNNs; LayerNorm for ConvNeXt/ViT)."""
  enc = build_encoder(encoder, in_channels, rngs=rngs, dtype=dtype, norm=norm,
                      norm_groups=norm_groups, drop_path_rate=drop_path_rate,
                      head=True)
  return Classifier(enc, num_classes, in_channels, input_mean, input_std,
                    dtype, rngs=rngs)
