"""The optimizer: AdamW with linear warmup and cosine decay, after clipping."""

from __future__ import annotations

import optax


def make_optimizer(*, learning_rate: float, total_steps: int,
                   warmup_steps: int, weight_decay: float,
                   grad_clip_norm: float | None,
                   end_learning_rate_factor: float = 0.01
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup + cosine decay, after global-norm clipping.

  Returns the transformation and its learning-rate schedule (for logging).
  """
  if warmup_steps >= total_steps:
    raise ValueError(f"warmup_steps={warmup_steps} must be smaller than "
                     f"total_steps={total_steps}.")
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=learning_rate * end_learning_rate_factor)
  parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  parts.append(optax.adamw(schedule, weight_decay=weight_decay))
  return optax.chain(*parts), schedule
