"""Train/eval steps: learning, EMA arithmetic, donation, the transfer guard."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chameleon_jax.losses import build_loss
from chameleon_jax.models import build_model
from chameleon_jax import sharding
from chameleon_jax.model_io import state as state_lib
from chameleon_jax.train import optim, steps


def _setup(ema: bool, lr: float = 1e-2):
  model = build_model("unet", num_classes=2, in_channels=1, widths=(8, 16))
  tx, schedule = optim.make_optimizer(
      learning_rate=lr, total_steps=100, warmup_steps=1, weight_decay=0.0,
      grad_clip_norm=1.0)
  graphdef, state = state_lib.create(model, tx, use_ema=ema)
  mesh = sharding.make_mesh()
  state = sharding.replicate(state, mesh)
  x = np.zeros((4, 16, 16, 1), np.float32)
  y = np.zeros((4, 16, 16), np.int32)
  x[:, 4:8, 4:8] = 1.0
  y[:, 4:8, 4:8] = 1
  batch = sharding.shard_batch({"image": x, "mask": y}, mesh)
  return graphdef, tx, state, batch, mesh


def test_training_fits_a_batch():
  graphdef, tx, state, batch, _ = _setup(ema=False)
  step = jax.jit(steps.make_train_step(graphdef, build_loss("dice_ce"), tx,
                                       None), donate_argnums=0)
  losses = []
  for _ in range(40):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.2 * losses[0]
  assert int(state.step) == 40


def test_ema_follows_its_formula():
  graphdef, tx, state, batch, _ = _setup(ema=True)
  decay = 0.9
  step = jax.jit(steps.make_train_step(graphdef, build_loss("dice_ce"), tx,
                                       decay))
  new, _ = step(state, batch)
  expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema,
                          new.params)
  for a, b in zip(jax.tree.leaves(new.ema), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert state_lib.eval_params(new) is new.ema


def test_state_is_donated_and_no_implicit_transfers():
  graphdef, tx, state, batch, _ = _setup(ema=False)
  step = jax.jit(steps.make_train_step(graphdef, build_loss("dice_ce"), tx,
                                       None), donate_argnums=0)
  with jax.transfer_guard("disallow"):
    new, _ = step(state, batch)
  leaf = jax.tree.leaves(state.params)[0]
  assert leaf.is_deleted()
  # A host array slipping into the step is refused under the guard.
  with pytest.raises(Exception, match="host-to-device"):
    with jax.transfer_guard("disallow"):
      step(new, {"image": np.zeros((4, 16, 16, 1), np.float32),
                 "mask": batch["mask"]})


def test_eval_step_counts_a_perfect_prediction():
  graphdef, tx, state, batch, _ = _setup(ema=False)
  train = jax.jit(steps.make_train_step(graphdef, build_loss("dice_ce"), tx,
                                        None))
  for _ in range(60):
    state, _ = train(state, batch)
  eval_step = jax.jit(steps.make_eval_step(graphdef, min_defect_area=1))
  sums, per_image = eval_step(state, {**batch, "weight": jnp.ones((4,))})
  np.testing.assert_array_equal(np.asarray(sums["confusion"]),
                                [[4 * 240, 0], [0, 4 * 16]])
  np.testing.assert_allclose(per_image["dice"], 1.0)
