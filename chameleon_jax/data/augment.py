"""Training augmentation: options, presets for real-world data, and the ops.

Runs inside the Grain workers on NumPy arrays (no JAX/TF), after the crop
(transforms.py): geometric ops first (flips, 90-degree turns, free rotation
and elastic deformation, both through one `map_coordinates` resampling; the
mask is resampled by nearest neighbour and pixels that come from outside the
crop are marked ignore), then photometric ops on the [0, 1] float image
(gamma, contrast/brightness, Gaussian blur, sensor noise). Photometric ops act
on intensities, so they work for grey, RGB and N-channel images alike.

Presets are registered in `AUGMENTATIONS` (so `.gin` files can rebind any of
their values, e.g. `augmentations.industrial.rotate = 3`) and chosen by
`config.data.augment_preset`; keys set in `config.data.augment` override the
preset's values.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from chameleon_jax.data.sources import IGNORE_VALUE as IGNORE_INDEX
from chameleon_jax.registry import AUGMENTATIONS


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training augmentation; every probability/range is per example."""
  crop_size: tuple[int, int] | None = None  # None: the whole (fitted) image.
  foreground_crop_fraction: float = 0.33  # nnU-Net forces 1/3 of crops on fg.
  crop_scale: tuple[float, float] = (1.0, 1.0)  # Random resized crop range.
  flip: bool = True
  rotate90: bool = True
  rotate: float = 0.0  # Free rotation, uniform in [-rotate, rotate] degrees.
  elastic_alpha: float = 0.0  # Largest elastic displacement, pixels.
  elastic_sigma: float = 8.0  # Smoothness of the displacement field, pixels.
  elastic_p: float = 0.0  # Share of examples deformed.
  gamma: tuple[float, float] = (1.0, 1.0)  # x**g, g log-uniform in range.
  brightness: float = 0.1  # Additive shift, uniform in [-b, b].
  contrast: float = 0.1  # Multiplicative, uniform in [1 - c, 1 + c].
  blur_sigma: float = 0.0  # Gaussian blur sigma, uniform in [0, s] pixels.
  blur_p: float = 0.0  # Share of examples blurred.
  noise_std: float = 0.02  # Gaussian noise std drawn in [0, noise_std].


def _fields(**values) -> dict:
  return values


@AUGMENTATIONS.register("default")
def default():
  """The template's choice: AugmentConfig's own defaults (symmetric flips
  and turns, mild photometric jitter, a third of crops on a defect); they
  are stated once, in AugmentConfig."""
  return _fields()


@AUGMENTATIONS.register("none")
def none():
  """No augmentation beyond the crop: baselines and ablations."""
  return _fields(flip=False, rotate90=False, brightness=0.0, contrast=0.0,
                 noise_std=0.0)


@AUGMENTATIONS.register("flips")
def flips(rotate90=True):
  """Flips and 90-degree turns only: every pixel value and shape exact
  (measurements under a short schedule; the planner's light variant of
  "geometric")."""
  return _fields(flip=True, rotate90=rotate90, brightness=0.0, contrast=0.0,
                 noise_std=0.0)


@AUGMENTATIONS.register("geometric")
def geometric(flip=True, rotate90=True, rotate=15.0, crop_scale=(0.8, 1.25),
              elastic_alpha=6.0, elastic_sigma=10.0, elastic_p=0.25):
  """Pose and shape only; intensities untouched (calibrated sensors)."""
  return _fields(flip=flip, rotate90=rotate90, rotate=rotate,
                 crop_scale=crop_scale, elastic_alpha=elastic_alpha,
                 elastic_sigma=elastic_sigma, elastic_p=elastic_p,
                 brightness=0.0, contrast=0.0, noise_std=0.0)


@AUGMENTATIONS.register("photometric")
def photometric(brightness=0.15, contrast=0.2, gamma=(0.7, 1.4),
                blur_sigma=1.0, blur_p=0.2, noise_std=0.03):
  """Lighting, exposure, focus and sensor noise; geometry untouched."""
  return _fields(flip=False, rotate90=False, brightness=brightness,
                 contrast=contrast, gamma=gamma, blur_sigma=blur_sigma,
                 blur_p=blur_p, noise_std=noise_std)


@AUGMENTATIONS.register("industrial")
def industrial(flip=True, rotate90=True, rotate=5.0, crop_scale=(0.9, 1.1),
               brightness=0.1, contrast=0.2, gamma=(0.8, 1.25),
               blur_sigma=0.8, blur_p=0.15, noise_std=0.02):
  """Grey-level inspection of rigid parts under a fixed camera.

  Parts are placed with small rotations and surfaces have no preferred
  direction (flips, 90-degree turns), but they never bend: no elastic
  deformation, which would invent defect shapes. Lighting drifts between
  shifts (brightness, contrast, gamma), focus and sensor noise vary a little.
  """
  return _fields(flip=flip, rotate90=rotate90, rotate=rotate,
                 crop_scale=crop_scale, brightness=brightness,
                 contrast=contrast, gamma=gamma, blur_sigma=blur_sigma,
                 blur_p=blur_p, noise_std=noise_std)


@AUGMENTATIONS.register("medical")
def medical(flip=True, rotate=15.0, crop_scale=(0.85, 1.15),
            elastic_alpha=8.0, elastic_sigma=12.0, elastic_p=0.3,
            brightness=0.1, contrast=0.25, gamma=(0.7, 1.5), blur_sigma=1.0,
            blur_p=0.2, noise_std=0.03):
  """Grey-level medical images: soft tissue deforms, scanners differ.

  Elastic deformation and free rotation model anatomy and positioning;
  no 90-degree turns (images have an up); wider gamma and contrast ranges
  cover scanner and protocol differences. Left-right flips are on: turn
  them off where laterality matters.
  """
  return _fields(flip=flip, rotate90=False, rotate=rotate,
                 crop_scale=crop_scale, elastic_alpha=elastic_alpha,
                 elastic_sigma=elastic_sigma, elastic_p=elastic_p,
                 brightness=brightness, contrast=contrast, gamma=gamma,
                 blur_sigma=blur_sigma, blur_p=blur_p, noise_std=noise_std)


def from_preset(preset: str, crop_size=None, **overrides) -> AugmentConfig:
  """The preset's values (gin-rebindable), then `overrides` on top."""
  values = AUGMENTATIONS.build(preset)
  values.update({k: v for k, v in overrides.items() if v is not None})
  unknown = set(values) - {f.name for f in dataclasses.fields(AugmentConfig)}
  if unknown:
    raise TypeError(f"Unknown augmentation option(s) {sorted(unknown)}; "
                    f"expected fields of AugmentConfig.")
  values = {k: tuple(v) if isinstance(v, list) else v
            for k, v in values.items()}
  return AugmentConfig(crop_size=crop_size, **values)


def geometric_ops(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  aug: AugmentConfig):
  """Flips, 90-degree turns, free rotation, elastic deformation."""
  h, w = mask.shape
  if aug.flip:
    if rng.random() < 0.5:
      x, mask = x[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
      x, mask = x[::-1], mask[::-1]
  if aug.rotate90:
    k = int(rng.integers(4)) if h == w else 2 * int(rng.integers(2))
    x, mask = np.rot90(x, k), np.rot90(mask, k)
  angle = rng.uniform(-aug.rotate, aug.rotate) if aug.rotate else 0.0
  elastic = aug.elastic_alpha > 0 and rng.random() < aug.elastic_p
  if not angle and not elastic:
    return x, mask
  displacement = None
  if elastic:
    displacement = np.stack([ndimage.gaussian_filter(
        rng.uniform(-1, 1, (h, w)), aug.elastic_sigma) for _ in range(2)])
    displacement *= aug.elastic_alpha / max(np.abs(displacement).max(), 1e-12)
  return warp(x, mask, angle, displacement)


def warp(x: np.ndarray, mask: np.ndarray, angle: float,
         displacement: np.ndarray | None = None):
  """Rotates by `angle` degrees (counter-clockwise on screen) about the
  centre, then displaces sampling points by `displacement` (2, H, W) pixels.

  The image is sampled bilinearly with mirrored borders; the mask by nearest
  neighbour, with IGNORE_INDEX where the source point lies outside.
  """
  h, w = mask.shape
  rows, cols = np.meshgrid(np.arange(h, dtype=np.float64),
                           np.arange(w, dtype=np.float64), indexing="ij")
  cy, cx = (h - 1) / 2, (w - 1) / 2
  theta = -np.deg2rad(angle)  # Output -> source: the inverse rotation.
  src_r = cy + (rows - cy) * np.cos(theta) - (cols - cx) * np.sin(theta)
  src_c = cx + (rows - cy) * np.sin(theta) + (cols - cx) * np.cos(theta)
  if displacement is not None:
    src_r, src_c = src_r + displacement[0], src_c + displacement[1]
  coords = np.stack([src_r, src_c])
  x = np.stack([ndimage.map_coordinates(x[..., c], coords, order=1,
                                        mode="mirror")
                for c in range(x.shape[-1])], axis=-1)
  inside = ((src_r > -0.5) & (src_r < h - 0.5) & (src_c > -0.5)
            & (src_c < w - 0.5))
  mask = ndimage.map_coordinates(mask, coords, order=0, mode="nearest")
  mask = np.where(inside, mask, IGNORE_INDEX).astype(mask.dtype)
  return x.astype(np.float32), mask


def photometric_ops(x: np.ndarray, rng: np.random.Generator,
                    aug: AugmentConfig) -> np.ndarray:
  """Gamma, contrast/brightness, blur, noise on a [0, 1] float image."""
  if aug.gamma != (1.0, 1.0):
    lo, hi = np.log(aug.gamma[0]), np.log(aug.gamma[1])
    x = np.clip(x, 0, 1) ** np.exp(rng.uniform(lo, hi))
  if aug.contrast or aug.brightness:
    mean = x.mean()
    x = ((x - mean) * rng.uniform(1 - aug.contrast, 1 + aug.contrast)
         + mean + rng.uniform(-aug.brightness, aug.brightness))
  if aug.blur_sigma and rng.random() < aug.blur_p:
    sigma = rng.uniform(0, aug.blur_sigma)
    x = ndimage.gaussian_filter(x, (sigma, sigma, 0))
  if aug.noise_std:
    x = x + rng.normal(0, rng.uniform(0, aug.noise_std), x.shape)
  return np.clip(x, 0, 1).astype(np.float32)
