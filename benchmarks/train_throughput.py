"""Training throughput of the UNet: step images/s, FLOPs, fraction of peak.

  python benchmarks/train_throughput.py [--size=256 --batch=8 --steps=20]
  python benchmarks/train_throughput.py --size=128 --batch=16 \
      --widths=16,32,64,128 --widths=8,16,32,64,128,256 [--norms=group,batch]
  python benchmarks/train_throughput.py --torch [--size=256 --batch=8
      --steps=5 --rounds=3]

Prints, measured side by side in one run, for fp32 and bf16 compute:
  - train-step images/s (forward + backward + AdamW update);
  - model FLOPs per image (of the forward, and of the whole train step:
    listing.program_flops, the same on every backend);
  - achieved FLOP/s as a fraction of a dense matmul peak measured in the same
    run at the same dtype;
and the Grain input pipeline's images/s (with augmentation) at 0, 1 and 2
worker processes (--workers), next to what the fp32 step consumes.

With --widths (repeated), only the fp32 train step of each plain-UNet width
list instead, for each normalisation in --norms (group, batch, none), side by
side, as img/s and as a ratio to the first.

With --pipeline_only, only the Grain input pipeline (read, decode, crop,
augment, batch) of a synthetic grey dataset at --size and --batch, for each
augmentation preset in --presets and each worker count in --workers: img/s,
host milliseconds per image per core (0 workers: one process does it all),
and the projection to --cores host cores against --consume img/s (the H200
step's 3,275 img/s at batch 64 in RESULTS, times 3: issue 38's goal).

With --torch, only the fp32 train step against its PyTorch twin
(benchmarks/torch_twin.py, test extra; NCHW and channels_last), in
--rounds interleaved rounds of --steps steps: img/s and the JAX/PyTorch
ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from chameleon_jax.data import augment, dataset, pipeline, sources
from chameleon_jax.losses import build_loss
from chameleon_jax.models import build_model
from chameleon_jax.models.listing import program_flops
from chameleon_jax import sharding
from chameleon_jax.model_io import state as state_lib
from chameleon_jax.train import optim, steps


def matmul_peak(dtype, n: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of an n x n x n matmul (best of `repeats`)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def jax_runner(dtype: str, size: int, batch: int,
               widths: tuple[int, ...] = (16, 32, 64, 128),
               norm: str = "group"):
  """The compiled train step on random data: (run(n) -> seconds for n
  steps, forward FLOPs per image, train-step FLOPs per image)."""
  mesh = sharding.make_mesh()
  model = build_model("unet", num_classes=4, in_channels=1, dtype=dtype,
                      widths=widths, norm=norm)
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=1000,
                                   warmup_steps=10, weight_decay=1e-4,
                                   grad_clip_norm=1.0)
  graphdef, state = state_lib.create(model, tx, use_ema=False)
  state = sharding.replicate(state, mesh)
  rng = np.random.default_rng(0)
  host = {"image": rng.random((batch, size, size, 1), np.float32),
          "mask": rng.integers(0, 4, (batch, size, size)).astype(np.int32)}
  batch_arrays = sharding.shard_batch(host, mesh)
  train_step = jax.jit(steps.make_train_step(graphdef, build_loss("dice_ce"),
                                             tx, None), donate_argnums=0)
  compiled = train_step.lower(state, batch_arrays).compile()
  step_flops = program_flops(train_step, state, batch_arrays) / batch
  fwd_flops = program_flops(
      lambda p, s, x: state_lib.merge(graphdef, p, s)(x), state.params,
      state.model_state, batch_arrays["image"]) / batch
  holder = {"state": state}
  state, m = compiled(holder.pop("state"), batch_arrays)
  jax.block_until_ready(m)
  holder["state"] = state

  def run(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
      holder["state"], m = compiled(holder["state"], batch_arrays)
    jax.block_until_ready(m)
    return time.perf_counter() - t
  return run, fwd_flops, step_flops


def step_throughput(dtype: str, size: int, batch: int, n_steps: int,
                    widths: tuple[int, ...] = (16, 32, 64, 128),
                    norm: str = "group"):
  run, fwd_flops, step_flops = jax_runner(dtype, size, batch, widths, norm)
  return n_steps * batch / run(n_steps), fwd_flops, step_flops


def torch_runner(size: int, batch: int, channels_last: bool,
                 widths: tuple[int, ...] = (16, 32, 64, 128)):
  """The PyTorch twin's train step (benchmarks/torch_twin.py: the same
  model, Dice+CE, AdamW with weight decay 1e-4 and gradient clipping at
  1.0), float32 on random data: run(n) -> seconds for n steps."""
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_twin  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = torch_twin.UNet(4, 1, widths)
  x = torch.rand(batch, 1, size, size)
  y = torch.randint(0, 4, (batch, size, size))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = torch_twin.dice_ce(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
  step()

  def run(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
      step()
    return time.perf_counter() - t
  return run


def compare_torch(size: int, batch: int, n_steps: int, rounds: int) -> None:
  """JAX against the PyTorch twin (NCHW, channels_last), float32, in
  interleaved rounds so that all three see the same machine."""
  import torch  # pylint: disable=import-outside-toplevel
  runners = {"jax (XLA:CPU)": jax_runner("float32", size, batch)[0],
             "pytorch NCHW": torch_runner(size, batch, False),
             "pytorch channels_last": torch_runner(size, batch, True)}
  rates = {k: [] for k in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      rates[name].append(n_steps * batch / run(n_steps))
  print(f"UNet 16-32-64-128 GroupNorm, {size}x{size}x1, batch {batch}, "
        f"Dice+CE, AdamW, float32; {rounds} interleaved rounds of "
        f"{n_steps} steps; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads:")
  ours = float(np.median(rates["jax (XLA:CPU)"]))
  for name, values in rates.items():
    median = float(np.median(values))
    print(f"  {name:22} {median:7.2f} img/s (rounds: "
          f"{', '.join(f'{v:.2f}' for v in values)})  jax / this: "
          f"{ours / median:.2f}x")


def pipeline_throughput(size: int, batch: int, workers: int, n_batches: int,
                        ds, preset: str = "default") -> float:
  it = pipeline.train_iterator(
      ds, split="train", local_batch_size=batch, seed=0, size=(size, size),
      size_policy="resize",
      augment=augment.from_preset(preset, crop_size=(size, size)),
      num_workers=workers)
  next(it)  # Start-up (worker processes) excluded.
  t = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  return n_batches * batch / (time.perf_counter() - t)


def synthetic_dataset(tmp: str, size: int, num_images: int = 120):
  info, items = sources.synthetic_source(
      num_images=num_images, seed=0, channels=1, min_size=(size, size),
      max_size=(size, size))
  return dataset.build(info, items, tmp, "bench",
                       dataset.IngestOptions({"train": 1.0}),
                       log=lambda *_: None)


def compare_pipelines(size: int, batch: int, n_batches: int,
                      workers_list: list[int], presets: list[str],
                      cores: int, consume: float) -> None:
  print(f"Grain input pipeline, synthetic grey {size}x{size} PNG records, "
        f"batch {batch}, {n_batches} batches per figure:")
  print(f"| preset | workers | img/s | host ms/img/core | projected on "
        f"{cores} cores | / {consume:.0f} img/s |")
  print("| --- | --- | --- | --- | --- | --- |")
  with tempfile.TemporaryDirectory() as tmp:
    ds = synthetic_dataset(tmp, size)
    for preset in presets:
      for workers in workers_list:
        ips = pipeline_throughput(size, batch, workers, n_batches, ds, preset)
        used = max(workers, 1)  # 0 workers: the main process alone.
        per_core = ips / used
        print(f"| {preset} | {workers} | {ips:.0f} | {1e3 / per_core:.2f} | "
              f"{cores * per_core:.0f} | {cores * per_core / consume:.2f}x |",
              flush=True)


def compare_widths(specs: list[str], norms: list[str], size: int, batch: int,
                   n_steps: int):
  print(f"UNet widths and normalisation, {size}x{size}x1, batch {batch}, "
        "Dice+CE, AdamW, float32 train step:")
  first = None
  for spec in specs:
    widths = tuple(int(w) for w in spec.split(","))
    for norm in norms:
      ips, fwd, _ = step_throughput("float32", size, batch, n_steps, widths,
                                    norm)
      first = first or ips
      print(f"  {spec:24} {norm:6} {ips:7.2f} img/s  {ips / first:5.2f}x  "
            f"forward {fwd / 1e9:.2f} GFLOP/img")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--pipeline_batches", type=int, default=30)
  parser.add_argument("--workers", default="0,1,2",
                      help="comma-separated Grain worker counts to measure; "
                      "empty: skip the input pipeline")
  parser.add_argument("--widths", action="append", default=[],
                      help="comma-separated UNet widths; repeat to compare")
  parser.add_argument("--torch", action="store_true",
                      help="only JAX against the PyTorch twin, interleaved")
  parser.add_argument("--rounds", type=int, default=3,
                      help="with --torch: interleaved rounds")
  parser.add_argument("--only", default="",
                      choices=["", "jax", "torch_nchw", "torch_cl"],
                      help="one fp32 train step's img/s, printed as "
                      "'IMG_PER_S <value>' (benchmarks/cpu_levers.py)")
  parser.add_argument("--pipeline_only", action="store_true",
                      help="only the input pipeline, per preset and workers")
  parser.add_argument("--presets", default="none,default",
                      help="with --pipeline_only: augmentation presets")
  parser.add_argument("--cores", type=int, default=16,
                      help="with --pipeline_only: host cores to project to")
  parser.add_argument("--consume", type=float, default=3 * 3275.0,
                      help="with --pipeline_only: img/s the step consumes")
  parser.add_argument("--norms", default="group",
                      help="with --widths: comma-separated normalisations "
                      "(group, batch, none) to compare for each width list")
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags.

  if args.pipeline_only:
    compare_pipelines(args.size, args.batch, args.pipeline_batches,
                      [int(w) for w in args.workers.split(",") if w],
                      args.presets.split(","), args.cores, args.consume)
    return
  if args.only:
    run = (jax_runner("float32", args.size, args.batch)[0]
           if args.only == "jax" else
           torch_runner(args.size, args.batch, args.only == "torch_cl"))
    print(f"IMG_PER_S {args.steps * args.batch / run(args.steps):.4f}")
    return
  print(f"devices: {jax.devices()}")
  if args.torch:
    compare_torch(args.size, args.batch, args.steps, args.rounds)
    return
  if args.widths:
    compare_widths(args.widths, args.norms.split(","), args.size, args.batch,
                   args.steps)
    return
  print(f"UNet 16-32-64-128 GroupNorm, {args.size}x{args.size}x1, batch "
        f"{args.batch}, Dice+CE, AdamW\n")
  rows = []
  for dtype, mm_dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    peak = matmul_peak(mm_dtype)
    ips, fwd, step = step_throughput(dtype, args.size, args.batch, args.steps)
    rows.append((dtype, ips, fwd, step, peak, ips * step / peak))
  print(f"{'compute':9} {'img/s':>8} {'fwd GFLOP/img':>14} "
        f"{'step GFLOP/img':>15} {'matmul peak GFLOP/s':>20} {'fraction':>9}")
  for dtype, ips, fwd, step, peak, frac in rows:
    print(f"{dtype:9} {ips:8.2f} {fwd / 1e9:14.2f} {step / 1e9:15.2f} "
          f"{peak / 1e9:20.1f} {frac:9.3f}")

  workers_list = [int(w) for w in args.workers.split(",") if w]
  if not workers_list:
    return
  with tempfile.TemporaryDirectory() as tmp:
    ds = synthetic_dataset(tmp, args.size)
    print(f"\ninput pipeline (decode + augment + batch), {args.size}px:")
    for workers in workers_list:
      ips = pipeline_throughput(args.size, args.batch, workers,
                                args.pipeline_batches, ds)
      print(f"  {workers} workers: {ips:8.1f} img/s  (fp32 step consumes "
            f"{rows[0][1]:.1f} img/s: {ips / rows[0][1]:.1f}x headroom)")


if __name__ == "__main__":
  main()
