"""Model zoo. Every model is built through `build_model` (one uniform constructor).

Importing this package registers the built-in architectures in `MODELS`.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from chameleon_jax.models import classifier  # noqa: F401  (registers models)
from chameleon_jax.models import encoders  # noqa: F401  (registers encoders)
from chameleon_jax.models import segmentation  # noqa: F401
from chameleon_jax.models import unet  # noqa: F401
from chameleon_jax.registry import MODELS


def build_model(name: str, *, num_classes: int, in_channels: int,
                dtype: str = "float32", seed: int = 0,
                **kwargs: Any) -> nnx.Module:
  """Builds registered model `name`; kwargs are the architecture's own options."""
  return MODELS.build(name, num_classes=num_classes, in_channels=in_channels,
                      dtype=dtype, rngs=nnx.Rngs(seed), **kwargs)
