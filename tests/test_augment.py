"""Augmentation presets and ops: exact geometry, ranges, determinism."""

import gin
import numpy as np
import pytest

from chameleon_jax.data import augment
from chameleon_jax.data.transforms import TrainTransform
from chameleon_jax.registry import AUGMENTATIONS


def test_presets_overrides_and_gin():
  assert {"default", "none", "geometric", "photometric", "industrial",
          "medical"} <= set(AUGMENTATIONS.names())
  industrial = augment.from_preset("industrial")
  assert industrial.elastic_p == 0 and industrial.rotate == 5.0
  assert augment.from_preset("medical").rotate90 is False
  assert augment.from_preset("industrial", rotate=2.0, flip=None).rotate == 2.0
  with pytest.raises(KeyError, match="Unknown augmentations 'industry'"):
    augment.from_preset("industry")
  with pytest.raises(TypeError, match="sharpen"):
    augment.from_preset("default", sharpen=1.0)
  try:
    gin.parse_config("augmentations.industrial.rotate = 3.0")
    assert augment.from_preset("industrial").rotate == 3.0
    assert augment.from_preset("industrial", rotate=7.0).rotate == 7.0
  finally:
    gin.clear_config()


def test_warp_rotation_matches_rot90_and_marks_outside_ignore():
  rng = np.random.default_rng(0)
  x = rng.random((16, 16, 2)).astype(np.float32)
  mask = rng.integers(0, 3, (16, 16)).astype(np.uint8)
  # +90 degrees (counter-clockwise on screen) is np.rot90 with k=1.
  wx, wm = augment.warp(x, mask, 90.0)
  np.testing.assert_allclose(wx, np.rot90(x, 1), atol=1e-5)
  np.testing.assert_array_equal(wm, np.rot90(mask, 1))
  # Identity.
  wx, wm = augment.warp(x, mask, 0.0, np.zeros((2, 16, 16)))
  np.testing.assert_allclose(wx, x, atol=1e-6)
  np.testing.assert_array_equal(wm, mask)
  # 45 degrees: corners come from outside -> ignored; labels never blend.
  _, wm = augment.warp(x, mask, 45.0)
  assert wm[0, 0] == wm[15, 15] == augment.IGNORE_INDEX
  assert set(np.unique(wm)) <= {0, 1, 2, augment.IGNORE_INDEX}
  # A uniform shift by the displacement field moves content by that much.
  shift = np.zeros((2, 16, 16))
  shift[1] = 3.0
  wx, wm = augment.warp(x, mask, 0.0, shift)
  np.testing.assert_allclose(wx[:, :13], x[:, 3:], atol=1e-6)
  assert (wm[:, 13:] == augment.IGNORE_INDEX).all()


def test_photometric_ops_keep_range_dtype_and_any_channel_count():
  x = np.random.default_rng(1).random((24, 24, 5)).astype(np.float32)
  aug = augment.from_preset("photometric", blur_p=1.0)
  for seed in range(5):
    out = augment.photometric_ops(x, np.random.default_rng(seed), aug)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
  same = [augment.photometric_ops(x, np.random.default_rng(3), aug)
          for _ in range(2)]
  np.testing.assert_array_equal(*same)
  # Gamma > 1 darkens mid-tones, monotonically.
  ramp = np.linspace(0, 1, 11, dtype=np.float32)[None, :, None]
  dark = augment.photometric_ops(ramp, np.random.default_rng(0),
                                 augment.AugmentConfig(
                                     gamma=(2.0, 2.0), brightness=0.0,
                                     contrast=0.0, noise_std=0.0))
  np.testing.assert_allclose(dark[0, :, 0], ramp[0, :, 0] ** 2, atol=1e-6)


@pytest.mark.parametrize("preset", ["industrial", "medical", "geometric"])
def test_train_transform_with_presets_on_16bit_rgb(preset):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 65536, (48, 64, 3), dtype=np.uint16)
  mask = np.zeros((48, 64), np.uint8)
  mask[20:30, 20:40] = 1
  aug = augment.from_preset(preset, crop_size=(32, 32), elastic_p=1.0)
  transform = TrainTransform(None, "crop", aug)
  element = {"image": image, "mask": mask, "label": np.int32(1)}
  a = transform.random_map(element, np.random.default_rng(5))
  b = transform.random_map(element, np.random.default_rng(5))
  assert a["image"].shape == (32, 32, 3) and a["image"].dtype == np.float32
  assert 0 <= a["image"].min() and a["image"].max() <= 1
  assert set(np.unique(a["mask"])) <= {0, 1, augment.IGNORE_INDEX}
  np.testing.assert_array_equal(a["image"], b["image"])
