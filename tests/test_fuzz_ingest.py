"""Fuzzing the ingest sources (issue 37): malformed files of every kind a
careless or hostile user can hand over.

Each Hypothesis example writes a small dataset (valid items, then random
damage: truncated or overwritten bytes, empty and text files named as
images, random JSON values in labelme and COCO fields, random RLE strings
and polygons, paths that climb out of the root or are absolute, null bytes)
and ingests it with `dataset.build`. Whatever the damage: no exception
escapes, every input is either accepted or quarantined with a readable
reason (accepted + quarantined = inputs), and no file outside the dataset
root is opened (an audit hook sees every open). Derandomised and bounded
(`max_examples`: 60 per source), so CI runs the same examples in seconds;
FUZZ_EXAMPLES=1000 searches longer.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from chameleon_jax.data import dataset, sources
from chameleon_jax.data.formats import coco, labelme
from tests.conftest import opened_files

SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)),
                    deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
N = 4  # Valid items before the damage.
FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}
CLASSES = ("background", "scratch", "pit")

# --- What can go wrong with a file ------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8)
ESCAPES = st.sampled_from(["../outside/secret.png", "../../outside/secret.png",
                           "OUTSIDE_ABS", "/etc/passwd", "img\x00.png",
                           "sub/../../outside/secret.png", "", ".", "..",
                           "missing.png"])
RLE_TEXT = st.text(alphabet=[chr(c) for c in range(48, 112)], max_size=20)
POINTS = st.lists(st.lists(st.floats(-50, 80) | st.integers(-5, 70)
                           | JSON, min_size=0, max_size=3), max_size=6)


@st.composite
def byte_damage(draw):
  """(kind, argument) applied to a file's bytes by `_damage`."""
  return draw(st.sampled_from(["truncate", "overwrite", "empty", "text",
                               "rgba", "other_size", "none"])), \
      draw(st.floats(0, 1))


def _damage(path: Path, damage, rng: np.random.Generator) -> None:
  kind, x = damage
  data = path.read_bytes()
  if kind == "truncate":
    path.write_bytes(data[:int(len(data) * x)])
  elif kind == "overwrite":
    at = int(len(data) * x) % max(1, len(data))
    path.write_bytes(data[:at] + rng.bytes(16) + data[at + 16:])
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "text":
    path.write_text("id,label\n1,scratch\n")
  elif kind == "rgba":
    Image.fromarray(rng.integers(0, 256, (16, 20, 4), np.uint8)).save(
        path, format="PNG")
  elif kind == "other_size":
    Image.fromarray(rng.integers(0, 256, (9, 13), np.uint8)).save(
        path, format="PNG")


def _image(path: Path, seed: int) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.random.default_rng(seed).integers(
      0, 256, (16, 20), np.uint8)).save(path, format="PNG")
  return path


def _ingest(info, entries, out: Path, inputs: int, root: Path,
            opened: list[str]) -> None:
  """The invariants, whatever the damage."""
  try:
    ds = dataset.build(info, entries, out, "fuzz",
                       dataset.IngestOptions(FRACTIONS, max_bad_fraction=1.0),
                       log=lambda *_: None)
  except dataset.BadInputError as e:  # Every input refused: said so.
    assert f"among {inputs} inputs" in str(e), str(e)
    accepted, quarantine = 0, None
  else:
    quarantine = json.loads((ds.path / "quarantine.json").read_text())
    accepted = ds.manifest["num_items"]
    assert accepted + len(quarantine) == inputs, (accepted, quarantine)
    for entry in quarantine:
      assert entry["reason"].strip() and "object at 0x" not in \
          entry["reason"], entry
  outside = str(root.parent / "outside")
  assert not [p for p in opened if p.startswith(outside)
              or p == "/etc/passwd"], opened


@pytest.fixture
def arena(tmp_path_factory):
  """A fresh root per example, beside a secret the sources must not read."""
  def make():
    base = tmp_path_factory.mktemp("fuzz")
    _image(base / "outside" / "secret.png", 99)
    return base / "root", base / "out"
  return make


def _resolve(name: str, root: Path) -> str:
  return str(root.parent / "outside" / "secret.png") if name == "OUTSIDE_ABS" \
      else name


# --- Image and mask folders -------------------------------------------------

@SETTINGS
@given(images=st.lists(byte_damage(), min_size=N, max_size=N),
       masks=st.lists(byte_damage() | st.just(("delete", 0.0)), min_size=N,
                      max_size=N),
       orphans=st.integers(0, 2), values=st.integers(0, 255))
def test_folders_survive_any_damage(arena, images, masks, orphans, values):
  root, out = arena()
  rng = np.random.default_rng(0)
  (root / "masks").mkdir(parents=True)
  for k in range(N):
    _image(root / "images" / f"i{k}.png", k)
    mask = np.zeros((16, 20), np.uint8)
    mask[2:5, 3:9] = values if k == 0 else 1
    Image.fromarray(mask).save(root / "masks" / f"i{k}.png")
  for k in range(orphans):
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(
        root / "masks" / f"orphan{k}.png")
  for k, (image, mask) in enumerate(zip(images, masks)):
    _damage(root / "images" / f"i{k}.png", image, rng)
    if mask[0] == "delete":
      (root / "masks" / f"i{k}.png").unlink()
    else:
      _damage(root / "masks" / f"i{k}.png", mask, rng)
  with opened_files() as opened:
    info, entries = sources.image_mask_folders(str(root),
                                               class_names=CLASSES)
    _ingest(info, entries, out, N + orphans, root, opened)


# --- labelme ----------------------------------------------------------------

SHAPE = st.fixed_dictionaries({
    "label": st.sampled_from(list(CLASSES[1:]) + ["rust"]) | JSON,
    "points": POINTS, "shape_type": st.sampled_from(
        ["polygon", "rectangle", "circle", "line", "point"]) | JSON})


@SETTINGS
@given(docs=st.lists(st.fixed_dictionaries({
    "shapes": st.lists(SHAPE, max_size=3) | JSON,
    "imagePath": st.sampled_from(["img0.png"]) | ESCAPES | JSON,
    "imageHeight": st.sampled_from([16, 9]) | JSON,
    "imageWidth": st.sampled_from([20]) | JSON,
    "imageData": st.sampled_from([None, "not base64!", "iVBORw0KGgo="])
    | JSON}), min_size=N, max_size=N),
    truncate=st.lists(st.floats(0, 1) | st.none(), min_size=N, max_size=N),
    image=byte_damage())
def test_labelme_survives_any_damage(arena, docs, truncate, image):
  root, out = arena()
  _image(root / "img0.png", 0)
  _damage(root / "img0.png", image, np.random.default_rng(1))
  for k, (doc, cut) in enumerate(zip(docs, truncate)):
    if isinstance(doc["imagePath"], str):
      doc["imagePath"] = _resolve(doc["imagePath"], root)
    text = json.dumps(doc)
    (root / f"a{k}.json").write_text(text[:int(len(text) * cut)]
                                     if cut is not None else text)
  with opened_files() as opened:
    info, entries = labelme.labelme(str(root), class_names=CLASSES)
    _ingest(info, entries, out, N, root, opened)


# --- COCO -------------------------------------------------------------------

SEGMENTATION = (
    st.fixed_dictionaries({"size": st.sampled_from([[16, 20], [20, 16]])
                           | JSON, "counts": RLE_TEXT
                           | st.lists(st.integers(-3, 400), max_size=6)
                           | JSON})
    | st.lists(st.lists(st.floats(-5, 25) | st.integers(0, 20), min_size=0,
                        max_size=8), max_size=2)
    | JSON)
ANNOTATION = st.fixed_dictionaries({
    "id": st.integers(0, 9) | JSON, "image_id": st.integers(0, N) | JSON,
    "category_id": st.sampled_from([1, 2, 7]) | JSON,
    "segmentation": SEGMENTATION,
    "bbox": st.none() | st.lists(st.floats(-5, 30) | st.integers(0, 20)
                                 | JSON, max_size=5) | JSON,
    "iscrowd": st.sampled_from([0, 1]) | JSON})


@SETTINGS
@given(files=st.lists(ESCAPES | st.text(alphabet=string.printable,
                                        max_size=10), min_size=N, max_size=N),
       keep_name=st.lists(st.booleans(), min_size=N, max_size=N),
       sizes=st.lists(st.sampled_from([(16, 20), (20, 16)]) | JSON,
                      min_size=N, max_size=N),
       annotations=st.lists(ANNOTATION, max_size=6),
       categories=st.sampled_from([[{"id": 1, "name": "scratch"},
                                    {"id": 2, "name": "pit"}]])
       | st.lists(st.fixed_dictionaries({"id": JSON, "name": JSON}),
                  max_size=2),
       image=byte_damage())
def test_coco_survives_any_damage(arena, files, keep_name, sizes, annotations,
                                  categories, image):
  root, out = arena()
  entries = []
  for k in range(N):
    _image(root / f"img{k}.png", k)
    name = f"img{k}.png" if keep_name[k] else _resolve(files[k], root)
    size = sizes[k] if isinstance(sizes[k], tuple) else (sizes[k], sizes[k])
    entries.append({"id": k, "file_name": name, "height": size[0],
                    "width": size[1]})
  _damage(root / "img0.png", image, np.random.default_rng(2))
  (root / "coco.json").write_text(json.dumps({
      "images": entries, "annotations": annotations,
      "categories": categories}))
  # Inputs: the images, each unknown image id, each annotation whose
  # image_id is no id (COCO ids are integers or strings).
  ids = [a["image_id"] for a in annotations]
  is_id = [isinstance(i, (int, str)) and not isinstance(i, bool) for i in ids]
  inputs = N + len({i for i, ok in zip(ids, is_id) if ok and i not in
                    range(N)}) + is_id.count(False)
  with opened_files() as opened:
    try:
      info, items = coco.coco(str(root / "coco.json"), channels=1)
    except ValueError as e:  # The file itself unusable: one clear error.
      assert str(root / "coco.json") in str(e)
      return
    _ingest(info, items, out, inputs, root, opened)
