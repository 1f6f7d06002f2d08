"""The zoo listing: every registered architecture x encoder, with parameter
count and FLOPs at a given input size (`python main.py --mode=zoo`).

Models are built abstractly (nnx.eval_shape: no weights are allocated) and
their forward pass is lowered, not compiled; FLOPs are XLA's HLO cost
analysis of that lowering (multiply-adds count as 2).
"""

from __future__ import annotations

import fnmatch
from typing import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models import build_model
from chameleon_jax.registry import ENCODERS, MODELS


def entries() -> Iterator[tuple[str, str | None]]:
  """(architecture, encoder) for every buildable combination."""
  yield "unet", None  # The plain UNet.
  for architecture in MODELS.names():
    for encoder in ENCODERS.names():
      yield architecture, encoder


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def describe(architecture: str, encoder: str | None, *, size: int,
             in_channels: int, num_classes: int) -> dict:
  kwargs = {} if encoder is None else {"encoder": encoder}
  model = nnx.eval_shape(lambda: build_model(
      architecture, num_classes=num_classes, in_channels=in_channels,
      **kwargs))
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((1, size, size, in_channels), jnp.float32)
  lowered = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, x)
  cost = lowered.cost_analysis() or {}
  return {"model": architecture, "encoder": encoder or "-",
          "params": count_params(model), "gflops": cost.get("flops", 0) / 1e9}


def table(size: int = 224, in_channels: int = 3, num_classes: int = 2,
          pattern: str = "*") -> str:
  """A Markdown table of the zoo; `pattern` filters "architecture/encoder"."""
  lines = [f"Input 1x{size}x{size}x{in_channels}, {num_classes} classes.",
           "", "| model | encoder | parameters | GFLOPs |",
           "| --- | --- | ---: | ---: |"]
  for architecture, encoder in entries():
    if not fnmatch.fnmatch(f"{architecture}/{encoder or '-'}", pattern):
      continue
    try:
      row = describe(architecture, encoder, size=size,
                     in_channels=in_channels, num_classes=num_classes)
    except ValueError as e:  # e.g. a size the architecture cannot take.
      lines.append(f"| {architecture} | {encoder or '-'} | n/a | {e} |")
      continue
    lines.append(f"| {row['model']} | {row['encoder']} | {row['params']:,} | "
                 f"{row['gflops']:.2f} |")
  return "\n".join(lines)
