"""The jit-compiled train and eval steps (pure functions of state and batch)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from chameleon_jax.losses import deep_supervision
from chameleon_jax.metrics import segmentation as metrics_lib
from chameleon_jax.metrics.classification import classification_sums
from chameleon_jax.model_io.state import TrainState, eval_params, merge, model_variables


def make_train_step(graphdef: nnx.GraphDef, loss_fn: Callable,
                    tx: optax.GradientTransformation, ema_decay: float | None,
                    target: str = "mask"
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns `train_step(state, batch) -> (state, metrics)`.

  `target`: the batch key the loss compares with ("mask" for segmentation,
  "label" for classification).

  Metrics are device scalars (loss, grad norm, learning-rate-free), read by the
  host only at logging steps, so dispatch stays asynchronous. `finite` is 0 if
  the loss or any gradient is NaN/Inf; the loop stops on it with a message.
  """

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:

    def compute_loss(params):
      model = merge(graphdef, params, state.model_state)
      logits = model(batch["image"], train=True)
      _, new_model_state = model_variables(model)
      if isinstance(logits, (list, tuple)):  # Deep supervision outputs.
        return deep_supervision(loss_fn)(logits, batch[target]), new_model_state
      return loss_fn(logits, batch[target]), new_model_state

    (loss, model_state), grads = jax.value_and_grad(
        compute_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema_decay is not None and ema:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                         ema, params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.replace(step=state.step + 1, params=params,
                              model_state=model_state, opt_state=opt_state,
                              ema=ema)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

  return train_step


def make_eval_step(graphdef: nnx.GraphDef, min_defect_area: int,
                   task: str = "segmentation"
                   ) -> Callable[[TrainState, dict], tuple[dict, dict]]:
  """Returns `eval_step(state, batch) -> (metric sums, per-image values)`."""

  def eval_step(state: TrainState, batch: dict):
    model = merge(graphdef, eval_params(state), state.model_state)
    logits = model(batch["image"], train=False)
    if task == "classification":
      return classification_sums(logits, batch["label"], batch["weight"])
    return metrics_lib.segmentation_sums(logits, batch["mask"], batch["weight"],
                                         min_defect_area)

  return eval_step


def make_predict_fn(graphdef: nnx.GraphDef, flips: bool = False) -> Callable:
  """Returns `predict(state, images) -> softmax probabilities (B, H, W, K)`.

  `flips`: test-time augmentation, the mean of the probabilities of the
  image and its horizontal, vertical and double flips (4 forward passes;
  segmentation only), mapped back before averaging.
  """

  def predict(state: TrainState, images: jax.Array) -> jax.Array:
    model = merge(graphdef, eval_params(state), state.model_state)
    probs = lambda x: jax.nn.softmax(model(x, train=False), axis=-1)  # noqa: E731
    if not flips:
      return probs(images)
    total = 0.0
    for axes in ((), (2,), (1,), (1, 2)):
      flipped = jnp.flip(images, axes) if axes else images
      out = probs(flipped)
      total = total + (jnp.flip(out, axes) if axes else out)
    return total / 4

  return predict
