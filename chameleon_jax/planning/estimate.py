"""What a candidate model costs, by abstract evaluation (nothing runs).

`cost()` builds the model from shapes alone (`nnx.eval_shape`), traces one
forward pass to a jaxpr and adds up the bytes of every value it computes:
an upper bound on what training keeps for the backward pass (XLA fuses
element-wise operations, so the real figure is lower), which makes the
planner's batch sizes safe rather than tight. FLOPs come from XLA's cost
analysis of the lowered forward pass (models/listing.py), the figure every
benchmark uses.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core
import numpy as np
from flax import nnx

from chameleon_jax.models import build_model
from chameleon_jax.models.listing import program_flops

# A training step keeps the forward pass's values for the backward pass and
# needs about as much again for the gradients flowing back through them.
BACKWARD_FACTOR = 2.0
# Parameters, their gradients and AdamW's two moments.
OPTIMIZER_COPIES = 4


@dataclasses.dataclass(frozen=True)
class Cost:
  """One example's cost at one input size, and the model's parameters."""
  params: int
  activation_bytes: int  # values one forward pass computes, one example
  forward_gflops: float  # one example

  def train_bytes(self, batch: int) -> int:
    """Memory of a training step of `batch` examples (module docstring)."""
    return int(OPTIMIZER_COPIES * 4 * self.params +
               BACKWARD_FACTOR * batch * self.activation_bytes)

  def eval_bytes(self, batch: int) -> int:
    """Memory of a forward pass of `batch` examples."""
    return int(4 * self.params + batch * self.activation_bytes)


def _jaxpr_bytes(jaxpr) -> int:
  """Bytes of every value the jaxpr's equations compute (sub-jaxprs opened,
  so a nested call's values count once)."""
  total = 0
  for eqn in jaxpr.eqns:
    subs = [p for p in eqn.params.values()
            if isinstance(p, (jex_core.Jaxpr, jex_core.ClosedJaxpr))]
    if subs:
      total += sum(_jaxpr_bytes(getattr(s, "jaxpr", s)) for s in subs)
      continue
    for var in eqn.outvars:
      aval = var.aval
      if hasattr(aval, "shape"):
        total += math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
  return total


@functools.lru_cache(maxsize=64)
def cost(model: str, kwargs: tuple, num_classes: int, in_channels: int,
         size: tuple[int, int]) -> Cost:
  """The `Cost` of `model` built with `kwargs` (sorted (key, value) pairs)
  at `size` = (H, W) for one example.

  Example:
    >>> c = cost("unet", (("widths", (8, 16)),), 2, 1, (64, 64))
    >>> c.params > 0 and c.activation_bytes > 64 * 64 * 4
    True
  """
  abstract = nnx.eval_shape(lambda: build_model(
      model, num_classes=num_classes, in_channels=in_channels,
      **dict(kwargs)))
  graphdef, state = nnx.split(abstract)

  def forward(state, images):
    return nnx.merge(graphdef, state)(images)

  images = jax.ShapeDtypeStruct((1, *size, in_channels), jnp.float32)
  jaxpr = jax.make_jaxpr(forward)(state, images)
  params = sum(math.prod(x.shape) for x in jax.tree.leaves(state))
  return Cost(params=int(params), activation_bytes=_jaxpr_bytes(jaxpr.jaxpr),
              forward_gflops=program_flops(forward, state, images) / 1e9)
