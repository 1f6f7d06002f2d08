"""Per-model cost: forward and forward+backward time, FLOPs, peak memory.

  python benchmarks/models.py [--sizes=224,512 --batch=8 --repeats=3
      --models='fpn/resnet18,unet/-,classifier/*' --channels=3]

`--models` is a comma-separated list of globs on "architecture/encoder"
("unet/-" is the plain UNet); the default is every architecture with
ResNet-18 plus every encoder as a classifier. For each model and size: the
best of `repeats` wall-clock times of the jit-compiled forward pass
(inference mode) and of a training step's forward+backward (train mode,
cross-entropy, gradients w.r.t. all parameters); the program FLOPs of both
(listing.program_flops, the same on every backend); and the peak memory of
the forward+backward executable from XLA's buffer assignment (arguments +
outputs + temporaries, minus aliased; the same accounting on CPU and GPU).
Models whose peak exceeds `--max_memory_gb` are compiled and counted but not
timed.
"""

from __future__ import annotations

import argparse
import fnmatch
import os

import jax
from flax import nnx

from benchmarks.losses import best_ms  # noqa: E402
from chameleon_jax.losses import build_loss  # noqa: E402
from chameleon_jax.models import build_model, listing  # noqa: E402
from chameleon_jax.model_io.state import merge, model_variables

DEFAULT = ("unet/-,unet/resnet18,unetplusplus/resnet18,fpn/resnet18,"
           "deeplabv3plus/resnet18,segformer/resnet18,classifier/*")


def measure(architecture: str, encoder: str | None, size: int, batch: int,
            channels: int, repeats: int, max_memory_mb: float) -> dict:
  classify = architecture == "classifier"
  kwargs = {} if encoder is None else {"encoder": encoder}
  model = build_model(architecture, num_classes=1000 if classify else 2,
                      in_channels=channels, **kwargs)
  graphdef = nnx.graphdef(model)
  params, rest = model_variables(model)
  key = jax.random.key(0)
  x = jax.random.uniform(key, (batch, size, size, channels))
  y = (jax.random.randint(key, (batch,), 0, 1000) if classify else
       jax.random.randint(key, (batch, size, size), 0, 2))
  ce = build_loss("cross_entropy")

  forward = jax.jit(lambda p, r, x: merge(graphdef, p, r)(x))

  def loss(p, r, x, y):
    logits = merge(graphdef, p, r)(x, train=True)
    return ce(logits[0] if isinstance(logits, list) else logits, y)

  backward = jax.jit(jax.grad(loss))
  fwd_c = forward.lower(params, rest, x).compile()
  bwd_c = backward.lower(params, rest, x, y).compile()
  mem = bwd_c.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes +
          mem.temp_size_in_bytes - mem.alias_size_in_bytes) if mem else 0
  fits = peak / 2**20 <= max_memory_mb  # Else running it would swap or OOM.
  return {
      "params": listing.count_params(model),
      "forward_ms": (best_ms(fwd_c, params, rest, x, repeats=repeats)
                     if fits else None),
      "train_ms": (best_ms(bwd_c, params, rest, x, y, repeats=repeats)
                   if fits else None),
      "forward_gflops": listing.program_flops(forward, params, rest, x) / 1e9,
      "train_gflops": listing.program_flops(backward, params, rest, x,
                                            y) / 1e9,
      "peak_mb": peak / 2**20}


def _ms(value: float) -> str:
  """Milliseconds to 3 significant digits at least (GPU steps are ~1 ms)."""
  return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--models", default=DEFAULT)
  parser.add_argument("--sizes", default="224,512")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
      "--max_memory_gb", type=float,
      default=0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
      / 2**30,
      help="skip timing (report FLOPs and memory only) when XLA's peak for "
      "the training step exceeds this; default 60%% of physical memory")
  args = parser.parse_args()
  patterns = args.models.split(",")
  chosen = [(a, e) for a, e in listing.entries()
            if any(fnmatch.fnmatch(f"{a}/{e or '-'}", p) for p in patterns)]
  print(f"devices: {jax.devices()}; batch {args.batch}, {args.channels} "
        "channels, float32")
  print("| model | encoder | size | params | forward ms | fwd+bwd ms | "
        "forward GFLOP | fwd+bwd GFLOP | peak MB (fwd+bwd) |")
  print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for size in map(int, args.sizes.split(",")):
    for architecture, encoder in chosen:
      r = measure(architecture, encoder, size, args.batch, args.channels,
                  args.repeats, args.max_memory_gb * 1024)
      ms = [_ms(r[k]) if r[k] is not None else "not run (memory)"
            for k in ("forward_ms", "train_ms")]
      print(f"| {architecture} | {encoder or '-'} | {size} | "
            f"{r['params']:,} | {ms[0]} | {ms[1]} | "
            f"{r['forward_gflops']:.1f} | {r['train_gflops']:.1f} | "
            f"{r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
