"""The PyTorch twin of the throughput benchmark's UNet does the same work:
the same parameter count, the same outputs for copied weights, the same
Dice+CE loss (benchmarks/torch_twin.py; torch is in the test extra)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from benchmarks import torch_twin  # noqa: E402
from chameleon_jax.losses import build_loss  # noqa: E402
from chameleon_jax.models import build_model  # noqa: E402

WIDTHS = (16, 32, 64, 128)


@pytest.fixture(scope="module")
def pair():
  model = build_model("unet", num_classes=4, in_channels=1, widths=WIDTHS,
                      norm="group", input_mean=(0.4,), input_std=(0.2,))
  # Non-trivial norm parameters and biases, so a mix-up cannot hide.
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in
            zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  twin = torch_twin.copy_from(torch_twin.UNet(4, 1, WIDTHS), model)
  return model, twin


def test_the_twin_has_the_same_parameters(pair):
  model, twin = pair
  jax_count = sum(x.size for x in jax.tree.leaves(nnx.state(model,
                                                            nnx.Param)))
  assert torch_twin.parameter_count(twin) == jax_count == 482_500


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_twin_computes_the_same_logits(pair, channels_last):
  model, twin = pair
  x = np.random.default_rng(0).random((2, 64, 48, 1), np.float32)
  expected = np.asarray(model(jnp.asarray(x)))
  inputs = torch.from_numpy(x).permute(0, 3, 1, 2)
  if channels_last:
    twin = twin.to(memory_format=torch.channels_last)
    inputs = inputs.contiguous(memory_format=torch.channels_last)
  with torch.no_grad():
    got = twin(inputs).permute(0, 2, 3, 1).numpy()
  scale = np.abs(expected).max()
  np.testing.assert_allclose(got, expected, atol=2e-5 * scale, rtol=0)
  # A wrong copy (the transposed kernels not flipped) is far off.
  up = np.asarray(model.up[0].kernel.get_value())
  torch_twin._set(twin.up[0].weight, np.transpose(up, (2, 3, 0, 1)))
  with torch.no_grad():
    wrong = twin(inputs).permute(0, 2, 3, 1).numpy()
  assert np.abs(wrong - expected).max() > 1e-2 * scale
  torch_twin.copy_from(twin, model)


def test_the_twin_loss_is_dice_ce():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 32, 40, 4)).astype(np.float32) * 3
  target = rng.integers(0, 4, (3, 32, 40)).astype(np.int32)
  target[0, :4] = 3  # every class present
  expected = float(build_loss("dice_ce")(jnp.asarray(logits),
                                         jnp.asarray(target)))
  got = float(torch_twin.dice_ce(
      torch.from_numpy(logits).permute(0, 3, 1, 2),
      torch.from_numpy(target).long()))
  assert got == pytest.approx(expected, rel=1e-5)
