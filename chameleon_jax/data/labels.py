"""The label contract every stage shares: a mask holds class indices, 0 is
background (defect-free), 1..K-1 are defect classes, and 255 means "not
labelled" (VOC void, padding), which losses and metrics skip."""

from __future__ import annotations

IGNORE_INDEX = 255  # Mask value for "not labelled"; never a class.


def defect_pixels(mask):
  """The pixels of a mask (NumPy or JAX, any shape) that hold a defect:
  class > 0 and not IGNORE_INDEX. The one definition of a defect pixel
  (ingest statistics, crops, metrics, the decision rule)."""
  return (mask > 0) & (mask != IGNORE_INDEX)
