"""Pre-labels and the order in which images are offered for labelling.

A pre-label is the trained model's decided mask for an image (the decision
rule `--mode=eval` calibrated on validation, as `--mode=predict` and the
served model apply it), with what the queue needs to know about it. The
queue puts first the images a label would teach the model most: those
whose defect score is near the calibrated decision threshold (the model
could go either way), and those where the flip-averaged prediction and the
plain one disagree (the model is unstable there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Prelabel:
  """The model's answer for one image.

  Attributes:
    mask: (H, W) uint8 class map at the image's size, the decision rule's.
    score: the image's defect score: its largest pixel p(defect) =
      1 - p(background) (what the rule's seed threshold is compared with),
      from the same probabilities as the mask.
    disagreement: 1 - IoU of the defect pixels the rule keeps from the
      flip-averaged and from the plain probabilities (0 when both are empty).
    alarm: the decided image raises an alarm (any defect pixel kept).
  """
  mask: np.ndarray
  score: float
  disagreement: float
  alarm: bool


def disagreement(flipped: np.ndarray, plain: np.ndarray) -> float:
  """1 - IoU of the defect pixels (class > 0) of two decided class maps."""
  a, b = flipped > 0, plain > 0
  union = int((a | b).sum())
  return 0.0 if union == 0 else 1.0 - int((a & b).sum()) / union


def logit(p: float) -> float:
  """log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6]."""
  p = min(max(float(p), 1e-6), 1.0 - 1e-6)
  return math.log(p / (1.0 - p))


def priority(prelabel: Prelabel, threshold: float) -> float:
  """How much a label of this image would teach, in [0, 2]: the closeness
  of the score to `threshold`, exp(-|logit(score) - logit(threshold)| / 2)
  (1 at the threshold; log-odds, because calibrated thresholds sit near 0
  or 1, where a linear distance calls every saturated score close), plus
  the flip disagreement."""
  distance = abs(logit(prelabel.score) - logit(threshold))
  return math.exp(-distance / 2.0) + prelabel.disagreement


def order(ids: Iterable[str], labelled: Mapping[str, bool],
          prelabels: Mapping[str, Prelabel], threshold: float
          ) -> list[str]:
  """Unlabelled images first, then labelled ones (for review); within each,
  by `priority` (highest first), then by id. Images without a pre-label
  (no model) follow, by id."""
  def key(image_id):
    p = prelabels.get(image_id)
    return (bool(labelled.get(image_id)), p is None,
            -priority(p, threshold) if p is not None else 0.0, image_id)
  return sorted(ids, key=key)
