"""XLA:CPU levers on the UNet train step, each beside PyTorch in one run.

  python benchmarks/cpu_levers.py [--size=256 --batch=8 --steps=3 --rounds=1]

For every lever (XLA flags added to the environment's), a fresh process
measures the JAX fp32 train step of `train_throughput.py` (UNet 16-32-64-128
GroupNorm, Dice+CE, AdamW); each round also measures the PyTorch twin in
channels_last, so every lever is read against the same machine state.
Prints img/s, the ratio to the baseline and the ratio to PyTorch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

LEVERS = {
    "baseline": "",
    "oneDNN fusions (xla_cpu_use_onednn)": "--xla_cpu_use_onednn=true",
    "oneDNN custom calls": "--xla_cpu_experimental_onednn_custom_call=true",
    "XNNPACK graph fusion (greedy)":
        "--xla_cpu_experimental_xnn_graph_fusion_mode="
        "XNN_GRAPH_FUSION_MODE_GREEDY",
    "XNNPACK off": "--xla_cpu_use_xnnpack=false",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "tiling propagation": "--xla_cpu_experimental_enable_tiling_propagation=true",
}


def _measure(which: str, flags: str, args) -> float:
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), flags)
                              if f)
  out = subprocess.run(
      [sys.executable, "benchmarks/train_throughput.py", f"--only={which}",
       f"--size={args.size}", f"--batch={args.batch}",
       f"--steps={args.steps}"], env=env, capture_output=True, text=True,
      check=False)
  for line in out.stdout.splitlines():
    if line.startswith("IMG_PER_S "):
      return float(line.split()[1])
  print(f"  {which} with {flags!r} failed: {out.stderr[-500:]}")
  return float("nan")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=1)
  args = parser.parse_args()
  jax_rates = {k: [] for k in LEVERS}
  torch_rates = []
  for _ in range(args.rounds):
    torch_rates.append(_measure("torch_cl", "", args))
    for name, flags in LEVERS.items():
      jax_rates[name].append(_measure("jax", flags, args))
      print(f"  {name}: {jax_rates[name][-1]:.3f} img/s", flush=True)
  torch_cl = float(np.nanmedian(torch_rates))
  base = float(np.nanmedian(jax_rates["baseline"]))
  print(f"UNet 16-32-64-128 GroupNorm, {args.size}x{args.size}x1, batch "
        f"{args.batch}, fp32 train step; PyTorch channels_last "
        f"{torch_cl:.3f} img/s")
  for name, rates in jax_rates.items():
    rate = float(np.nanmedian(rates))
    print(f"  {name:40} {rate:7.3f} img/s  x{rate / base:5.2f} of baseline"
          f"  x{rate / torch_cl:5.2f} of PyTorch channels_last")


if __name__ == "__main__":
  main()
