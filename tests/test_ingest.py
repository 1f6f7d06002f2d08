"""ETL for folder datasets: validation, quarantine, versioning, splits."""

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chameleon_jax.data import dataset, sources, splits, synthetic
from chameleon_jax.data import images as images_lib
from chameleon_jax.data.images import save_png

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _folder_dataset(root: Path, n: int = 30) -> Path:
  spec = synthetic.SyntheticSpec(num_images=n, seed=5, min_size=(32, 32),
                                 max_size=(32, 32))
  synthetic.write_folder(spec, root)
  return root


def _build(root: Path, out: Path, **kwargs):
  info, items = sources.image_mask_folders(
      str(root), class_names=synthetic.CLASS_NAMES, **kwargs)
  return dataset.build(info, items, out, "folders",
                       dataset.IngestOptions(FRACTIONS, max_bad_fraction=0.5),
                       log=lambda *_: None)


def _quarantine(ds) -> dict[str, str]:
  entries = json.loads((ds.path / "quarantine.json").read_text())
  return {Path(e["path"]).name: e["reason"] for e in entries}


def test_folder_ingest_counts_and_roundtrip(tmp_path):
  root = _folder_dataset(tmp_path / "raw")
  ds = _build(root, tmp_path / "out")
  assert ds.manifest["num_items"] == 30 and ds.manifest["num_quarantined"] == 0
  assert sum(ds.num_examples(s) for s in FRACTIONS) == 30
  # Records decode to exactly the source pixels.
  import grain
  src = grain.sources.ArrayRecordDataSource(ds.shard_paths("train"))
  record = dataset.decode_record(src[0])
  image = np.asarray(Image.open(root / "images" / f"{record['id']}.png"))
  np.testing.assert_array_equal(record["image"][:, :, 0], image)
  for shard in ds.manifest["splits"]["train"]["shards"]:
    assert len(shard["sha256"]) == 64


def test_multiple_shards_keep_manifest_order(tmp_path, monkeypatch):
  monkeypatch.setattr(dataset, "ITEMS_PER_SHARD", 7)
  info, items = sources.synthetic_source(num_images=40, min_size=(16, 16),
                                         max_size=(16, 16))
  ds = dataset.build(info, items, tmp_path, "sharded",
                     dataset.IngestOptions(FRACTIONS), log=lambda *_: None)
  import grain
  paths = ds.shard_paths("train")
  assert len(paths) == 4  # 28 train items in shards of at most 7.
  src = grain.sources.ArrayRecordDataSource(paths)
  ids = [dataset.decode_record(src[i])["id"] for i in range(len(src))]
  assert ids == [a["id"] for a in ds.manifest["items"]
                 if a["split"] == "train"]


def test_reingest_is_noop_and_new_file_makes_new_version(tmp_path):
  root = _folder_dataset(tmp_path / "raw")
  first = _build(root, tmp_path / "out")
  mtime = (first.path / "manifest.json").stat().st_mtime_ns
  again = _build(root, tmp_path / "out")
  assert again.dataset_hash == first.dataset_hash
  assert (again.path / "manifest.json").stat().st_mtime_ns == mtime
  image, mask = synthetic.render(synthetic.SyntheticSpec(seed=99,
                                                         min_size=(32, 32),
                                                         max_size=(32, 32)), 0)
  save_png(root / "images" / "extra.png", image)
  save_png(root / "masks" / "extra.png", mask)
  third = _build(root, tmp_path / "out")
  assert third.dataset_hash != first.dataset_hash
  assert dataset.latest(tmp_path / "out", "folders").path == third.path
  assert first.path.is_dir()  # Old versions are kept.


def test_bad_files_are_quarantined_with_reasons(tmp_path):
  root = _folder_dataset(tmp_path / "raw", n=20)
  images, masks = root / "images", root / "masks"
  # A truncated JPEG.
  Image.fromarray(np.full((32, 32), 128, np.uint8)).save(images / "trunc.jpg",
                                                          quality=95)
  data = (images / "trunc.jpg").read_bytes()
  (images / "trunc.jpg").write_bytes(data[: len(data) // 2])
  save_png(masks / "trunc.png", np.zeros((32, 32), np.uint8))
  # A mask whose size differs from its image.
  save_png(images / "size.png", np.zeros((32, 32, 1), np.uint8))
  save_png(masks / "size.png", np.zeros((16, 32), np.uint8))
  # Mask values outside the declared labels (0..3).
  save_png(images / "values.png", np.zeros((32, 32, 1), np.uint8))
  save_png(masks / "values.png", np.full((32, 32), 7, np.uint8))
  # An image without its mask, and a mask without its image.
  save_png(images / "alone.png", np.zeros((32, 32, 1), np.uint8))
  save_png(masks / "orphan.png", np.zeros((32, 32), np.uint8))
  # An empty file and a text file named .png (issue 37, item 10).
  (images / "empty.png").write_bytes(b"")
  save_png(masks / "empty.png", np.zeros((32, 32), np.uint8))
  (images / "text.png").write_text("id,label\n1,scratch\n")
  save_png(masks / "text.png", np.zeros((32, 32), np.uint8))
  ds = _build(root, tmp_path / "out")
  q = _quarantine(ds)
  assert ds.manifest["num_items"] == 20
  assert "trunc.jpg" in q and "cannot decode" in q["trunc.jpg"]
  assert q["empty.png"].endswith("empty.png: empty file (0 bytes).")
  assert "text.png: not an image" in q["text.png"] and "b'id,label" in \
      q["text.png"] and "BytesIO" not in q["text.png"]
  assert "size.png" in q and "16" in q["size.png"] and "differs" in q["size.png"]
  assert "values.png" in q and "[7]" in q["values.png"]
  assert "alone.png" in q and "missing mask" in q["alone.png"]
  assert q["orphan.png"].startswith("orphan mask: no image orphan.*")


def test_a_transparent_alpha_channel_is_dropped_with_a_note(tmp_path, caplog):
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., :3], rgba[..., 3] = 90, 255
  Image.fromarray(rgba).save(tmp_path / "opaque.png")
  rgba[:2, :, 3] = 0  # A quarter of the pixels transparent.
  Image.fromarray(rgba).save(tmp_path / "holes.png")
  with caplog.at_level(logging.WARNING):
    opaque = images_lib.load_image(tmp_path / "opaque.png")
    assert not caplog.records  # An opaque alpha loses nothing: no note.
    holes = images_lib.load_image(tmp_path / "holes.png")
  assert opaque.shape == holes.shape == (8, 8, 3) and (holes == 90).all()
  (note,) = [r.getMessage() for r in caplog.records]
  assert "holes.png" in note and "alpha channel dropped" in note \
      and "25.0% of the pixels" in note


def test_too_many_bad_files_fail_the_build(tmp_path):
  root = _folder_dataset(tmp_path / "raw", n=4)
  for i in range(4):
    (root / "images" / f"bad{i}.png").write_bytes(b"not a png")
  info, items = sources.image_mask_folders(str(root),
                                           class_names=synthetic.CLASS_NAMES)
  with pytest.raises(dataset.BadInputError, match="4 of 8 inputs"):
    dataset.build(info, items, tmp_path / "out", "x",
                  dataset.IngestOptions(FRACTIONS, max_bad_fraction=0.1),
                  log=lambda *_: None)


def test_empty_folder_is_a_clear_error(tmp_path):
  (tmp_path / "images").mkdir()
  (tmp_path / "masks").mkdir()
  with pytest.raises(ValueError, match=r"No images .* found in .*images"):
    sources.image_mask_folders(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="Mask folder .*nomasks"):
    sources.image_mask_folders(str(tmp_path), masks_dir="nomasks")


def _class_folders(root: Path) -> None:
  """A magnetic-tile-like layout: <Class>/Imgs/<stem>.jpg + <stem>.png."""
  rng = np.random.default_rng(0)
  for folder, n in (("MT_Free", 12), ("MT_Crack", 6), ("MT_Spot", 6)):
    (root / folder / "Imgs").mkdir(parents=True)
    for i in range(n):
      h, w = int(rng.integers(20, 40)), int(rng.integers(20, 50))
      Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(
          root / folder / "Imgs" / f"{folder}_{i}.jpg")
      mask = np.zeros((h, w), np.uint8)
      if folder != "MT_Free":
        mask[5:9, 5:12] = 255
        mask[9, 5] = 130  # Anti-aliased grey: >= 128 counts as defect.
        mask[10, 5] = 100
      Image.fromarray(mask).save(root / folder / "Imgs" / f"{folder}_{i}.png")


def test_class_folders_multiclass_and_binary(tmp_path):
  _class_folders(tmp_path / "raw")
  classes = {"MT_Free": 0, "MT_Crack": 1, "MT_Spot": 2}
  info, items = sources.class_folders(str(tmp_path / "raw"), classes=classes,
                                      images_subdir="Imgs")
  assert info.class_names == ("background", "MT_Crack", "MT_Spot")
  items = list(items)
  assert len(items) == 24
  spot = next(i for i in items if i.item_id.startswith("MT_Spot/"))
  assert set(np.unique(spot.mask)) == {0, 2}
  assert (spot.mask == 2).sum() == 4 * 7 + 1 and spot.label == 2
  info, items = sources.class_folders(str(tmp_path / "raw"), classes=classes,
                                      images_subdir="Imgs", binary=True)
  assert info.class_names == ("background", "defect")
  labels = Counter((i.label, int(i.mask.max())) for i in items)
  assert labels == {(0, 0): 12, (1, 1): 6, (2, 1): 6}


def test_split_is_stratified_deterministic_and_order_free():
  items = [(f"id{i}", (i % 3, i % 2 == 0), f"h{i}") for i in range(300)]
  a = splits.stratified_split(items, FRACTIONS, seed=1)
  b = splits.stratified_split(items[::-1], FRACTIONS, seed=1)
  assert a == b
  assert a != splits.stratified_split(items, FRACTIONS, seed=2)
  for stratum in {s for _, s, _ in items}:
    members = [i for i, s, _ in items if s == stratum]
    counts = Counter(a[m] for m in members)
    # 50 per stratum: val and test get round(7.5) = 8, train the rest.
    assert counts == {"train": 34, "val": 8, "test": 8}
  with pytest.raises(ValueError, match="sum to 1"):
    splits.stratified_split(items, {"train": 0.9, "val": 0.2}, seed=0)


def test_magnetic_tile_ingests_with_nothing_lost(magnetic_tile, tmp_path):
  classes = {"MT_Free": 0, "MT_Blowhole": 1, "MT_Break": 2, "MT_Crack": 3,
             "MT_Fray": 4, "MT_Uneven": 5}
  info, items = sources.class_folders(str(magnetic_tile), classes=classes,
                                      images_subdir="Imgs")
  ds = dataset.build(info, items, tmp_path, "mt",
                     dataset.IngestOptions(FRACTIONS), log=lambda *_: None)
  m = ds.manifest
  assert m["num_items"] + m["num_quarantined"] == 1344
  assert m["num_items"] == 1344
  assert sum(a["foreground_fraction"] == 0 for a in m["items"]) == 956
  labels = Counter(a["label"] for a in m["items"])
  assert labels == {0: 952, 1: 115, 2: 85, 3: 57, 4: 32, 5: 103}
  # Stratification: every class is present in every split.
  for split in FRACTIONS:
    assert len(m["splits"][split]["label_counts"]) == 6
  # The fingerprint reproduces ../shared/data/DATA.md.
  fp = ds.read_json("fingerprint.json")
  assert fp["images"]["count"] == 1344 and fp["masks"]["empty"] == 956
  assert fp["images"]["distinct_sizes"] == 1225
  assert (fp["images"]["width"]["min"], fp["images"]["width"]["max"]) == (
      103, 632)
  assert (fp["images"]["height"]["min"], fp["images"]["height"]["max"]) == (
      222, 403)
  published = {"MT_Blowhole": (115, 0.0021, 0.0014),
               "MT_Break": (85, 0.043, 0.013), "MT_Crack": (57, 0.0049, 0.0031),
               "MT_Fray": (32, 0.17, 0.15), "MT_Uneven": (99, 0.25, 0.25)}
  for name, (images, mean, median) in published.items():
    entry = fp["classes"][name]
    assert entry["images"] == images  # 4 MT_Uneven masks are empty.
    assert entry["share_of_image"]["mean"] == pytest.approx(mean, rel=0.05)
    assert entry["share_of_image"]["median"] == pytest.approx(median, rel=0.05)
  # The same tiles were photographed several times (expN_num_*): pHash finds
  # them, and they never straddle splits.
  report = ds.read_json("duplicates.json")
  assert len(report["near"]) > 500
  assert report["leakage"] == {"exact": 0, "near": 0}
  assert (ds.path / "report.md").is_file()


def _png_claiming(path: Path, width: int, height: int) -> None:
  """A small PNG whose header claims width x height (a decompression bomb's
  header without its cost): decoding it would fail or take gigabytes."""
  import struct
  import zlib
  save_png(path, np.zeros((8, 8), np.uint8))
  data = bytearray(path.read_bytes())
  ihdr = 8 + 8  # Signature, then length + "IHDR".
  data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
  crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])) & 0xFFFFFFFF
  data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
  path.write_bytes(bytes(data))


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
  """Issue 37, item 4: a 12000 x 12000 PNG of a few hundred KB was decoded
  (42 s, 5 GB). The header is checked against data.max_pixels first."""
  from chameleon_jax.data import images as imio
  root = _folder_dataset(tmp_path / "raw", n=20)
  _png_claiming(root / "images" / "bomb.png", 12000, 12000)
  save_png(root / "masks" / "bomb.png", np.zeros((32, 32), np.uint8))
  ds = _build(root, tmp_path / "out")
  reason = _quarantine(ds)["bomb.png"]
  assert "12000 x 12000 = 144.0 Mpx" in reason
  assert f"data.max_pixels = {imio.MAX_PIXELS}" in reason
  with imio.pixel_limit(1000):  # The knob, as --mode=ingest applies it.
    with pytest.raises(imio.DecodeError, match="32 x 32 = 0.0 Mpx"):
      imio.load_image(next(p for p in sorted((root / "images").iterdir())
                           if p.name != "bomb.png"))
    with pytest.raises(imio.DecodeError, match="max_pixels = 1000"):
      imio.load_mask(root / "masks" / "bomb.png")
  assert imio.load_mask(root / "masks" / "bomb.png").shape == (32, 32)
  # Above Pillow's own hard stop (2 x 89 Mpx) it refuses first: same kind.
  _png_claiming(tmp_path / "huge.png", 20000, 20000)
  with pytest.raises(imio.DecodeError, match="refused before decoding"):
    imio.load_image(tmp_path / "huge.png")
