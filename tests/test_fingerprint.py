"""Fingerprint values against truths computed independently on generated data."""

import json
import random

import numpy as np
import pytest
from scipy import ndimage

from chameleon_jax.data import dataset, fingerprint, sampling
from chameleon_jax.data.sources import Item, SourceInfo, sha256

CLASSES = ("background", "pit", "scratch")


def _items(n=12, seed=0, dtype=np.uint8, channels=2):
  rng = np.random.default_rng(seed)
  items = []
  for k in range(n):
    h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
    top = np.iinfo(dtype).max
    image = rng.integers(0, top, (h, w, channels), dtype=dtype,
                         endpoint=True)
    mask = np.zeros((h, w), np.uint8)
    if k % 3:  # Two of three images have defects; squares of known area.
      mask[2:5, 2:5] = 1
      mask[10:12, 10:18] = 2 if k % 2 else 1
    if k == 4:
      mask[15:17, 0:2] = 255  # Unlabelled pixels.
    items.append(Item(f"i{k:02d}", image, mask, int(mask[10, 10] or
                                                    mask[3, 3]), "gen",
                      sha256(image.tobytes(), mask.tobytes())))
  return items


def _fingerprint(items, **kwargs):
  fp = fingerprint.Fingerprint(CLASSES, items[0].image.shape[2], **kwargs)
  for it in items:
    fp.add(it.image, it.mask, it.has_mask, it.label, it.content_hash)
  return fp.result()


def test_counts_and_statistics_equal_independent_truths():
  items = _items()
  fp = _fingerprint(items)
  masks = [it.mask for it in items]
  pixels = np.concatenate([it.image.reshape(-1, 2) for it in items])
  fg = np.concatenate([it.image.reshape(-1, 2)[((it.mask > 0) &
                                                (it.mask != 255)).ravel()]
                       for it in items])
  for c in range(2):
    for name, values in (("all", pixels[:, c]), ("foreground", fg[:, c])):
      stats = fp["intensity"][f"channel_{c}"][name]
      assert not stats["sampled"] and stats["pixels"] == len(values)
      assert stats["mean"] == pytest.approx(values.mean(), abs=1e-6)
      assert stats["std"] == pytest.approx(values.std(), abs=1e-6)
      for q in (0.5, 50, 99.5):
        assert stats[f"p{q:g}"] == pytest.approx(np.percentile(values, q),
                                                 abs=1e-6)
  labelled = sum(int((m != 255).sum()) for m in masks)
  for k, name in enumerate(CLASSES):
    entry = fp["classes"][name]
    count = sum(int((m == k).sum()) for m in masks)
    assert entry["pixels"] == count
    assert entry["pixel_frequency"] == pytest.approx(count / labelled, 1e-9)
    containing = [m for m in masks if (m == k).any()]
    assert entry["images"] == len(containing)
    shares = [(m == k).sum() / (m != 255).sum() for m in containing]
    assert entry["share_of_image"]["mean"] == pytest.approx(np.mean(shares))
    if k:
      comps = [ndimage.label(m == k, np.ones((3, 3)))[1] for m in containing]
      assert entry["components"]["count"] == sum(comps)
  # Class 1: one 3x3 square in every defect image, plus 2x8 bars in half.
  assert fp["classes"]["pit"]["components"]["area"]["min"] == 9
  assert fp["classes"]["pit"]["components"]["area"]["max"] == 16
  assert fp["masks"]["empty"] == 4 and fp["masks"]["empty_fraction"] == \
      pytest.approx(4 / 12)
  assert fp["masks"]["ignore_fraction"] == pytest.approx(
      4 / sum(m.size for m in masks))
  assert fp["images"]["count"] == 12 and fp["images"]["bit_depth"] == {"8": 12}
  assert fp["images"]["labels"] == {"background": 4, "pit": 4, "scratch": 4}
  areas = [a for m in masks for k in (1, 2)
           for a in np.bincount(ndimage.label(m == k, np.ones((3, 3)))[0]
                                .ravel())[1:]]
  pooled = fp["masks"]["component_area"]
  assert not pooled["sampled"]
  for q in (5, 25, 50, 75, 95):
    assert pooled[f"p{q}"] == pytest.approx(np.percentile(areas, q))


def test_sampled_percentiles_are_capped_close_and_order_free():
  items = _items(n=30, dtype=np.uint16, channels=1)
  full = _fingerprint(items)
  capped = _fingerprint(items, pixel_cap=2000)
  shuffled = list(items)
  random.Random(0).shuffle(shuffled)
  again = _fingerprint(shuffled, pixel_cap=2000)
  a = capped["intensity"]["channel_0"]["all"]
  b = again["intensity"]["channel_0"]["all"]
  assert a["sampled"] and not full["intensity"]["channel_0"]["all"]["sampled"]
  for q in ("p0.5", "p50", "p99.5"):
    assert a[q] == b[q]  # Bottom-k by content hash: item order is irrelevant.
    assert a[q] == pytest.approx(full["intensity"]["channel_0"]["all"][q],
                                 abs=0.03 * 65535)
  assert a["mean"] == pytest.approx(full["intensity"]["channel_0"]["all"]
                                    ["mean"], abs=1e-6)  # Moments are exact.


def test_bottom_k_keeps_exactly_the_smallest_priorities():
  sampler = sampling.BottomK(cap=50)
  offered = []
  for k in range(20):
    rng = sampling.item_rng(sha256(bytes([k])))
    values = np.arange(k * 10, k * 10 + 10, dtype=np.float64)
    priorities = sampling.item_rng(sha256(bytes([k]))).random(10)
    offered += list(zip(priorities, values))
    sampler.offer(values, rng)
  expected = sorted(offered)[:50]
  np.testing.assert_array_equal(sampler.values()[:, 0],
                                [v for _, v in expected])


def test_fingerprint_json_is_byte_identical_across_ingests(tmp_path):
  def build(out):
    items = _items()
    ds = dataset.build(SourceInfo(CLASSES, 2), iter(items), out, "fp",
                       dataset.IngestOptions({"train": 0.5, "val": 0.5}),
                       log=lambda *_: None)
    return (ds.path / "fingerprint.json").read_bytes()

  first, second = build(tmp_path / "a"), build(tmp_path / "b")
  assert first == second
  doc = json.loads(first)
  assert doc["schema_version"] == fingerprint.SCHEMA_VERSION


def test_texture_direction_against_analytic_values():
  y, x = np.mgrid[0:30, 0:40].astype(np.float64)
  ramp = (x + 2 * y)[..., None]  # Ex = 1, Ey = 4 exactly.
  assert fingerprint.texture_log_ratio(ramp) == pytest.approx(np.log(1 / 4))
  stripes = np.cos(np.pi / 2 * x)[..., None]  # Columns vary, rows do not.
  vertical = fingerprint.texture_log_ratio(stripes)
  assert vertical == pytest.approx(np.log(1 / fingerprint.TEXTURE_FLOOR),
                                   rel=1e-6)
  turned = fingerprint.texture_log_ratio(np.rot90(stripes).copy())
  assert turned == pytest.approx(-vertical)
  noise = np.random.default_rng(0).normal(size=(300, 300, 3))
  assert abs(fingerprint.texture_log_ratio(noise)) < 0.02  # 2σ² both ways
  assert fingerprint.texture_log_ratio(np.ones((5, 5, 1))) is None
  assert fingerprint.texture_log_ratio(np.arange(6.0).reshape(1, 6, 1)) is None


def test_texture_percentiles_over_images():
  items = _items(n=9)
  expected = [fingerprint.texture_log_ratio(it.image) for it in items]
  texture = _fingerprint(items)["images"]["texture"]
  assert texture["measured"] == 9
  assert texture["p50"] == pytest.approx(np.median(expected))
  assert texture["p10"] == pytest.approx(np.percentile(expected, 10))
