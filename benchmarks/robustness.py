"""Corruption throughput and attack cost, side by side with the references.

  python benchmarks/robustness.py [--reference-python=/tmp/refvenv/bin/python]

1. Every ImageNet-C corruption (15 + 4 extras) and production-line
   perturbation, jit-compiled, on a batch of 32 RGB 224x224 natural-statistics
   images: images/s (best of --repeats, compilation excluded).
   With --reference-python (a venv holding imagecorruptions 1.1.2, see
   benchmarks/reference_corruptions.py), the reference runs in the same
   invocation on --reference-images of the same images, one image at a time
   as it must, and the table shows its ms/image, the speed-up per image
   (goal: >= 10x for every corruption) and both PSNRs on the same
   --reference-images images (fidelity).
2. PGD-10 (L-inf) on the default UNet (1 channel, 256x256, batch 8) next to
   one forward+backward pass of the same loss w.r.t. the input (goal: < 11x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]

from chameleon_jax import robustness  # noqa: E402,F401  (registers)
from chameleon_jax.models import build_model  # noqa: E402
from chameleon_jax.robustness import attacks  # noqa: E402
from chameleon_jax.robustness import corruptions as C  # noqa: E402
from chameleon_jax.robustness.natural import natural_images  # noqa: E402


def best_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile + warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(
      len(a), -1).mean(1)
  return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12))))


def reference(python: str, images: np.ndarray, names: list[str]) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    np.save(Path(tmp) / "images.npy", images)
    subprocess.run([python, str(REPO / "benchmarks" / "reference_corruptions.py"),
                    str(Path(tmp) / "images.npy"), str(Path(tmp) / "out.json"),
                    *names],
                   check=True)
    return json.loads((Path(tmp) / "out.json").read_text())


def corruption_table(args) -> None:
  images = natural_images(args.batch, 224, 224, 3, seed=0)
  x = jnp.asarray(images)
  keys = jax.random.split(jax.random.key(0), args.batch)
  ref = (reference(args.reference_python, images[:args.reference_images],
                   args.only)
         if args.reference_python else {})
  print(f"\n## Corruptions: batch {args.batch} x 224x224x3 uint8, "
        f"{jax.devices()[0].platform}, best of {args.repeats}")
  print("| corruption | group | ours img/s | ours ms/img | reference ms/img | "
        "speed-up | PSNR ours sev1..5 | PSNR reference sev1..5 |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for name in args.only or C.names():
    seconds, scores = 0.0, []
    for severity in C.SEVERITIES:
      fn = jax.jit(lambda k, v, n=name, s=severity: C.apply(n, s, k, v))
      seconds += best_time(fn, keys, x, repeats=args.repeats)
      n = args.reference_images if ref else args.batch  # same images
      scores.append(psnr(np.asarray(fn(keys, x))[:n], images[:n]))
    ms = 1e3 * seconds / (len(C.SEVERITIES) * args.batch)
    r = ref.get(name)
    print(f"| {name} | {C.spec(name).group} | {1e3 / ms:.0f} | {ms:.3f} | "
          + (f"{r['ms_per_image']:.2f} | {r['ms_per_image'] / ms:.1f}x | "
             if r else "- | - | ")
          + " ".join(f"{v:.1f}" for v in scores) + " | "
          + (" ".join(f"{v:.1f}" for v in r["psnr"]) if r else "-") + " |")
    sys.stdout.flush()


def attack_cost(args) -> None:
  model = build_model("unet", num_classes=2, in_channels=1, seed=0)
  from flax import nnx
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(8, 256, 256, 1)), jnp.float32)
  masks = jnp.asarray(rng.integers(0, 2, (8, 256, 256)))

  def loss_fn(st):
    return attacks.segmentation_loss(
        lambda z: nnx.merge(graphdef, st)(z, train=False))

  grad = jax.jit(lambda st, z, t: jax.grad(
      lambda v: loss_fn(st)(v, t).sum())(z))
  pgd = jax.jit(lambda st, z, t, k: attacks.pgd(loss_fn(st), z, t, 8 / 255, k,
                                                steps=10))
  t_grad = best_time(grad, state, x, masks, repeats=args.repeats)
  t_pgd = best_time(pgd, state, x, masks, jax.random.key(0),
                    repeats=args.repeats)
  print("\n## PGD-10 vs one forward+backward (UNet 16-32-64-128, 8x256x256x1)")
  print("| step | ms | ratio |")
  print("| --- | --- | --- |")
  print(f"| forward+backward w.r.t. the input | {1e3 * t_grad:.4g} | 1.00 |")
  print(f"| PGD-10 (L-inf, random start) | {1e3 * t_pgd:.4g} | "
        f"{t_pgd / t_grad:.2f} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--reference-python", default="")
  parser.add_argument("--reference-images", type=int, default=8)
  parser.add_argument("--only", nargs="*", default=[],
                      help="corruption names (default: all)")
  parser.add_argument("--skip-attacks", action="store_true")
  parser.add_argument("--skip-corruptions", action="store_true")
  args = parser.parse_args()
  if not args.skip_corruptions:
    corruption_table(args)
  if not args.skip_attacks:
    attack_cost(args)


if __name__ == "__main__":
  main()
