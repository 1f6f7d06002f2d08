"""Checks and rasterisation of annotation geometry in pixel coordinates.

Annotation tools store vertices as (x, y) floats where pixel (i, j) covers
[j, j + 1) x [i, i + 1); a vertex on the far border sits at x = width. Points
up to `TOLERANCE` pixels outside the image are clipped (tools snap clicks to
the border imprecisely); anything further out is an error.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

TOLERANCE = 1.0


def outside(points: np.ndarray, width: int, height: int) -> str | None:
  """A description of the worst point outside the image, or None."""
  points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
  if not np.isfinite(points).all():
    return "has non-finite coordinates"
  x, y = points[:, 0], points[:, 1]
  excess = np.maximum.reduce([-x, x - width, -y, y - height])
  worst = int(np.argmax(excess))
  if excess[worst] > TOLERANCE:
    return (f"has point ({x[worst]:g}, {y[worst]:g}) outside the "
            f"{width}x{height} image")
  return None


def rasterise(shapes: list[tuple[str, np.ndarray, int]], height: int,
              width: int) -> np.ndarray:
  """Paints shapes in order (later ones on top) -> (H, W) uint8 class map.

  Each shape is (kind, points (N, 2) as x, y, class index); kinds:
  polygon (N >= 3), rectangle (2 opposite corners), circle (centre, a point
  on the circle). PIL fills a polygon's interior and its outline pixels.
  """
  canvas = Image.new("L", (width, height), 0)
  draw = ImageDraw.Draw(canvas)
  for kind, points, value in shapes:
    points = np.clip(np.asarray(points, np.float64).reshape(-1, 2),
                     0, [width, height])
    if kind == "polygon":
      draw.polygon([tuple(p) for p in points], fill=value, outline=value)
    elif kind == "rectangle":
      (x0, y0), (x1, y1) = np.sort(points, axis=0)
      draw.rectangle([x0, y0, x1, y1], fill=value, outline=value)
    elif kind == "circle":
      (cx, cy), edge = points[0], points[1]
      r = float(np.hypot(*(edge - points[0])))
      draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value, outline=value)
    else:
      raise ValueError(f"Unknown shape kind {kind!r}.")
  return np.asarray(canvas)
