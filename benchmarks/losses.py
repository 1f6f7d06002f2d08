"""Cost of every loss and its gradient, next to a UNet forward pass.

  python benchmarks/losses.py [--batch=8 --size=512 --repeats=5]

For K = 2 and K = 6 classes on (batch, size, size, K) float32 logits: the
milliseconds of loss(value) and value_and_grad (jit-compiled, best of
`repeats`), and of the default UNet forward pass on (batch, size, size, 1)
images in the same run.
"""

from __future__ import annotations

import argparse
import time

import jax

from chameleon_jax.losses import build_loss
from chameleon_jax.models import build_model

LOSSES = [("cross_entropy", {}), ("focal", {}), ("dice", {}),
          ("dice", {"variant": "squared"}), ("jaccard", {}), ("tversky", {}),
          ("focal_tversky", {}), ("generalized_dice", {}), ("lovasz", {}),
          ("boundary", {}), ("dice_ce", {}), ("dice_focal", {})]


def best_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best * 1e3


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  b, s = args.batch, args.size
  print(f"devices: {jax.devices()}; inputs ({b}, {s}, {s}, K) float32")
  key = jax.random.key(0)
  for k in (2, 6):
    model = build_model("unet", num_classes=k, in_channels=1)
    images = jax.random.uniform(key, (b, s, s, 1))
    forward = jax.jit(lambda x: model(x))
    print(f"\nK = {k}: UNet 16-32-64-128 forward "
          f"{best_ms(forward, images, repeats=args.repeats):9.1f} ms")
    logits = jax.random.normal(key, (b, s, s, k))
    labels = jax.random.randint(jax.random.key(1), (b, s, s), 0, k)
    print(f"{'loss':28} {'value ms':>10} {'value+grad ms':>14}")
    for name, kwargs in LOSSES:
      loss = build_loss(name, **kwargs)
      value = jax.jit(loss)
      grad = jax.jit(jax.value_and_grad(loss))
      label = name + (f"({kwargs['variant']})" if kwargs else "")
      print(f"{label:28} {best_ms(value, logits, labels, repeats=args.repeats):10.1f} "
            f"{best_ms(grad, logits, labels, repeats=args.repeats):14.1f}")


if __name__ == "__main__":
  main()
