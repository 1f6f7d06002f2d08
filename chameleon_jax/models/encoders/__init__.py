"""Encoders (backbones): multi-scale feature extractors shared by every model.

An encoder is an nnx.Module with
  feature_channels  channels of each returned feature map, finest first;
  feature_strides   their strides w.r.t. the input (2..32; ViT 4..32);
  pooled_features   width of `embed`'s output;
  __call__(x, train) -> list of (B, H/s, W/s, C) maps, one per stride;
  embed(x, train) -> (B, pooled_features) float32, what a classifier reads
                    (built with head=True: layers only classifiers use, e.g.
                    EfficientNet's 1280-channel conv, exist only then).

Builders are registered in `ENCODERS` and take
  (in_channels, *, norm, norm_groups, dtype, drop_path_rate, head, rngs).
Inputs arrive already normalised (models normalise pixel values).
"""

from chameleon_jax.models.encoders import convnext  # noqa: F401
from chameleon_jax.models.encoders import efficientnet  # noqa: F401
from chameleon_jax.models.encoders import resnet  # noqa: F401
from chameleon_jax.models.encoders import vit  # noqa: F401
