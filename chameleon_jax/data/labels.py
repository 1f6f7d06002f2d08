"""The label contract every stage shares: a mask holds class indices, 0 is
background (defect-free), 1..K-1 are defect classes, and 255 means "not
labelled" (VOC void, padding), which losses and metrics skip. A defect
(component) is an 8-connected region of one class."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255  # Mask value for "not labelled"; never a class.
# Neighbourhood of a defect component (scipy.ndimage.label's structure):
# diagonal neighbours join, so a one-pixel-wide diagonal crack is one defect.
EIGHT_CONNECTED = np.ones((3, 3), bool)


def defect_pixels(mask):
  """The pixels of a mask (NumPy or JAX, any shape) that hold a defect:
  class > 0 and not IGNORE_INDEX. The one definition of a defect pixel
  (ingest statistics, crops, metrics, the decision rule)."""
  return (mask > 0) & (mask != IGNORE_INDEX)
