"""The zoo listing: every registered architecture x encoder, with parameter
count and FLOPs at a given input size (`python main.py --mode=zoo`).

Models are built abstractly (nnx.eval_shape: no weights are allocated) and
their forward pass is lowered, not compiled; FLOPs are XLA's HLO cost
analysis of that lowering (multiply-adds count as 2): `program_flops`, which
the benchmarks use too.
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
  """Number of trainable parameters (nnx.Param leaves) of `model`."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def program_flops(fn, *args) -> float:
  """FLOPs of the program `jax.jit(fn)(*args)`, the same on every backend.

  XLA's cost analysis of the lowered HLO, before any backend rewrites it:
  compiled counts are the backend's own (XLA:GPU leaves out the convolutions
  it hands to cuDNN, 0.06 against 4.60 GFLOP per image for a UNet forward on
  an H200; XLA:CPU counts depthwise-convolution gradients 2-11x over). The
  program is lowered for the host CPU from shapes alone (nothing runs),
  because a lowering for a PJRT plugin (CUDA, TPU) has no cost analysis.
  """
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  specs = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args)
  return float((jax.jit(fn).lower(*specs).cost_analysis() or {}).get(
      "flops", float("nan")))


def describe(architecture: str, encoder: str | None, *, size: int,
             in_channels: int, num_classes: int) -> dict:
  """One row of the zoo listing: architecture, encoder, parameters and
  FLOPs of one forward pass at `size` x `size`, built abstractly.
  """
  kwargs = {} if encoder is None else {"encoder": encoder}
  model = nnx.eval_shape(lambda: build_model(
      architecture, num_classes=num_classes, in_channels=in_channels,
      **kwargs))
  graphdef, state = nnx.split(model)
  x = jax.ShapeDtypeStruct((1, size, size, in_channels), jnp.float32)
  flops = program_flops(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
  return {"model": architecture, "encoder": encoder or "-",
          "params": count_params(model), "gflops": flops / 1e9}


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
