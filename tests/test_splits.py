"""Splits: groups stay together, duplicates never leak, k-fold, quality flags."""

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from chameleon_jax.data import dataset, duplicates, quality, splits
from chameleon_jax.data.sources import Item, SourceInfo, sha256

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _texture(seed, h=64, w=64):
  rng = np.random.default_rng(seed)
  return ndimage.gaussian_filter(rng.random((h, w)), 3)


def _item(item_id, grey, defect=False, group=""):
  image = np.rint(255 * (grey - grey.min()) / np.ptp(grey)).astype(np.uint8)
  mask = np.zeros(image.shape, np.uint8)
  if defect:
    mask[5:9, 5:9] = 1
  image = image[:, :, None]
  return Item(item_id, image, mask, int(defect), "gen",
              sha256(image.tobytes(), mask.tobytes(), item_id.encode()),
              group=group)


def _build(tmp_path, items, **options):
  return dataset.build(SourceInfo(("background", "defect"), 1), iter(items),
                       tmp_path, "s", dataset.IngestOptions(FRACTIONS,
                                                            **options),
                       log=lambda *_: None)


def test_grouped_items_and_duplicates_share_a_split(tmp_path):
  items = []
  for part in range(12):  # 12 parts photographed 3 times each (group key).
    for shot in range(3):
      items.append(_item(f"part{part:02d}_shot{shot}", _texture(100 + 3 * part
                                                                + shot),
                         defect=part % 3 == 0))
  base = _texture(7)
  items.append(_item("dup_a", base))
  items.append(_item("dup_b", base))  # Exact: identical pixels.
  noisy = base + np.random.default_rng(1).normal(0, 0.002, base.shape)
  items.append(_item("near_a", _texture(8)))
  items.append(_item("near_b", _texture(8) + np.random.default_rng(2).normal(
      0, 0.002, base.shape)))  # Near: re-captured with sensor noise.
  items.append(_item("near_c", noisy))  # Near duplicate of dup_a/dup_b.
  ds = _build(tmp_path, items, group_pattern=r"^(part\d+)_")
  split = {a["id"]: a["split"] for a in ds.manifest["items"]}
  for part in range(12):
    assert len({split[f"part{part:02d}_shot{s}"] for s in range(3)}) == 1
  assert split["dup_a"] == split["dup_b"] == split["near_c"]
  assert split["near_a"] == split["near_b"]
  report = ds.read_json("duplicates.json")
  assert [[i["id"] for i in g["items"]] for g in report["exact"]] == [
      ["dup_a", "dup_b"]]
  near = {(p["a"]["id"], p["b"]["id"]) for p in report["near"]}
  assert ("near_a", "near_b") in near and ("dup_a", "near_c") in near
  assert not any("part" in a and "part" in b for a, b in near)
  assert report["leakage"] == {"exact": 0, "near": 0}
  assert ds.manifest["leakage"] == {"exact": 0, "near": 0}
  # Groups move as units, so the counts only approximate the fractions.
  counts = Counter(split.values())
  assert counts["train"] > counts["val"] > 0 and counts["test"] > 0


def test_leak_check_counts_pairs_across_splits():
  assert duplicates.leaks(["train", "test", "train"], [[0, 1, 2]], []) == {
      "exact": 2, "near": 0}
  assert duplicates.leaks(["train", "val"], [], [(0, 1, 3)]) == {
      "exact": 0, "near": 1}


def test_group_split_keeps_strata_balanced():
  items = [(f"{g}-{k}", (g % 2, False), f"h{g}-{k}") for g in range(40)
           for k in range(1 + g % 3)]
  groups = [i.split("-")[0] for i, _, _ in items]
  a = splits.stratified_split(items, FRACTIONS, seed=0, groups=groups)
  b = splits.stratified_split(items[::-1], FRACTIONS, seed=0,
                              groups=groups[::-1])
  assert a == b  # Order-free.
  for g in range(40):
    assert len({a[f"{g}-{k}"] for k in range(1 + g % 3)}) == 1
  for stratum in (0, 1):
    members = [i for i, s, _ in items if s[0] == stratum]
    counts = Counter(a[m] for m in members)
    for name, fraction in FRACTIONS.items():
      assert abs(counts[name] - fraction * len(members)) <= 2


def test_kfold_folds_partition_and_rotate(tmp_path):
  items = [_item(f"x{k:02d}", _texture(200 + k), defect=k % 4 == 0)
           for k in range(40)]
  ds = _build(tmp_path, items, folds=4)
  assert ds.manifest["folds"] == 4
  assert sorted(ds.manifest["splits"]) == ["fold0", "fold1", "fold2", "fold3",
                                           "test"]
  test = {a["id"] for a in ds.items("test")}
  assert len(test) == 8
  vals = []
  for fold in range(4):
    view = dataset.Dataset.open(ds.path, fold=fold)
    train = {a["id"] for a in view.items("train")}
    val = {a["id"] for a in view.items("val")}
    assert not train & val and not (train | val) & test
    assert len(train | val | test) == 40
    assert view.num_examples("val") == len(val) == 8
    assert len(view.shard_paths("train")) == 3
    vals.append(val)
  assert set().union(*vals) == {f"x{k:02d}" for k in range(40)} - test
  with pytest.raises(ValueError, match="fold=4"):
    dataset.Dataset.open(ds.path, fold=4).items("val")


def _sharp(seed):
  x = ndimage.gaussian_filter(np.random.default_rng(seed).random((64, 64)), 1)
  return (x - x.min()) / np.ptp(x)


def test_quality_flags():
  grey = _sharp(1)
  blurred = ndimage.gaussian_filter(grey, 4)
  records = []
  for name, image in {
      "normal": grey, "normal2": _sharp(2), "normal3": _sharp(3),
      "dark": grey * 0.05, "bright": 0.95 + grey * 0.04,
      "flat": np.full_like(grey, 0.5),
      "blurry": (blurred - blurred.min()) / np.ptp(blurred),
      "long": np.tile(grey, (1, 5))}.items():
    x = (np.clip(image, 0, 1) * 255).astype(np.uint8)[:, :, None]
    records.append({"height": x.shape[0], "width": x.shape[1],
                    **quality.measure(x), "name": name})
  flags = {r["name"]: f for r, f in zip(records, quality.flag(records))}
  assert flags["normal"] == flags["normal2"] == flags["normal3"] == []
  assert "dark" in flags["dark"] and "bright" in flags["bright"]
  assert "flat" in flags["flat"] and "blurry" in flags["blurry"]
  assert "odd_aspect" in flags["long"] and "odd_size" in flags["long"]
