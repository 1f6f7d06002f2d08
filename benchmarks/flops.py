"""FLOPs of a jitted program, counted the same way on every backend.

XLA:GPU's cost analysis leaves out the convolutions it hands to cuDNN as
library calls: on an H200 (2026-11-30) it reported 0.06 GFLOP per image for
the UNet forward that XLA:CPU counts as 4.60. FLOPs are a property of the
program, not of the device, so on any other backend they are counted by
compiling the same program for the host CPU (shapes only, nothing runs).
"""

from __future__ import annotations

import jax


def _cost_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def program_flops(fn, *args, compiled=None) -> float:
  """XLA:CPU's FLOP count of `fn(*args)`.

  `compiled`: the program already compiled for the default backend; its own
  count is used when that backend is the CPU (no second compilation).
  """
  if compiled is not None and jax.default_backend() == "cpu":
    return _cost_flops(compiled)
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  specs = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args)
  return _cost_flops(jax.jit(fn).lower(*specs).compile())
