"""A PyTorch twin of the plain UNet, its loss and its optimiser (test extra).

Layer for layer the model of `chameleon_jax.models.unet.UNet`: per-channel
input normalisation, per level two (3x3 conv without bias -> GroupNorm
(gcd(width, 8) groups, eps 1e-6 as Flax's) -> ReLU), 2x2 max pooling, 2x2
stride-2 transposed convolutions with bias, concatenation with the skip, a
1x1 head with bias. `copy_from` copies an NNX model's parameters into it, so
`tests/test_torch_twin.py` can check equal parameter counts, equal outputs
and an equal Dice+CE loss: `benchmarks/train_throughput.py` then compares
equal work. Only benchmarks and tests import this module (torch is in the
test extra; the library never imports it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8  # the plain UNet's norm_groups default
EPS = 1e-6  # Flax's GroupNorm epsilon
SMOOTH = 1e-5  # the Dice's smooth_nr = smooth_dr default


class Block(nn.Module):
  """Two (3x3 conv -> GroupNorm -> ReLU) layers."""

  def __init__(self, cin: int, cout: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    self.norm1 = nn.GroupNorm(math.gcd(cout, GROUPS), cout, eps=EPS)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
    self.norm2 = nn.GroupNorm(math.gcd(cout, GROUPS), cout, eps=EPS)

  def forward(self, x):
    x = F.relu(self.norm1(self.conv1(x)))
    return F.relu(self.norm2(self.conv2(x)))


class UNet(nn.Module):
  """The plain UNet (GroupNorm), NCHW in, NCHW logits out."""

  def __init__(self, num_classes: int, in_channels: int,
               widths=(16, 32, 64, 128), mean: float = 0.5, std: float = 0.25):
    super().__init__()
    self.register_buffer("mean", torch.full((1, in_channels, 1, 1), mean))
    self.register_buffer("std", torch.full((1, in_channels, 1, 1), std))
    self.down = nn.ModuleList()
    cin = in_channels
    for w in widths:
      self.down.append(Block(cin, w))
      cin = w
    self.up = nn.ModuleList()
    self.merge = nn.ModuleList()
    for w_low, w in zip(widths[:0:-1], widths[-2::-1]):
      self.up.append(nn.ConvTranspose2d(w_low, w, 2, stride=2))
      self.merge.append(Block(2 * w, w))
    self.head = nn.Conv2d(widths[0], num_classes, 1)

  def forward(self, x):
    x = (x - self.mean) / self.std
    skips = []
    for i, block in enumerate(self.down):
      if i:
        x = F.max_pool2d(x, 2)
      x = block(x)
      skips.append(x)
    for up, merge, skip in zip(self.up, self.merge, skips[-2::-1]):
      x = merge(torch.cat([up(x), skip], dim=1))
    return self.head(x)


def _set(parameter: torch.Tensor, value) -> None:
  value = torch.from_numpy(np.array(value, np.float32))
  if parameter.shape != value.shape:
    raise ValueError(f"shape {tuple(value.shape)} for a parameter of "
                     f"{tuple(parameter.shape)}")
  with torch.no_grad():
    parameter.copy_(value)


def copy_from(twin: UNet, model) -> UNet:
  """Copies an NNX plain UNet's parameters (GroupNorm) into `twin`.

  Flax kernels are (kh, kw, in, out): convolutions become (out, in, kh,
  kw); transposed ones (in, out, kh, kw), flipped in space (Flax's
  ConvTranspose does not flip its kernel, PyTorch's does).
  """
  def conv(target: nn.Conv2d, source) -> None:
    _set(target.weight, np.transpose(source.kernel.get_value(), (3, 2, 0, 1)))
    if target.bias is not None:
      _set(target.bias, source.bias.get_value())

  def block(target: Block, source) -> None:
    conv(target.conv1, source.conv1)
    conv(target.conv2, source.conv2)
    for t, s in ((target.norm1, source.norm1), (target.norm2, source.norm2)):
      _set(t.weight, s.layer.scale.get_value())
      _set(t.bias, s.layer.bias.get_value())

  _set(twin.mean, np.reshape(model.mean.get_value(), (1, -1, 1, 1)))
  _set(twin.std, np.reshape(model.std.get_value(), (1, -1, 1, 1)))
  for t, s in zip(twin.down, model.down):
    block(t, s)
  for t, s in zip(twin.up, model.up):
    kernel = np.asarray(s.kernel.get_value())[::-1, ::-1]
    _set(t.weight, np.transpose(kernel, (2, 3, 0, 1)))
    _set(t.bias, s.bias.get_value())
  for t, s in zip(twin.merge, model.merge):
    block(t, s)
  conv(twin.head, model.head)
  return twin


def dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
  """`build_loss("dice_ce")` with its defaults, for masks without ignored
  pixels: softmax Dice over the defect classes summed over the batch
  (smooth 1e-5), averaged over classes, plus the mean cross-entropy."""
  k = logits.shape[1]
  p = torch.softmax(logits, dim=1)[:, 1:]
  g = F.one_hot(target, k).permute(0, 3, 1, 2)[:, 1:].to(p.dtype)
  axes = (0, 2, 3)
  tp, sp, sg = (p * g).sum(axes), p.sum(axes), g.sum(axes)
  dice = 1 - (2 * tp + SMOOTH) / (sp + sg + SMOOTH)
  return dice.mean() + F.cross_entropy(logits, target)


def parameter_count(module: nn.Module) -> int:
  """Trainable parameters (the buffers, mean and std, not counted)."""
  return sum(p.numel() for p in module.parameters())
