"""Deterministic train/val/test splits, stratified by class and empty vs not."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Mapping, Sequence


def stratified_split(
    items: Sequence[tuple[str, tuple, str]],
    fractions: Mapping[str, float],
    seed: int,
) -> dict[str, str]:
  """Assigns every item to a split.

  Args:
    items: (item_id, stratum, content_hash) triples; a stratum is any hashable
      key, e.g. (image class, mask is empty).
    fractions: split name -> fraction; they must sum to 1. The first split
      receives the rounding remainder of every stratum.
    seed: changes the assignment; the same seed and items give the same split
      whatever their input order.

  Returns:
    item_id -> split name.
  """
  total = sum(fractions.values())
  if abs(total - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
    raise ValueError(f"Split fractions {dict(fractions)} must be >= 0 and sum "
                     "to 1.")
  names = list(fractions)
  strata: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
  for item_id, stratum, content_hash in items:
    strata[stratum].append((item_id, content_hash))
  assignment: dict[str, str] = {}
  for members in strata.values():
    members.sort(key=lambda m: hashlib.sha256(
        f"{seed}:{m[1]}:{m[0]}".encode()).hexdigest())
    n = len(members)
    counts = {name: int(round(n * fractions[name])) for name in names[1:]}
    counts[names[0]] = n - sum(counts.values())
    while counts[names[0]] < 0:  # Rounding overshoot on tiny strata.
      largest = max(names[1:], key=counts.get)
      counts[largest] -= 1
      counts[names[0]] += 1
    start = 0
    for name in names:
      for item_id, _ in members[start:start + counts[name]]:
        assignment[item_id] = name
      start += counts[name]
  return assignment
