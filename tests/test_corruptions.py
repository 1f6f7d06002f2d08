"""Corruptions and real-world perturbations against references and invariants.

References: the published formulas and parameters
(`../shared/reference/corruptions.md`, reproduced in `corruptions.py`),
SciPy's filters in float64, PIL's resamplers and JPEG codec, and a NumPy port
of imagecorruptions' motion blur written here from its published algorithm.
"""

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from chameleon_jax.registry import CORRUPTIONS
from chameleon_jax.robustness import corruptions as C
from chameleon_jax.robustness import filters
from chameleon_jax.robustness.natural import natural_images

MONOTONE = [n for n, s in C.specs().items() if s.monotone]


def _psnr(a, b) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
  return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12))


@functools.lru_cache(maxsize=None)
def _jitted(name, severity, scale="224"):
  return jax.jit(lambda k, x: C.apply(name, severity, k, x, scale))


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def test_every_family_is_registered_with_five_severities():
  imagenet_c = C.names(C.CORE_GROUPS)
  assert len(imagenet_c) == 15
  assert sorted(C.names(("extra",))) == ["gaussian_blur", "saturate",
                                         "spatter", "speckle_noise"]
  assert len(C.names(("real_world",))) == 9
  for name, spec in C.specs().items():
    assert name in CORRUPTIONS
    for scale in C.SCALES:
      assert len(spec.params[scale]) == 5, (name, scale)
  with pytest.raises(ValueError, match="severity 6"):
    CORRUPTIONS.build("fog", severity=6)
  with pytest.raises(ValueError, match="scale '64'"):
    CORRUPTIONS.build("fog", severity=1, scale="64")
  assert C.scale_for((32, 32)) == "32" and C.scale_for((208, 320)) == "224"


def test_contrast_is_the_reference_formula_exactly():
  x = natural_images(3, 40, 56, 3, seed=1)
  for severity in (1, 5):
    c = C.spec("contrast").param(severity)
    xf = x / 255.0
    mean = xf.mean((1, 2), keepdims=True)
    ref = np.clip((xf - mean) * c + mean, 0, 1)
    out = np.asarray(_jitted("contrast", severity)(_keys(3), jnp.asarray(
        xf, jnp.float32)))
    np.testing.assert_allclose(out, ref, atol=2e-6)
    # uint8 in, uint8 out, truncated like the reference's np.uint8(...).
    out8 = np.asarray(_jitted("contrast", severity)(_keys(3), jnp.asarray(x)))
    ref8 = ref * 255
    clear = np.abs(ref8 - np.round(ref8)) > 1e-3  # not on an integer edge
    assert out8.dtype == np.uint8
    np.testing.assert_array_equal(out8[clear], np.uint8(ref8[clear]))


def test_gaussian_blur_is_scipy_gaussian_filter_exactly():
  x = natural_images(2, 48, 40, 3, seed=2)
  for severity in (1, 3, 5):
    sigma = C.spec("gaussian_blur").param(severity)
    ref = np.stack([ndimage.gaussian_filter(img / 255.0, (sigma, sigma, 0),
                                            mode="nearest", truncate=4.0)
                    for img in x])
    out = np.asarray(_jitted("gaussian_blur", severity)(
        _keys(2), jnp.asarray(x / 255.0, jnp.float32)))
    np.testing.assert_allclose(out, ref, atol=2e-6)
    out8 = np.asarray(_jitted("gaussian_blur", severity)(_keys(2),
                                                         jnp.asarray(x)))
    ref8 = np.clip(ref, 0, 1) * 255
    clear = np.abs(ref8 - np.round(ref8)) > 1e-3
    np.testing.assert_array_equal(out8[clear], np.uint8(ref8[clear]))


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
def test_filter_matrix_matches_scipy_boundary_modes(mode):
  rng = np.random.default_rng(0)
  row = rng.normal(size=11)
  kernel = rng.normal(size=7)
  m = filters.filter_matrix(11, kernel, mode)
  np.testing.assert_allclose(m @ row, ndimage.correlate1d(row, kernel,
                                                          mode=mode), atol=1e-12)


def test_bilinear_sample_matches_scipy_map_coordinates():
  rng = np.random.default_rng(1)
  image = rng.uniform(size=(9, 13, 2))
  ys = rng.uniform(-2, 11, size=(5, 7))
  xs = rng.uniform(-2, 15, size=(5, 7))
  out = np.asarray(filters.bilinear_sample(jnp.asarray(image), jnp.asarray(ys),
                                           jnp.asarray(xs), mode="nearest"))
  for c in range(2):
    ref = ndimage.map_coordinates(image[..., c], [ys, xs], order=1,
                                  mode="nearest")
    np.testing.assert_allclose(out[..., c], ref, atol=1e-6)


def _reference_motion_blur(x, radius, sigma, angle):
  """imagecorruptions' `_motion_blur` (NumPy, float64), from its algorithm."""
  width = 2 * radius + 1
  k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
  k /= k.sum()
  point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
  hypot = np.hypot(*point)
  out = np.zeros_like(x)
  for i in range(width):
    dy = -int(np.ceil(i * point[0] / hypot - 0.5))
    dx = -int(np.ceil(i * point[1] / hypot - 0.5))
    if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
      break
    rows = np.clip(np.arange(x.shape[0]) - dy, 0, x.shape[0] - 1)
    cols = np.clip(np.arange(x.shape[1]) - dx, 0, x.shape[1] - 1)
    out += k[i] * x[rows][:, cols]
  return out


@pytest.mark.parametrize("angle", [-45.0, -12.5, 0.0, 31.0, 44.0])
def test_motion_blur_matches_the_reference_algorithm(angle):
  x = natural_images(1, 30, 36, 3, seed=3)[0] / 255.0
  out = filters.motion_blur(jnp.asarray(x, jnp.float32), 10, 3.0,
                            jnp.float32(angle))
  np.testing.assert_allclose(np.asarray(out),
                             _reference_motion_blur(x, 10, 3.0, angle),
                             atol=2e-6)


def _pil_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """PIL's round trip of one (H, W, C) uint8 image, a grey JPEG per channel
  unless it is RGB."""
  planes = [image] if image.shape[-1] in (1, 3) else [
      image[..., i:i + 1] for i in range(image.shape[-1])]
  out = []
  for plane in planes:
    buf = io.BytesIO()
    Image.fromarray(plane[..., 0] if plane.shape[-1] == 1 else plane).save(
        buf, format="JPEG", quality=quality)
    out.append(np.asarray(Image.open(buf)).reshape(plane.shape))
  return np.concatenate(out, -1)


def _with_channels(x: np.ndarray, channels: int) -> np.ndarray:
  if channels == 1:
    return np.round(x.mean(-1, keepdims=True)).astype(np.uint8)
  if channels == 4:
    return np.concatenate([x, x[..., :1] // 2], -1)
  return x


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_jpeg_on_cpu_is_libjpeg_itself(channels):
  x = _with_channels(natural_images(3, 64, 48, 3, seed=4), channels)
  quality = C.spec("jpeg_compression").param(1)
  ours = np.asarray(_jitted("jpeg_compression", 1)(_keys(3), jnp.asarray(x)))
  for img, out in zip(x, ours):
    np.testing.assert_array_equal(out, _pil_jpeg(img, quality))
  # Float images take the same codec (8-bit samples, 8-bit result).
  floats = np.asarray(_jitted("jpeg_compression", 1)(
      _keys(3), jnp.asarray(x, jnp.float32) / 255))
  np.testing.assert_allclose(floats * 255, ours, atol=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_dct_path_is_close_to_pil(channels):
  from chameleon_jax.robustness import jpeg
  x = _with_channels(natural_images(2, 64, 48, 3, seed=4), channels)
  quality = C.spec("jpeg_compression").param(1)
  ours = np.asarray(jax.jit(jax.vmap(lambda v: jpeg.dct_round_trip(
      v / 255.0, quality)))(jnp.asarray(x, jnp.float32))) * 255
  for img, out in zip(x, ours):
    pil = _pil_jpeg(img, quality).astype(np.float64)
    # libjpeg's integer DCT and fancy chroma upsampling differ by a grey
    # level or two; the compression error itself is ~10x larger.
    assert np.abs(out - pil).mean() < (1.0 if channels == 1 else 2.0)
    assert np.abs(pil - img).mean() > 5 * np.abs(out - pil).mean()


def test_jpeg_on_an_accelerator_is_the_dct_not_a_host_callback():
  """Lowered for CUDA (no GPU needed), the graph holds the DCT and no
  callback; lowered for CPU it calls libjpeg."""
  fn = jax.jit(lambda k, v: C.apply("jpeg_compression", 1, k, v))
  args = (_keys(2), jnp.zeros((2, 16, 16, 3), jnp.uint8))
  cuda = jax.export.export(fn, platforms=("cuda",))(*args).mlir_module()
  assert "custom_call" not in cuda and "stablehlo.dot_general" in cuda
  assert "python_cpu_callback" in fn.lower(*args).as_text()


def test_pixelate_matches_pil_box_then_nearest():
  x = natural_images(1, 50, 70, 3, seed=5)[0]
  for severity in (1, 5):
    c = C.spec("pixelate").param(severity)
    small = Image.fromarray(x).resize((int(70 * c), int(50 * c)), Image.BOX)
    ref = np.asarray(small.resize((70, 50), Image.NEAREST), np.float64)
    out = np.asarray(_jitted("pixelate", severity)(_keys(1), jnp.asarray(
        x[None])))[0]
    assert np.abs(out.astype(np.float64) - ref).max() <= 1.0


# The reference's PSNR (dB) at 224 px, severity 1 and 5 (corruptions.md).
PSNR_BANDS = {
    "gaussian_noise": (22.2, 10.6), "shot_noise": (21.9, 10.4),
    "impulse_noise": (20.2, 10.7), "defocus_blur": (28.4, 21.9),
    "motion_blur": (25.5, 19.0), "zoom_blur": (22.3, 19.7),
    "fog": (15.1, 13.3), "brightness": (22.5, 10.6),
}


@pytest.mark.parametrize("name", sorted(PSNR_BANDS))
def test_psnr_falls_in_the_reference_band_at_224(name):
  """Natural-statistics images (natural.py), on which the reference package
  itself lands within ~1.3 dB of these bands (benchmarks/RESULTS.md)."""
  x = jnp.asarray(natural_images(4, 224, 224, 3, seed=7))
  for severity, expected in zip((1, 5), PSNR_BANDS[name]):
    out = _jitted(name, severity)(_keys(4, seed=severity), x)
    measured = float(_psnr(out, x).mean())
    assert abs(measured - expected) < 2.0, (name, severity, measured, expected)


@pytest.fixture(scope="module")
def severity_sweep():
  """PSNR per (name, severity) for the monotone families, one key for all."""
  x = jnp.asarray(natural_images(2, 64, 64, 3, seed=8))
  keys = _keys(2, seed=1)
  return {(n, s): _psnr(_jitted(n, s)(keys, x), x)
          for n in MONOTONE for s in C.SEVERITIES}


@pytest.mark.e2e
@pytest.mark.parametrize("name", MONOTONE)
def test_severity_lowers_psnr_where_the_reference_does(name, severity_sweep):
  psnr = np.stack([severity_sweep[(name, s)] for s in C.SEVERITIES], 1)
  assert (np.diff(psnr, axis=1) <= 1e-6).all(), (name, psnr.round(2))
  assert (psnr[:, -1] < psnr[:, 0]).all(), (name, psnr.round(2))


@pytest.mark.parametrize("name", list(C.specs()))
def test_dtype_shape_range_and_determinism(name):
  grey8 = jnp.asarray(natural_images(2, 24, 28, 3, seed=9).mean(-1, keepdims=True)
                      .round().astype(np.uint8))
  out = _jitted(name, 2)(_keys(2), grey8)
  assert out.dtype == jnp.uint8 and out.shape == grey8.shape
  again = _jitted(name, 2)(_keys(2), grey8)
  np.testing.assert_array_equal(out, again)  # same key, same image
  # Multispectral float images (5 channels) stay float32 in [0, 1].
  x5 = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 24, 28, 5)),
                   jnp.float32)
  out5 = _jitted(name, 4)(_keys(2), x5)
  assert out5.dtype == jnp.float32 and out5.shape == x5.shape
  assert float(out5.min()) >= 0.0 and float(out5.max()) <= 1.0
  assert np.isfinite(np.asarray(out5)).all()
  # An image's result depends on its own key only, not on its batch.
  alone = _jitted(name, 4)(_keys(2)[1:], x5[1:])
  np.testing.assert_allclose(alone[0], out5[1], atol=1e-5)


def test_warped_masks_follow_the_image():
  """For pixel-moving corruptions the grid moves image and mask alike."""
  from chameleon_jax.robustness.sweep import warp_mask
  h, w = 40, 48
  labels = np.zeros((h, w), np.int32)
  labels[10:25, 12:30] = 1
  image = jnp.asarray(labels[None, ..., None], jnp.float32)
  for name in ("shift_rotate", "elastic_transform"):
    keys = _keys(1, seed=4)
    moved = np.asarray(C.apply(name, 5, keys, image))[0, ..., 0]
    ys, xs = C.warp_grids(name, 5, keys, (h, w))
    mask = np.asarray(warp_mask(jnp.asarray(labels), ys[0], xs[0]))
    inside = mask != 255
    # Nearest vs bilinear: they agree wherever the image is not mid-edge.
    sure = (moved < 0.2) | (moved > 0.8)
    assert (mask[inside & sure] == (moved[inside & sure] > 0.5)).all()
    assert C.warp_grids("fog", 5, keys, (h, w)) is None


def test_impulse_noise_hits_its_share_with_even_salt_and_pepper():
  c = C.spec("impulse_noise").param(4)
  x = jnp.full((1, 256, 256, 3), 0.4, jnp.float32)
  out = np.asarray(_jitted("impulse_noise", 4)(_keys(1), x))
  hit = out != np.float32(0.4)
  n = hit.size
  assert abs(hit.mean() - c) < 5 * np.sqrt(c * (1 - c) / n)
  assert set(np.unique(out[hit])) == {0.0, 1.0}
  salt = (out[hit] == 1.0).mean()
  assert abs(salt - 0.5) < 5 * np.sqrt(0.25 / hit.sum())
  # Independent of position: each channel gets its share.
  for channel in range(3):
    assert abs(hit[..., channel].mean() - c) < 5 * np.sqrt(c * (1 - c) / n * 3)


def test_poisson_sampler_matches_the_distribution():
  from scipy import stats
  key = jax.random.key(0)
  for lam in (0.3, 4.0, 11.5, 12.5, 60.0, 800.0):
    draws = np.asarray(filters.poisson(key, jnp.full((200_000,), lam)))
    assert (draws == np.round(draws)).all() and draws.min() >= 0
    assert abs(draws.mean() - lam) < 5 * np.sqrt(lam / 2e5), lam
    assert abs(draws.var() / lam - 1) < 0.02, lam
    if lam < 12:  # The exact branch: the whole distribution.
      ks = np.arange(int(lam * 4) + 8)
      freq = np.bincount(draws.astype(int), minlength=len(ks))[:len(ks)] / 2e5
      np.testing.assert_allclose(freq, stats.poisson.pmf(ks, lam), atol=3e-3)
