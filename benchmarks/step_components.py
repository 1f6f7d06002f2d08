"""Where the UNet train step's time goes: each layer's forward + backward,
JAX (XLA:CPU) beside PyTorch, at the shapes of the step in
`benchmarks/train_throughput.py --torch`.

  python benchmarks/step_components.py [--size=256 --batch=8 --repeats=5]

For every distinct layer of the UNet 16-32-64-128 (3x3 convolutions without
bias, GroupNorm(8) + ReLU, 2x2 max pooling, 2x2 stride-2 transposed
convolutions, the 1x1 head; pooling and transposed convolutions as
`models/layers.py` writes them, with the Flax layers they replaced on rows of
count 0) at its input shape: the milliseconds of one
forward + backward (gradients w.r.t. the input and the parameters, summed
output as the loss), best of --repeats, for the Flax NNX layer under jit and
the PyTorch layer in NCHW and channels_last; then each layer's count in the
network and the sum, next to the whole step of both frameworks. PyTorch is
the test extra (`benchmarks/torch_twin.py`). The sum of layer costs against
the whole step says how much the step loses between layers (fusion,
layout changes, the optimiser).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from chameleon_jax.models import layers

GROUPS, EPS = 8, 1e-6


def best_ms(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return 1e3 * best


def unet_layers(size: int, widths=(16, 32, 64, 128)):
  """(name, count in the network, input shape NHWC without batch, kind, args)."""
  out = []
  cin = 1
  for i, w in enumerate(widths):
    s = size >> i
    out.append((f"conv3x3 {cin}->{w} @{s}", 1, (s, s, cin), "conv", (cin, w)))
    out.append((f"conv3x3 {w}->{w} @{s}", 1, (s, s, w), "conv", (w, w)))
    out.append((f"groupnorm+relu {w} @{s}", 2, (s, s, w), "norm", (w,)))
    if i < len(widths) - 1:
      out.append((f"maxpool 2x2 {w} @{s}", 1, (s, s, w), "pool", (w,)))
      out.append((f"  nnx.max_pool (replaced) {w} @{s}", 0, (s, s, w),
                  "pool_nnx", (w,)))
    cin = w
  for i in range(len(widths) - 2, -1, -1):
    w, low, s = widths[i], widths[i + 1], size >> i
    out.append((f"convT2x2 {low}->{w} @{s // 2}", 1, (s // 2, s // 2, low),
                "up", (low, w)))
    out.append((f"  nnx.ConvTranspose (replaced) {low}->{w} @{s // 2}", 0,
                (s // 2, s // 2, low), "up_nnx", (low, w)))
    out.append((f"conv3x3 {2 * w}->{w} @{s}", 1, (s, s, 2 * w), "conv",
                (2 * w, w)))
    out.append((f"conv3x3 {w}->{w} @{s}", 1, (s, s, w), "conv", (w, w)))
    out.append((f"groupnorm+relu {w} @{s} (dec)", 2, (s, s, w), "norm", (w,)))
  out.append((f"head 1x1 {widths[0]}->4 @{size}", 1, (size, size, widths[0]),
              "head", (widths[0], 4)))
  return out


class NormRelu(nnx.Module):
  def __init__(self, features: int):
    self.norm = nnx.GroupNorm(features, num_groups=min(GROUPS, features),
                              epsilon=EPS, rngs=nnx.Rngs(0))

  def __call__(self, x):
    return nnx.relu(self.norm(x))


class MaxPool(nnx.Module):
  def __init__(self, original: bool):
    self.original = original

  def __call__(self, x):
    if self.original:
      return nnx.max_pool(x, (2, 2), strides=(2, 2))
    return layers.max_pool2x2(x)


def jax_layer(kind: str, args) -> nnx.Module:
  rngs = nnx.Rngs(0)
  if kind == "conv":
    return nnx.Conv(*args, (3, 3), use_bias=False, rngs=rngs)
  if kind == "head":
    return nnx.Conv(*args, (1, 1), rngs=rngs)
  if kind == "up":
    return layers.UpConv2x2(*args, rngs=rngs)
  if kind == "up_nnx":
    return nnx.ConvTranspose(*args, (2, 2), strides=(2, 2), rngs=rngs)
  if kind == "norm":
    return NormRelu(args[0])
  if kind in ("pool", "pool_nnx"):
    return MaxPool(kind == "pool_nnx")
  raise ValueError(kind)


def jax_fwd_bwd(kind: str, args, shape, batch: int):
  graphdef, params = nnx.split(jax_layer(kind, args))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch,) + shape),
                  jnp.float32)
  step = jax.jit(jax.grad(lambda p, v: nnx.merge(graphdef, p)(v).sum(),
                          argnums=(0, 1)))
  return lambda: jax.block_until_ready(step(params, x))


def torch_fwd_bwd(kind: str, args, shape, batch: int, channels_last: bool):
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  if kind == "conv":
    layer = nn.Conv2d(*args, 3, padding=1, bias=False)
  elif kind == "head":
    layer = nn.Conv2d(*args, 1)
  elif kind in ("up", "up_nnx"):
    layer = nn.ConvTranspose2d(*args, 2, stride=2)
  elif kind == "norm":
    layer = nn.Sequential(nn.GroupNorm(min(GROUPS, args[0]), args[0], eps=EPS),
                          nn.ReLU())
  else:
    layer = nn.MaxPool2d(2)
  h, w, c = shape
  x = torch.randn(batch, c, h, w)
  if channels_last:
    layer = layer.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  x.requires_grad_(True)

  def run():
    layer.zero_grad(set_to_none=True)
    x.grad = None
    layer(x).sum().backward()
  return run


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel
  print(f"UNet layers, forward + backward, batch {args.batch}, float32, best "
        f"of {args.repeats}; jax {jax.__version__} ({jax.devices()[0].platform})"
        f", torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
  print("| layer | count | jax ms | torch NCHW ms | torch channels_last ms | "
        "jax / channels_last |")
  print("| --- | --- | --- | --- | --- | --- |")
  totals = np.zeros(3)
  kinds: dict[str, np.ndarray] = {}
  for name, count, shape, kind, largs in unet_layers(args.size):
    ms = np.array([
        best_ms(jax_fwd_bwd(kind, largs, shape, args.batch), args.repeats),
        best_ms(torch_fwd_bwd(kind, largs, shape, args.batch, False),
                args.repeats),
        best_ms(torch_fwd_bwd(kind, largs, shape, args.batch, True),
                args.repeats)])
    totals += count * ms
    if count:
      kinds[kind] = kinds.get(kind, np.zeros(3)) + count * ms
    print(f"| {name} | {count} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | "
          f"{ms[0] / ms[2]:.2f}x |", flush=True)
  for kind, ms in kinds.items():
    print(f"| all {kind} | | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | "
          f"{ms[0] / ms[2]:.2f}x |")
  print(f"| sum of layers | | {totals[0]:.1f} | {totals[1]:.1f} | "
        f"{totals[2]:.1f} | {totals[0] / totals[2]:.2f}x |")
  from benchmarks.train_throughput import jax_runner, torch_runner  # noqa: E402  pylint: disable=import-outside-toplevel
  steps = 3
  whole = [1e3 * jax_runner("float32", args.size, args.batch)[0](steps) / steps,
           1e3 * torch_runner(args.size, args.batch, False)(steps) / steps,
           1e3 * torch_runner(args.size, args.batch, True)(steps) / steps]
  print(f"| whole train step (AdamW, Dice+CE) | | {whole[0]:.1f} | "
        f"{whole[1]:.1f} | {whole[2]:.1f} | {whole[0] / whole[2]:.2f}x |")


if __name__ == "__main__":
  main()
