"""A bounded, deterministic, order-independent sample of a stream of values.

Bottom-k (priority) sampling: every value gets a pseudo-random priority from
a generator seeded by its item's content hash, and the sample is the `cap`
values of smallest priority seen so far. The final sample therefore depends
only on the set of items, not on their order, and memory never exceeds
2 x cap values. While fewer than `cap` values were offered, the sample is
all of them, so statistics computed from it are exact.
"""

from __future__ import annotations

import numpy as np


def item_rng(content_hash: str, stream: str = "") -> np.random.Generator:
  """A generator determined by an item's content hash (and a stream name)."""
  seed = int.from_bytes(bytes.fromhex(content_hash[:32]), "little")
  return np.random.default_rng([seed, *map(ord, stream)])


class BottomK:
  """Keeps the `cap` rows of smallest priority among all rows offered."""

  def __init__(self, cap: int, width: int = 1, dtype=np.float64):
    self.cap, self.width = cap, width
    self._priority = np.empty(0, np.float64)
    self._values = np.empty((0, width), dtype)
    self.offered = 0

  def offer(self, values: np.ndarray, rng: np.random.Generator) -> None:
    values = np.asarray(values).reshape(-1, self.width)
    if not len(values):
      return
    self.offered += len(values)
    priority = rng.random(len(values))
    if len(values) > self.cap:  # Only the item's own smallest can survive.
      keep = np.argpartition(priority, self.cap - 1)[:self.cap]
      priority, values = priority[keep], values[keep]
    self._priority = np.concatenate([self._priority, priority])
    self._values = np.concatenate([self._values,
                                   values.astype(self._values.dtype)])
    if len(self._priority) > 2 * self.cap:
      self._trim()

  def _trim(self) -> None:
    if len(self._priority) > self.cap:
      keep = np.argpartition(self._priority, self.cap - 1)[:self.cap]
      self._priority, self._values = self._priority[keep], self._values[keep]

  @property
  def sampled(self) -> bool:
    """True when the sample holds fewer values than were offered."""
    return self.offered > self.cap

  def values(self) -> np.ndarray:
    """The sample, (n, width), in a canonical (sorted by priority) order."""
    self._trim()
    order = np.argsort(self._priority, kind="stable")
    return self._values[order]
