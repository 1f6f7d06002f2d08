"""The machine a plan is made for: devices, memory, a measured compute speed.

`measure()` times a small reference training step (a plain UNet forward and
backward pass on a 2 x 128 x 128 grey batch) on this machine's default
backend and divides by the step's FLOPs (XLA's cost analysis of the lowered
program, models/listing.py): seconds per GFLOP of convolutional training,
from which the planner estimates any candidate model's step time. The
profile is written beside the plan (`plan/machine.json`); giving it back
(`plan.machine_profile`) plans for that machine without measuring, which
makes a plan reproducible byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from chameleon_jax.models import build_model
from chameleon_jax.models.listing import program_flops

REFERENCE = {"model": "unet", "widths": (8, 16, 32, 64), "batch": 2,
             "size": 128, "channels": 1, "timed_steps": 5}


@dataclasses.dataclass(frozen=True)
class MachineProfile:
  """What the planner needs of a machine (module docstring).

  `memory_bytes` is one device's memory (the host's RAM on CPU);
  `seconds_per_gflop` the reference training step's seconds per GFLOP.
  """
  platform: str
  device_kind: str
  devices: int
  memory_bytes: int
  cpu_count: int
  seconds_per_gflop: float

  def to_json(self) -> str:
    """Canonical text (sorted keys), as plan/machine.json holds it."""
    return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> "MachineProfile":
    """A profile written by `to_json`.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: the file lacks a field or has unknown ones (both named).
    """
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"plan.machine_profile {path}: no such file "
                              "(a plan/machine.json written by --mode=plan).")
    values = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(cls)}
    if set(values) != fields:
      raise ValueError(
          f"{path}: fields {sorted(set(values) ^ fields)} are missing or "
          f"unknown; a machine profile has exactly {sorted(fields)}.")
    return cls(**values)


def _device_memory(device) -> int:
  if device.platform == "cpu":
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
  stats = device.memory_stats() or {}
  return int(stats.get("bytes_limit", 0))


def _three_significant(value: float) -> float:
  return float(f"{value:.3g}")


def _usable_cores() -> int:
  """The cores this process may run on (a cpuset or taskset counts, where
  the OS reports affinity), else the machine's."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def measure(log=print) -> MachineProfile:
  """Profiles this machine (module docstring); takes a few seconds."""
  ref = REFERENCE
  device = jax.devices()[0]
  model = build_model(ref["model"], num_classes=2,
                      in_channels=ref["channels"], widths=ref["widths"])
  graphdef, state = nnx.split(model)

  def step(state, images):
    def loss(state):
      logits = nnx.merge(graphdef, state)(images)
      return jnp.mean(jnp.square(logits))
    grads = jax.grad(loss)(state)
    return jax.tree.map(lambda p, g: p - 1e-3 * g, state, grads)

  images = jnp.ones((ref["batch"], ref["size"], ref["size"], ref["channels"]))
  flops = program_flops(step, state, images)
  jitted = jax.jit(step)
  jax.block_until_ready(jitted(state, images))  # Compiles.
  times = []
  for _ in range(ref["timed_steps"]):
    start = time.perf_counter()
    jax.block_until_ready(jitted(state, images))
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  profile = MachineProfile(
      platform=device.platform, device_kind=device.device_kind,
      devices=jax.device_count(), memory_bytes=_device_memory(device),
      cpu_count=_usable_cores(),
      seconds_per_gflop=_three_significant(seconds / (flops / 1e9)))
  log(f"machine: {profile.device_kind} x {profile.devices}, reference step "
      f"{seconds * 1e3:.1f} ms for {flops / 1e9:.2f} GFLOP -> "
      f"{profile.seconds_per_gflop:g} s/GFLOP")
  return profile
