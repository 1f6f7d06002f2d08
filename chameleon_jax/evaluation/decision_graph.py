"""The decision rule (decision.py) as a JAX function, for the served graph.

`decision.DecisionRule.apply` is the specification: NumPy and SciPy, one
image at a time, what `--mode=eval` and `--mode=predict` report. This module
computes the same class map for a batch in one jittable function with
static shapes, so that jax2tf exports it and TF Serving itself returns the
decision that was evaluated (export/savedmodel.py), not an argmax mask.

Connected components (8-connected, as SciPy's `ndimage.label` with a 3x3
structure) are found by label propagation with pointer jumping: every
defect pixel starts with its own flat index + 1; each round takes the
largest label among its 3x3 defect neighbours, then follows labels as
pointers twice (a label names a pixel of the same component whose own
label is at least as large). Labels only grow and stay inside their
component, so the loop reaches its fixed point, every pixel of a component
holding 1 + the largest flat index in it, in at most one round per pixel
of the longest path; jumping makes it far fewer (a one-pixel spiral is the
worst case: tests/test_decision_graph.py bounds it; RESULTS has the
figures). The loop runs until nothing changes: the result is exact, not
cut after a fixed number of rounds.

Per-component area, peak p(defect) and class mass are scatter-adds over
the labels, read back per pixel by a gather. Class masses are summed in
float32 here and in float64 by `np.bincount` in the specification: a
component whose two largest class masses agree to float32 rounding can
take the other class; nothing else differs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from chameleon_jax.evaluation.decision import DecisionRule


def label_components(mask: jax.Array) -> jax.Array:
  """(B, H, W) bool -> (B, H, W) int32 component labels: 0 off the mask,
  else 1 + the largest flat index (row * W + column) in the pixel's
  8-connected component."""
  return propagate(mask)[0]


def propagate(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`label_components`' labels and the number of rounds it took."""
  b, h, w = mask.shape
  index = (lax.broadcasted_iota(jnp.int32, mask.shape, 1) * w
           + lax.broadcasted_iota(jnp.int32, mask.shape, 2) + 1)
  labels = jnp.where(mask, index, 0)

  def jump(current):
    flat = current.reshape(b, h * w)
    pointed = jnp.take_along_axis(flat, jnp.maximum(flat - 1, 0), axis=1)
    return jnp.where(mask, pointed.reshape(b, h, w), 0)

  def round_(state):
    current, _, rounds = state
    spread = lax.reduce_window(current, 0, lax.max, (1, 3, 3), (1, 1, 1),
                               "SAME")
    new = jump(jump(jnp.where(mask, spread, 0)))
    return new, jnp.any(new != current), rounds + 1

  labels, _, rounds = lax.while_loop(
      lambda state: state[1], round_,
      (labels, jnp.asarray(True), jnp.asarray(0, jnp.int32)))
  return labels, rounds


def _per_component(values: jax.Array, flat_labels: jax.Array, op: str
                   ) -> jax.Array:
  """Scatter `values` (B, N[, C]) by label (B, N) into (B, N + 1[, C]) with
  `op` ("add" or "max"; label 0 collects the background)."""
  b, n = flat_labels.shape
  rows = lax.broadcasted_iota(jnp.int32, flat_labels.shape, 0)
  table = jnp.zeros((b, n + 1) + values.shape[2:], values.dtype)
  return getattr(table.at[rows, flat_labels], op)(values)


def _gather(table: jax.Array, flat_labels: jax.Array) -> jax.Array:
  """Each pixel's entry of its component's row of `table` (B, N + 1)."""
  return jnp.take_along_axis(table, flat_labels, axis=1)


def apply_rule(rule: DecisionRule, probs: jax.Array,
               valid: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The rule on a batch: `DecisionRule.apply` for every image at once.

  Args:
    rule: the calibrated rule (eval/decision.json); its numbers become
      constants of the traced function.
    probs: (B, H, W, K) softmax probabilities, K >= 2, class 0 background.
    valid: (B, H, W) bool, pixels that may be defect; None: all.

  Returns:
    class_map (B, H, W) int32 (0 = background), alarm (B,) bool (a
    component was kept) and alarm_score (B,) float32: the largest
    p(defect) = 1 - p(background) over the kept pixels, 0 without alarm.

  Example:
    >>> rule = DecisionRule(threshold=0.5, min_area=4)
    >>> class_map, alarm, score = jax.jit(
    ...     lambda p: apply_rule(rule, p))(probs)
  """
  probs = probs.astype(jnp.float32)
  b, h, w, k = probs.shape
  p_defect = 1.0 - probs[..., 0]
  defect = p_defect >= np.float32(rule.threshold)
  if valid is not None:
    defect = defect & valid
  labels = label_components(defect).reshape(b, h * w)
  area = _per_component(jnp.ones((b, h * w), jnp.int32), labels, "add")
  peak = _per_component(p_defect.reshape(b, h * w), labels, "max")
  # Class masses only where a class can change a component's requirement.
  per_class = (rule.class_min_areas is not None
               or rule.class_seed_thresholds is not None)
  if per_class:
    mass = _per_component(probs[..., 1:].reshape(b, h * w, k - 1), labels,
                          "add")
    component_class = jnp.argmax(mass, axis=-1)  # 0..K-2: class 1..K-1.
  else:
    component_class = jnp.zeros(area.shape, jnp.int32)
  seed = rule.seed_threshold if rule.seed_threshold is not None else 0.0
  seeds = np.full(max(k - 1, 1), seed, np.float32)
  areas = np.full(max(k - 1, 1), rule.min_area, np.int32)
  if rule.class_seed_thresholds is not None:
    seeds = np.asarray(rule.class_seed_thresholds, np.float32)
  if rule.class_min_areas is not None:
    areas = np.asarray(rule.class_min_areas, np.int32)
  keep = ((area >= jnp.asarray(areas)[component_class])
          & (peak >= jnp.asarray(seeds)[component_class]))
  kept = _gather(keep, labels).reshape(b, h, w) & defect
  classes = jnp.argmax(probs[..., 1:], axis=-1).astype(jnp.int32) + 1
  class_map = jnp.where(kept, classes, 0)
  alarm = jnp.any(kept, axis=(1, 2))
  score = jnp.max(jnp.where(kept, p_defect, 0.0), axis=(1, 2))
  return class_map, alarm, score
