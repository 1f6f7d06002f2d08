"""Ensembles of trained models, and what an attack differentiates on them.

Members may be different architectures. `Ensemble` keeps their graph
definitions (static) apart from their states (a pytree passed into jit), so
one compiled function serves every batch.

Combination rules (`method`), each returning log-scores whose argmax is the
ensemble's prediction:
  logits  mean of the members' logits;
  probs   log of the mean of the members' softmax probabilities;
  vote    log of the fraction of members voting for each class (per pixel
          for segmentation), ties broken by the mean probability. A vote has
          no useful gradient: attacks on a "vote" ensemble differentiate its
          "probs" surrogate (the documented choice of `attack_loss`).

What an attack on the ensemble differentiates (`gradient`):
  combined     the loss of the combined output (the ensemble as one model);
  member_sum   the sum of the members' own losses (ART's convention).
For members that are identical both equal attacking one member.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from chameleon_jax.robustness import attacks
from chameleon_jax.model_io.state import eval_params, merge

METHODS = ("logits", "probs", "vote")
GRADIENTS = ("combined", "member_sum")


def combine(member_logits: jax.Array, method: str) -> jax.Array:
  """(M, B, ..., K) member logits -> (B, ..., K) ensemble log-scores."""
  if method == "logits":
    return member_logits.mean(0)
  probs = jax.nn.softmax(member_logits.astype(jnp.float32), axis=-1)
  mean_probs = probs.mean(0)
  if method == "probs":
    return jnp.log(jnp.maximum(mean_probs, 1e-30))
  if method == "vote":
    k = member_logits.shape[-1]
    votes = jax.nn.one_hot(member_logits.argmax(-1), k).mean(0)
    # Ties (equal vote fractions) are broken by the mean probability; the
    # tie-breaker (< 1/M) never outweighs a whole vote.
    m = member_logits.shape[0]
    return jnp.log(votes + mean_probs / (m + 1) + 1e-30)
  raise ValueError(f"Ensemble method {method!r}; expected one of {METHODS}.")


class Ensemble:
  """Members (graphdef, state) -> logits of each member and of the ensemble."""

  def __init__(self, graphdefs: Sequence[nnx.GraphDef], method: str = "probs"):
    if not graphdefs:
      raise ValueError("An ensemble needs at least one member.")
    if method not in METHODS:
      raise ValueError(f"Ensemble method {method!r}; expected one of "
                       f"{METHODS}.")
    self.graphdefs = tuple(graphdefs)
    self.method = method

  @property
  def size(self) -> int:
    return len(self.graphdefs)

  def member_logits(self, states: Sequence[Any], x: jax.Array) -> jax.Array:
    """(M, B, ..., K) float32 logits of every member (eval mode)."""
    return jnp.stack([_single(g, s, x)
                      for g, s in zip(self.graphdefs, states)])

  def logits(self, states: Sequence[Any], x: jax.Array) -> jax.Array:
    """The ensemble's log-scores (a single member: its own logits)."""
    if self.size == 1:
      return self.member_logits(states, x)[0]
    return combine(self.member_logits(states, x), self.method)

  def attack_loss(self, states: Sequence[Any], task_loss: Callable,
                  target: str = "ensemble", gradient: str = "combined"
                  ) -> attacks.LossFn:
    """The per-example loss an attack on `target` differentiates.

    Args:
      states: the members' states.
      task_loss: `attacks.segmentation_loss` or `attacks.classification_loss`.
      target: "ensemble" (white-box on the whole ensemble) or "member:<i>"
        (a transfer attack crafted on member i alone).
      gradient: for target "ensemble", "combined" or "member_sum" (module doc).
    """
    if target.startswith("member:"):
      i = int(target.split(":", 1)[1])
      if not 0 <= i < self.size:
        raise ValueError(f"Attack target {target!r}: the ensemble has "
                         f"{self.size} members (0..{self.size - 1}).")
      return task_loss(lambda x: _single(self.graphdefs[i], states[i], x))
    if target != "ensemble":
      raise ValueError(f"Attack target {target!r}; expected 'ensemble' or "
                       "'member:<i>'.")
    if gradient == "member_sum":
      member_losses = [task_loss(lambda x, g=g, s=s: _single(g, s, x))
                       for g, s in zip(self.graphdefs, states)]
      return lambda x, t: sum(loss(x, t) for loss in member_losses)
    if gradient != "combined":
      raise ValueError(f"Ensemble gradient {gradient!r}; expected one of "
                       f"{GRADIENTS}.")
    method = "probs" if self.method == "vote" else self.method
    if self.size == 1:
      return task_loss(lambda x: _single(self.graphdefs[0], states[0], x))
    return task_loss(lambda x: combine(self.member_logits(states, x), method))


def _single(graphdef: nnx.GraphDef, state: Any, x: jax.Array) -> jax.Array:
  model = merge(graphdef, eval_params(state), state.model_state)
  return model(x, train=False).astype(jnp.float32)
