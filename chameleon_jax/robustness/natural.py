"""Images with natural-image statistics, for calibrating corruptions offline.

The reference PSNR bands of ImageNet-C were measured on photographs, which
cannot be shipped or downloaded here. What the bands depend on is the
statistics such images share: a power spectrum falling steeply with frequency (which sets how
much a blur removes), a broad intensity histogram with some clipping at black
and white (which sets how much noise survives clipping), colour channels that
are strongly correlated, and occlusion edges. `natural_images` draws images
with those properties from a seed. `tests/test_corruptions.py` checks that
the reference implementation itself lands in its published bands on them
(recorded in benchmarks/RESULTS.md), which is what makes them a fair yardstick
for this package's corruptions.
"""

from __future__ import annotations

import numpy as np

# Spectral exponent of luminance: 1/f^EXPONENT power. Photographs at 224 px
# (downsampled, slightly camera-blurred) fall faster than the ideal 1/f^2;
# 3.4 puts the reference's blur PSNRs within ~1 dB of their published bands.
EXPONENT = 3.4


def _pink_field(rng: np.random.Generator, h: int, w: int,
                exponent: float) -> np.ndarray:
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  f = np.sqrt(fy ** 2 + fx ** 2)
  f[0, 0] = 1.0
  amplitude = f ** (-exponent / 2)
  amplitude[0, 0] = 0.0
  phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
  field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(h, w))
  return (field - field.mean()) / (field.std() + 1e-12)


def natural_images(num: int, height: int = 224, width: int = 224,
                   channels: int = 3, seed: int = 0) -> np.ndarray:
  """(num, H, W, C) uint8 images with natural spectra and occlusion edges."""
  rng = np.random.default_rng(seed)
  out = np.empty((num, height, width, channels), np.uint8)
  yy, xx = np.mgrid[0:height, 0:width]
  for i in range(num):
    lum = _pink_field(rng, height, width, EXPONENT)
    # Occluding objects: a few discs with their own texture and level.
    for _ in range(rng.integers(2, 6)):
      cy, cx = rng.uniform(0, height), rng.uniform(0, width)
      r = rng.uniform(0.1, 0.35) * min(height, width)
      inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
      lum = np.where(inside, rng.normal(0, 1.0) +
                     0.8 * _pink_field(rng, height, width, EXPONENT), lum)
    image = np.empty((height, width, channels))
    for c in range(channels):
      chroma = _pink_field(rng, height, width, 2.4)
      image[..., c] = lum + 0.35 * chroma + rng.normal(0, 0.3)
    mean, std = rng.uniform(0.35, 0.55), rng.uniform(0.2, 0.3)
    image = mean + std * image / (image.std() + 1e-12)
    out[i] = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
  return out
