"""Class weights from a dataset's class frequencies."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def from_frequencies(frequencies: Sequence[float], rebalance: float = 0.5,
                     max_ratio: float | None = 100.0) -> list[float]:
  """Weights w_c proportional to 1 / (r p_c + 1 - r), rescaled to sum to C.

  r = `rebalance` in [0, 1]: 0 gives uniform weights, 1 full inverse
  frequency (Scenic's rebalancing). `frequencies` are class pixel (or image)
  frequencies, e.g. from a dataset fingerprint; they are normalised here.
  `max_ratio` clips the largest/smallest weight ratio (classes seen a handful
  of times would otherwise dominate), then weights are rescaled again.
  """
  p = np.asarray(frequencies, np.float64)
  if p.ndim != 1 or p.size < 2 or (p < 0).any() or p.sum() <= 0:
    raise ValueError(f"frequencies must be >= 0 with a positive sum, one per "
                     f"class; got {list(frequencies)}.")
  if not 0.0 <= rebalance <= 1.0:
    raise ValueError(f"rebalance={rebalance} must be in [0, 1].")
  p = p / p.sum()
  with np.errstate(divide="ignore"):
    w = 1.0 / (rebalance * p + 1.0 - rebalance)
  finite = np.isfinite(w)
  if not finite.all():  # rebalance = 1 and an absent class: largest finite.
    w[~finite] = w[finite].max() if finite.any() else 1.0
  if max_ratio is not None:
    w = np.minimum(w, w.min() * max_ratio)
  return (w * p.size / w.sum()).tolist()
