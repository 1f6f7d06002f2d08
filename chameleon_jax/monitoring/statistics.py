"""What the monitor knows of one served image: statistics, never pixels.

One definition, used at export (the reference profile, from the validation
split) and in the serving path (the request log), so a window and its
reference are measured by the same code:

  input_statistics(image)    per-channel mean and std, brightness and
                             contrast (mean and std of the grey image), focus
                             (log10 variance of its Laplacian), the share of
                             clipped pixels, height, width, channels, bit
                             depth
  embedding(image)           a 16 x 16 grey thumbnail (box filter) projected
                             to EMBEDDING_DIMS by a fixed Gaussian matrix
                             (Johnson-Lindenstrauss: distances, and so a
                             kernel two-sample test, are kept up to a small
                             factor; tested)
  output_statistics(...)     p(defect) of the image (the largest pixel
                             p(defect)), the alarm, the alarm score, the mean
                             per-pixel binary entropy of p(defect) (the
                             confidence) and the predicted area share of
                             every defect class

Images arrive as the server receives them: (H, W, C) uint8 / uint16, or
float32 in [0, 1]; statistics are of the unit-scaled image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from chameleon_jax.data.images import bit_depth, to_unit_float

THUMBNAIL = 16  # the embedding's thumbnail side
EMBEDDING_DIMS = 32
PROJECTION_SEED = 20261204  # fixed: reference and log must share the matrix
MAX_CHANNELS = 4
CLIP_TOLERANCE = 0.5  # a pixel within half a grey level of 0 or of the top


def _checked(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or not 1 <= image.shape[-1] <= MAX_CHANNELS:
    raise ValueError(f"expected an (H, W, C) image with 1-{MAX_CHANNELS} "
                     f"channels, got shape {image.shape}")
  return image


def input_statistics(image: np.ndarray) -> dict[str, float]:
  """The scalar statistics of one image (names are the monitor's keys).

  Args:
    image: (H, W, C) or (H, W); uint8, uint16 or float in [0, 1].

  Returns:
    {"mean/c0", "std/c0", ... per channel, "brightness", "contrast",
    "focus", "clipped", "height", "width", "channels", "bit_depth"}; a
    grey image sent to a colour model shows as a change of "channels".

  Raises:
    ValueError: not an image of 1 to 4 channels.
  """
  image = _checked(image)
  x = to_unit_float(image)
  grey = x.mean(axis=2, dtype=np.float64)
  top = (np.float64(np.iinfo(image.dtype).max)
         if np.issubdtype(image.dtype, np.integer) else 255.0)
  tolerance = CLIP_TOLERANCE / top
  stats = {}
  for c in range(x.shape[-1]):
    stats[f"mean/c{c}"] = float(x[..., c].mean(dtype=np.float64))
    stats[f"std/c{c}"] = float(x[..., c].std(dtype=np.float64))
  laplacian = ndimage.laplace(grey) if min(grey.shape) >= 3 else np.zeros(1)
  stats.update({
      "brightness": float(grey.mean()),
      "contrast": float(grey.std()),
      "focus": float(np.log10(laplacian.var() + 1e-12)),
      "clipped": float(np.mean((grey <= tolerance)
                               | (grey >= 1.0 - tolerance))),
      "height": float(image.shape[0]), "width": float(image.shape[1]),
      "channels": float(image.shape[2]), "bit_depth": float(bit_depth(image)),
  })
  return stats


def projection(dims: int = EMBEDDING_DIMS, seed: int = PROJECTION_SEED
               ) -> np.ndarray:
  """The fixed (THUMBNAIL², dims) Gaussian projection, scaled by 1/sqrt(dims)
  so that squared distances are kept in expectation."""
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((THUMBNAIL * THUMBNAIL, dims))
          / np.sqrt(dims)).astype(np.float32)


_PROJECTION = projection()


def thumbnail(image: np.ndarray) -> np.ndarray:
  """(THUMBNAIL², ) float32: the grey image box-filtered to 16 x 16."""
  grey = to_unit_float(_checked(image)).mean(axis=2)
  small = Image.fromarray(grey, mode="F").resize((THUMBNAIL, THUMBNAIL),
                                                  Image.Resampling.BOX)
  return np.asarray(small, np.float32).reshape(-1)


def embedding(image: np.ndarray) -> np.ndarray:
  """(EMBEDDING_DIMS,) float32: the thumbnail through the fixed projection."""
  return thumbnail(image) @ _PROJECTION


def binary_entropy(p: np.ndarray) -> np.ndarray:
  """Entropy in nats of Bernoulli(p), 0 at p = 0 or 1."""
  p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
  return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def output_statistics(p_defect: np.ndarray, alarm: bool, alarm_score: float,
                      class_map: np.ndarray | None,
                      class_names: tuple[str, ...]) -> dict[str, float]:
  """The model's answer about one image, as the monitor compares it.

  Args:
    p_defect: segmentation: (H, W) pixel p(defect) = 1 - p(background);
      classification: a scalar, 1 - p(class 0).
    alarm: the served image-level alarm.
    alarm_score: the served alarm score.
    class_map: segmentation: (H, W) served classes (0 = background);
      None for classification.
    class_names: the model's classes, background first.

  Returns:
    {"p_defect", "alarm", "alarm_score", "entropy", "area/<class>" for every
    defect class (segmentation)}.
  """
  p = np.asarray(p_defect, np.float64)
  stats = {"p_defect": float(p.max()), "alarm": float(bool(alarm)),
           "alarm_score": float(alarm_score),
           "entropy": float(binary_entropy(p).mean())}
  if class_map is not None:
    counts = np.bincount(np.asarray(class_map).reshape(-1).astype(np.int64),
                         minlength=len(class_names))
    for k, name in enumerate(class_names[1:], start=1):
      stats[f"area/{name}"] = float(counts[k] / max(1, class_map.size))
  return stats
