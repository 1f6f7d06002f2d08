"""Every ingest format, with well-formed and malformed files of every kind.

Each malformed item must reach the quarantine report with a reason that names
it; each good item must come out with exactly the mask its annotation draws.
"""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from pycocotools import mask as mask_utils

from chameleon_jax.data import dataset, records, sources
from chameleon_jax.data.formats import coco, labelme, tables, voc
from chameleon_jax.data.sources import Item, Rejected
from tests.conftest import opened_files

ALL = {"train": 1.0}


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array, mode).save(path)
  return path


def _grey(h=40, w=60, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w), np.uint8)


def _split(entries):
  entries = list(entries)
  return ([e for e in entries if isinstance(e, Item)],
          [e for e in entries if isinstance(e, Rejected)])


def _reasons(rejected) -> dict[str, str]:
  return {Path(r.path).name: r.reason for r in rejected}


# --- labelme ----------------------------------------------------------------

def _labelme(path: Path, shapes, image_path="img.png", size=(40, 60), **extra):
  doc = {"version": "5.4.1", "shapes": shapes, "imagePath": image_path,
         "imageHeight": size[0], "imageWidth": size[1], "imageData": None,
         **extra}
  path.write_text(json.dumps(doc))


def _shape(label, points, kind="polygon"):
  return {"label": label, "points": points, "shape_type": kind,
          "group_id": None, "flags": {}}


def test_labelme_rasterises_and_quarantines(tmp_path):
  _png(tmp_path / "img.png", _grey())
  good = [_shape("scratch", [[10, 5], [30, 5], [30, 20], [10, 20]]),
          _shape("dent", [[40, 10], [49, 19]], "rectangle"),
          _shape("dent", [[20, 30], [22, 30]], "circle")]
  _labelme(tmp_path / "good.json", good)
  # The image embedded as base64 instead of a file beside the JSON.
  buffer = io.BytesIO()
  Image.fromarray(_grey(seed=1)).save(buffer, format="PNG")
  _labelme(tmp_path / "embedded.json", good[:1], image_path="gone.png",
           imageData=base64.b64encode(buffer.getvalue()).decode())
  bad = {
      "syntax.json": "{not json",
      "nofile.json": dict(image_path="missing.png"),
      "base64.json": dict(image_path="missing.png", imageData="@@@"),
      "label.json": dict(shapes=[_shape("rust", [[1, 1], [5, 1], [5, 5]])]),
      "line.json": dict(shapes=[_shape("scratch", [[1, 1], [5, 5]], "line")]),
      "outside.json": dict(shapes=[_shape("scratch",
                                          [[1, 1], [80, 1], [5, 5]])]),
      "points.json": dict(shapes=[_shape("scratch", [[1, 1], [5, 1]])]),
      "size.json": dict(size=(41, 60)),
      "noshapes.json": dict(shapes=None),
  }
  for name, spec in bad.items():
    if isinstance(spec, str):
      (tmp_path / name).write_text(spec)
    else:
      _labelme(tmp_path / name, spec.pop("shapes", good),
               image_path=spec.pop("image_path", "img.png"),
               size=spec.pop("size", (40, 60)), **spec)
  info, entries = labelme.labelme(str(tmp_path),
                                  class_names=("background", "scratch", "dent"))
  items, rejected = _split(entries)
  reasons = _reasons(rejected)
  assert sorted(reasons) == sorted(bad)
  assert "JSON" in reasons["syntax.json"]
  assert "missing.png" in reasons["nofile.json"]
  assert "base64" in reasons["base64.json"]
  assert "'rust'" in reasons["label.json"]
  assert "'line'" in reasons["line.json"]
  assert "(80, 1) outside the 60x40" in reasons["outside.json"]
  assert "at least 3" in reasons["points.json"]
  assert "41x60" in reasons["size.json"]
  assert "shapes" in reasons["noshapes.json"]
  by_id = {i.item_id: i for i in items}
  mask = by_id["good"].mask
  expected = np.zeros((40, 60), np.uint8)
  expected[5:21, 10:31] = 1  # PIL fills the polygon and its outline.
  expected[10:20, 40:50] = 2
  np.testing.assert_array_equal(mask[:, :35][:25], expected[:, :35][:25])
  np.testing.assert_array_equal(mask[10:20, 40:50], 2)
  assert mask[30, 21] == 2 and mask[30, 25] == 0  # Circle of radius 2.
  assert by_id["good"].label == 1  # Dominant class: the polygon.
  assert by_id["embedded"].mask[10, 20] == 1
  np.testing.assert_array_equal(by_id["embedded"].image[:, :, 0], _grey(seed=1))


# --- COCO -------------------------------------------------------------------

def _coco_files(tmp_path: Path) -> Path:
  images = []
  for k, name in enumerate(["a.png", "b.png", "c.png", "d.png", "e.png",
                            "f.png", "g.png", "h.png", "i.png"]):
    _png(tmp_path / name, np.stack([_grey(seed=k)] * 3, -1))
    images.append({"id": k + 1, "file_name": name, "height": 40, "width": 60})
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
  images.append({"id": 20, "file_name": "broken.png", "height": 40,
                 "width": 60})
  images.append({"id": 21, "file_name": "absent.png", "height": 40,
                 "width": 60})
  images[7]["height"] = 50  # h.png: recorded size differs from the file.
  square = [[5, 5, 35, 5, 35, 30, 5, 30]]
  small = np.zeros((40, 60), np.uint8, order="F")
  small[10:14, 10:14] = 1
  compressed = mask_utils.encode(small)
  compressed["counts"] = compressed["counts"].decode()
  uncompressed = {"size": [40, 60], "counts": [40 * 20 + 2, 3,
                                               40 * 60 - 40 * 20 - 5]}
  anns = [
      # a: a large polygon of class 1 and a small RLE of class 2 inside it.
      {"id": 1, "image_id": 1, "category_id": 7, "segmentation": square,
       "bbox": [5, 5, 30, 25], "iscrowd": 0, "area": 750},
      {"id": 2, "image_id": 1, "category_id": 9, "segmentation": compressed,
       "bbox": [10, 10, 4, 4], "iscrowd": 1, "area": 16},
      # b: an uncompressed (crowd) RLE.
      {"id": 3, "image_id": 2, "category_id": 9, "segmentation": uncompressed,
       "iscrowd": 1},
      # c .. g: one malformed annotation each.
      {"id": 4, "image_id": 3, "category_id": 99, "segmentation": square},
      {"id": 5, "image_id": 4, "category_id": 7,
       "segmentation": [[5, 5, 95, 5, 35, 30]]},
      {"id": 6, "image_id": 5, "category_id": 7, "segmentation": square,
       "bbox": [50, 30, 30, 25]},
      {"id": 7, "image_id": 6, "category_id": 7,
       "segmentation": {"size": [20, 60], "counts": [1200]}},
      {"id": 8, "image_id": 7, "category_id": 7, "segmentation": [[1, 2]]},
      {"id": 9, "image_id": 77, "category_id": 7, "segmentation": square},
  ]
  doc = {"images": images, "annotations": anns,
         "categories": [{"id": 9, "name": "pit"}, {"id": 7, "name": "stain"}]}
  path = tmp_path / "instances.json"
  path.write_text(json.dumps(doc))
  return path


def test_coco_polygons_rle_instances_and_quarantine(tmp_path):
  info, entries = coco.coco(str(_coco_files(tmp_path)))
  assert info.class_names == ("background", "stain", "pit")
  items, rejected = _split(entries)
  reasons = {r.path.split("/")[-1]: r.reason for r in rejected}
  assert sorted(reasons) == ["absent.png", "broken.png", "c.png", "d.png",
                             "e.png", "f.png", "g.png", "h.png",
                             "instances.json#image_id=77"]
  assert "category_id 99" in reasons["c.png"]
  assert "(95, 5) outside" in reasons["d.png"]
  assert "bbox" in reasons["e.png"]
  assert "RLE size [20, 60]" in reasons["f.png"]
  assert "polygons must be" in reasons["g.png"]
  assert "50x60" in reasons["h.png"]
  assert "missing image" in reasons["absent.png"]
  assert "annotations [9]" in reasons["instances.json#image_id=77"]
  by_id = {i.item_id: i for i in items}
  assert sorted(by_id) == ["a", "b", "i"]
  a = by_id["a"].mask
  assert a[20, 20] == 1 and a[12, 12] == 2  # The small instance on top.
  assert a[2, 2] == 0 and (a == 2).sum() == 16
  b = by_id["b"].mask  # Column-major RLE: column 20, rows 2..4.
  assert (b == 2).sum() == 3 and set(np.argwhere(b == 2)[:, 1]) == {20}
  assert not by_id["i"].mask.any()  # An image without annotations is clean.
  instances = by_id["a"].annotations["instances"]
  assert [i["category"] for i in instances] == [1, 2]
  assert instances[1]["bbox"] == [10.0, 10.0, 4.0, 4.0]
  rle = {"size": [40, 60], "counts": instances[1]["rle"].encode()}
  np.testing.assert_array_equal(mask_utils.decode(rle), (a == 2))
  # Instances travel with the stored record.
  ds = dataset.build(info, iter(items), tmp_path / "out", "coco",
                     dataset.IngestOptions(ALL), log=lambda *_: None)
  record = next(records.read(Path(ds.shard_paths("train")[0])))
  assert dataset.decode_annotations(record)["instances"][0]["category"] == 1


def test_coco_file_level_errors_name_the_file(tmp_path):
  path = tmp_path / "x.json"
  path.write_text(json.dumps({"images": []}))
  with pytest.raises(ValueError, match="x.json.*'annotations'"):
    coco.coco(str(path))
  path.write_text("{")
  with pytest.raises(ValueError, match="x.json: cannot read"):
    coco.coco(str(path))


# --- Pascal VOC -------------------------------------------------------------

def _palette_png(path: Path, indices: np.ndarray) -> None:
  img = Image.fromarray(indices, "P")
  img.putpalette([v for k in range(256) for v in (k, 255 - k, k // 2)])
  path.parent.mkdir(parents=True, exist_ok=True)
  img.save(path)


def test_voc_palette_masks_void_is_ignore(tmp_path):
  root = tmp_path / "VOC"
  rgb = np.stack([_grey(seed=3)] * 3, -1)
  mask = np.zeros((40, 60), np.uint8)
  mask[10:20, 10:20] = 15
  mask[9, 9:21] = 255  # The void border.
  for stem in ("ok", "rgbmask", "badvalue", "size", "nojpeg"):
    if stem != "nojpeg":
      Image.fromarray(rgb).save(_png(root / "JPEGImages" / f"{stem}.jpg",
                                     rgb))
  _palette_png(root / "SegmentationClass" / "ok.png", mask)
  _png(root / "SegmentationClass" / "rgbmask.png", rgb)
  bad = mask.copy()
  bad[0, 0] = 30
  _palette_png(root / "SegmentationClass" / "badvalue.png", bad)
  _palette_png(root / "SegmentationClass" / "size.png", mask[:30])
  _palette_png(root / "SegmentationClass" / "nojpeg.png", mask)
  (root / "ImageSets" / "Segmentation").mkdir(parents=True)
  (root / "ImageSets" / "Segmentation" / "train.txt").write_text(
      "ok\nrgbmask\nbadvalue\nsize\nnojpeg\nnomask\n")
  info, entries = voc.voc(str(root), image_set="train")
  items, rejected = _split(entries)
  reasons = _reasons(rejected)
  assert sorted(reasons) == ["badvalue.png", "nojpeg.jpg", "nomask.jpg",
                             "rgbmask.png", "size.png"]
  assert "mode 'RGB'" in reasons["rgbmask.png"]
  assert "[30]" in reasons["badvalue.png"]
  assert "mask size 60x30" in reasons["size.png"]
  assert "missing mask" in reasons["nomask.jpg"]
  assert "missing image" in reasons["nojpeg.jpg"]
  (item,) = items
  assert item.label == 15 and info.class_names[15] == "person"
  assert (item.mask == 255).sum() == 12 and (item.mask == 15).sum() == 100
  # The void border reaches training as the ignore index.
  ds = dataset.build(info, iter(items), tmp_path / "out", "voc",
                     dataset.IngestOptions(ALL), log=lambda *_: None)
  fp = ds.read_json("fingerprint.json")
  assert fp["masks"]["ignore_fraction"] == pytest.approx(12 / 2400)
  assert fp["classes"]["person"]["pixels"] == 100


# --- CSV / JSON lists -------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_tables_classification_lists(tmp_path, suffix):
  for k, name in enumerate(["ok1", "ok2", "nok1", "corrupt"]):
    _png(tmp_path / "img" / f"{name}.png", _grey(seed=k))
  (tmp_path / "img" / "corrupt.png").write_bytes(b"garbage")
  rows = [{"image": "img/ok1.png", "label": "ok", "part": "p1"},
          {"image": "img/ok2.png", "label": "ok", "part": "p1"},
          {"image": "img/nok1.png", "label": "scratch", "part": "p2"},
          {"image": "", "label": "ok", "part": "p3"},
          {"image": "img/ok1.png", "label": "rust", "part": "p3"},
          {"image": "img/gone.png", "label": "ok", "part": "p4"},
          {"image": "img/corrupt.png", "label": "ok", "part": "p5"}]
  path = tmp_path / f"list{suffix}"
  if suffix == ".csv":
    path.write_text("image,label,part\n" + "".join(
        f"{r['image']},{r['label']},{r['part']}\n" for r in rows))
  elif suffix == ".json":
    path.write_text(json.dumps({"items": rows}))
  else:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  info, entries = tables.table(str(path), group_column="part",
                               class_names=("ok", "scratch"))
  items, rejected = _split(entries)
  first = 2 if suffix == ".csv" else 1
  reasons = {r.path.rsplit(":", 1)[1]: r.reason for r in rejected}
  assert sorted(reasons) == sorted(f"row {first + k}" for k in (3, 4, 5, 6))
  assert "empty 'image'" in reasons[f"row {first + 3}"]
  assert "'rust'" in reasons[f"row {first + 4}"]
  assert "gone.png" in reasons[f"row {first + 5}"]
  assert "corrupt.png" in reasons[f"row {first + 6}"]
  assert [(i.item_id, i.label, i.group, i.has_mask) for i in items] == [
      ("img/ok1", 0, "p1", False), ("img/ok2", 0, "p1", False),
      ("img/nok1", 1, "p2", False)]
  with pytest.raises(ValueError, match="columns \\['lbl'\\] not found"):
    tables.table(str(path), label_column="lbl")


# --- TIFF: bit depth and channels kept --------------------------------------

def test_tiff_16bit_and_multichannel_keep_depth(tmp_path):
  rng = np.random.default_rng(0)
  images, masks = tmp_path / "images", tmp_path / "masks"
  images.mkdir()
  stack = rng.integers(0, 65536, (5, 32, 48), np.uint16)  # planar C, H, W
  tifffile.imwrite(images / "planar.tif", stack)
  tifffile.imwrite(images / "last.tiff", np.moveaxis(stack, 0, -1),
                   photometric="minisblack", planarconfig="contig")
  (images / "broken.tif").write_bytes(b"II*\x00garbage")
  tifffile.imwrite(images / "float.tif", stack.astype(np.float32))
  mask = np.zeros((32, 48), np.uint8)
  mask[4:8, 4:8] = 1
  for stem in ("planar", "last", "broken", "float"):
    _png(masks / f"{stem}.png", mask)
  info, entries = sources.image_mask_folders(str(tmp_path), channels=5)
  items, rejected = _split(entries)
  reasons = _reasons(rejected)
  assert sorted(reasons) == ["broken.tif", "float.tif"]
  assert "cannot decode TIFF" in reasons["broken.tif"]
  assert "float32" in reasons["float.tif"]
  for item in items:
    assert item.image.dtype == np.uint16 and item.image.shape == (32, 48, 5)
    np.testing.assert_array_equal(item.image, np.moveaxis(stack, 0, -1))
  ds = dataset.build(info, iter(items), tmp_path / "out", "tiff",
                     dataset.IngestOptions(ALL), log=lambda *_: None)
  record = dataset.decode_record(
      next(records.read(Path(ds.shard_paths("train")[0]))))
  assert record["image"].dtype == np.uint16  # Until normalisation.
  fp = ds.read_json("fingerprint.json")
  assert fp["images"]["bit_depth"] == {"16": 2}
  assert fp["images"]["channels"] == {"5": 2}


def test_grey_16bit_png_and_class_folders_without_masks(tmp_path):
  for k, folder in enumerate(["good", "bad"]):
    (tmp_path / folder).mkdir()
    Image.fromarray(np.full((8, 8), 40000 + k, np.uint16)).save(
        tmp_path / folder / "x.png")
  info, entries = sources.class_folders(
      str(tmp_path), classes={"good": 0, "bad": 1}, masks=False, image_ext="")
  items, rejected = _split(entries)
  assert not rejected and len(items) == 2
  assert all(i.image.dtype == np.uint16 and not i.has_mask for i in items)
  assert sorted((i.item_id, i.label) for i in items) == [("bad/x", 1),
                                                         ("good/x", 0)]


# --- MATLAB masks (image_mask_folders with mask_ext=".mat") ------------------

def _mat(path: Path, variables: dict) -> Path:
  import scipy.io
  path.parent.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(path, variables)
  return path


def _cells(*arrays) -> np.ndarray:
  """A MATLAB cell array (one entry per annotator, say)."""
  cells = np.empty(len(arrays), dtype=object)
  for i, a in enumerate(arrays):
    cells[i] = a
  return cells


def test_mat_masks_read_by_field_with_a_value_map(tmp_path):
  """CrackForest's layout: groundTruth.Segmentation, 1 = road, 2 = crack."""
  segmentation = np.ones((40, 60), np.uint8)
  segmentation[10:14, 5:50] = 2
  for stem in ("good", "nofield", "fractional", "hdf5", "cells", "garbage"):
    _png(tmp_path / "images" / f"{stem}.png", _grey())
  _mat(tmp_path / "masks" / "good.mat", {"groundTruth": {
      "Segmentation": segmentation, "Boundaries": segmentation == 2}})
  _mat(tmp_path / "masks" / "nofield.mat", {"other": {"x": segmentation}})
  _mat(tmp_path / "masks" / "fractional.mat", {"groundTruth": {
      "Segmentation": segmentation * 0.5}})
  (tmp_path / "masks" / "hdf5.mat").write_bytes(
      b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + bytes(200))
  _mat(tmp_path / "masks" / "cells.mat", {"groundTruth": {
      "Segmentation": _cells(segmentation, segmentation)}})
  (tmp_path / "masks" / "garbage.mat").write_bytes(b"\x00garbage" * 20)
  info, entries = sources.image_mask_folders(
      str(tmp_path), mask_ext=".mat", mat_field="groundTruth.Segmentation",
      value_map={1: 0, 2: 1}, class_names=("background", "crack"))
  items, rejected = _split(entries)
  assert [i.item_id for i in items] == ["good"]
  np.testing.assert_array_equal(items[0].mask, (segmentation == 2))
  reasons = _reasons(rejected)
  assert set(reasons) == {"nofield.mat", "fractional.mat", "hdf5.mat",
                          "cells.mat", "garbage.mat"}
  assert "field 'groundTruth' not found" in reasons["nofield.mat"]
  assert "['other']" in reasons["nofield.mat"]
  assert "not whole numbers" in reasons["fractional.mat"]
  assert "v7.3 (HDF5)" in reasons["hdf5.mat"]
  assert "a cell/struct array of 2; expected a 2-D numeric mask" in \
      reasons["cells.mat"]
  assert "cannot read as a .mat file" in reasons["garbage.mat"]


def test_mat_mask_without_a_field_takes_the_only_2d_variable(tmp_path):
  from chameleon_jax.data import matfiles
  import scipy.io
  mask = np.zeros((5, 7)); mask[1, 2] = 1
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, {"gt": mask, "name": "x"})
  np.testing.assert_array_equal(
      matfiles.load_mask("a.mat", buffer.getvalue()), mask.astype(np.int64))
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, {"a": mask, "b": mask})
  with pytest.raises(matfiles.DecodeError, match="mat_field"):
    matfiles.load_mask("a.mat", buffer.getvalue())
  # An index into a cell array of annotators.
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, {"gt": _cells(mask, 2 * mask)})
  np.testing.assert_array_equal(
      matfiles.load_mask("a.mat", buffer.getvalue(), "gt.1"), 2 * mask)
  with pytest.raises(ValueError, match="mat_field='gt' is for MATLAB"):
    sources.image_mask_folders(str(tmp_path), mat_field="gt")


# --- No file outside the dataset root is read --------------------------------

@pytest.fixture
def opened():
  """Every path the process opens while the test runs (an audit hook)."""
  with opened_files() as files:
    yield files


def test_no_source_reads_outside_its_root(tmp_path, opened):
  outside = tmp_path / "outside"
  secret = _png(outside / "secret.png", _grey(seed=9))
  root = tmp_path / "root"
  _png(root / "img.png", _grey())
  # labelme: a relative escape and an absolute path.
  (root / "labelme").mkdir(parents=True)
  _labelme(root / "labelme" / "up.json", [],
           image_path="../../outside/secret.png")
  _labelme(root / "labelme" / "abs.json", [], image_path=str(secret))
  # COCO: file_name escaping images_dir.
  (root / "coco.json").write_text(json.dumps({
      "images": [{"id": 1, "file_name": "../outside/secret.png",
                  "height": 40, "width": 60}],
      "annotations": [], "categories": [{"id": 1, "name": "pit"}]}))
  # A list whose image column escapes.
  (root / "list.csv").write_text("image,label\n../outside/secret.png,ok\n"
                                 "img.png,ok\n")
  # VOC: an image-set stem that climbs out.
  voc_root = root / "VOC"
  for folder in ("JPEGImages", "SegmentationClass"):
    (voc_root / folder).mkdir(parents=True)
  (voc_root / "ImageSets" / "Segmentation").mkdir(parents=True)
  (voc_root / "ImageSets" / "Segmentation" / "train.txt").write_text(
      "../../../outside/secret\n")
  # Folders: a symbolic link to the outside file among the images.
  folders = root / "folders"
  _png(folders / "masks" / "link.png", np.zeros((40, 60), np.uint8))
  (folders / "images").mkdir(parents=True)
  (folders / "images" / "link.png").symlink_to(secret)
  (root / "classes" / "ok").mkdir(parents=True)
  (root / "classes" / "ok" / "link.png").symlink_to(secret)

  opened.clear()  # Writing the files above opened them; reading starts here.
  rejected = []
  rejected += _split(labelme.labelme(str(root / "labelme"))[1])[1]
  rejected += _split(coco.coco(str(root / "coco.json"))[1])[1]
  items, refused = _split(tables.table(str(root / "list.csv"), class_names=("ok",))[1])
  rejected += refused
  assert [i.item_id for i in items] == ["img"]
  rejected += _split(voc.voc(str(voc_root), image_set="train")[1])[1]
  rejected += _split(sources.image_mask_folders(
      str(folders), class_names=("background", "defect"))[1])[1]
  rejected += _split(sources.class_folders(
      str(root / "classes"), classes={"ok": 0}, image_ext=".png",
      masks=False)[1])[1]
  reasons = [r.reason for r in rejected]
  assert len(reasons) == 7, reasons
  assert any(r.startswith("imagePath '../../outside/secret.png' leads "
                          "outside") for r in reasons)
  assert any(f"imagePath {str(secret)!r} is an absolute path" in r
             for r in reasons)
  assert any(r.startswith("file_name '../outside/secret.png' leads outside")
             for r in reasons)
  assert any(r.startswith("'image' '../outside/secret.png' leads outside")
             for r in reasons)
  assert any("the image set's stem" in r for r in reasons)
  assert sum("the image file" in r for r in reasons) == 2  # The two links.
  # Each names the file that pointed outside, not the outside file.
  assert {Path(r.path).name for r in rejected} >= {"up.json", "abs.json",
                                                    "link.png"}
  assert not [p for p in opened if p.startswith(str(outside))]


def _runs(mask: np.ndarray) -> list[int]:
  """Run lengths of a mask in COCO's order (column-major, from 0s)."""
  flat = mask.ravel(order="F").astype(np.int8)
  edges = np.flatnonzero(np.diff(flat)) + 1
  bounds = np.concatenate([[0], edges, [flat.size]])
  runs = list(np.diff(bounds))
  return ([0] + runs if flat[0] else runs)


def test_compressed_rle_counts_equal_the_run_lengths():
  rng = np.random.default_rng(0)
  for shape in ((1, 1), (7, 5), (40, 60), (3, 300)):
    for density in (0.0, 0.02, 0.5, 1.0):
      mask = (rng.random(shape) < density).astype(np.uint8)
      rle = mask_utils.encode(np.asfortranarray(mask))
      assert coco.compressed_counts(rle["counts"]) == _runs(mask)


@pytest.mark.parametrize("counts,reason", [
    ("0", "RLE counts sum to 0, expected 2400 pixels"),
    (None, "RLE counts sum to 4800, expected 2400 pixels"),  # too long
    ("0\x7f", "are malformed"),  # a character outside '0'..'o'
    ("0P", "are malformed"),  # the value is cut off (continuation bit)
])
def test_bad_compressed_rle_is_quarantined_not_decoded(tmp_path, counts,
                                                       reason):
  _png(tmp_path / "a.png", _grey())
  if counts is None:  # A valid string for twice the pixels.
    counts = mask_utils.encode(np.asfortranarray(
        np.zeros((80, 60), np.uint8)))["counts"].decode()
  (tmp_path / "ann.json").write_text(json.dumps({
      "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
      "annotations": [{"id": 5, "image_id": 1, "category_id": 1,
                       "segmentation": {"size": [40, 60], "counts": counts}}],
      "categories": [{"id": 1, "name": "pit"}]}))
  items, rejected = _split(coco.coco(str(tmp_path / "ann.json"))[1])
  assert not items
  (refused,) = rejected
  assert refused.path.endswith("a.png")
  assert f"annotation 5: {reason}" in refused.reason or \
      ("annotation 5: RLE counts" in refused.reason and reason in
       refused.reason)
