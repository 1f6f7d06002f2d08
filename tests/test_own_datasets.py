"""Issue 39: the three kinds of dataset a new user brought, as small
synthetic fixtures, each taken from raw files to a trained, evaluated model
and predictions with only the data's location and format given (the
planner chooses the rest): steel strips with their own train/test folders,
palette masks of three classes and a defect on every image (NEU-Seg);
RGB photographs with labelme polygons (BSData); road cracks with MATLAB
ground truth (CrackForest). README "Your own data" runs the first.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

pytestmark = pytest.mark.e2e
STEPS = "--config.train.steps=40"


def _main(tmp_path, *args, input_dir):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/segmentation.py",
       f"--workdir={workdir}", f"--config.data.root={tmp_path / 'data'}",
       *args, STEPS, f"--config.predict.input_dir={input_dir}",
       "--mode=ingest,plan,train,eval,predict"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  for stage in ("ingest", "plan", "predict"):
    assert f"== {stage} ==" in result.stdout
  metrics = json.loads((workdir / "eval" / "test_metrics.json").read_text())
  predictions = json.loads((workdir / "predictions" / "predictions.json")
                           .read_text())
  manifest = json.loads(next((tmp_path / "data").glob("*/*/manifest.json"))
                        .read_text())
  return result, metrics, predictions, manifest


def _defect(rng, image, mask, value):
  r, c = rng.integers(4, 44, 2)
  h, w = (3, 14) if value % 2 else (7, 7)
  mask[r:r + h, c:c + w] = value
  image[r:r + h, c:c + w] = np.clip(image[r:r + h, c:c + w] * 0.4, 0, 255)


def write_steel(root):
  """NEU-Seg's layout in small: images/{training,test}/*.jpg (grey 64 px),
  annotations/{training,test}/*.png (palette, classes 1-3), a defect on
  every image."""
  rng = np.random.default_rng(0)
  palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756
  for split, n in (("training", 24), ("test", 8)):
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    for i in range(n):
      image = rng.normal(120, 10, (64, 64)).clip(0, 255)
      mask = np.zeros((64, 64), np.uint8)
      _defect(rng, image, mask, 1 + i % 3)
      Image.fromarray(image.astype(np.uint8)).save(
          root / "images" / split / f"{split}_{i:03d}.jpg", quality=95)
      pal = Image.fromarray(mask, mode="P")
      pal.putpalette(palette)
      pal.save(root / "annotations" / split / f"{split}_{i:03d}.png")


def test_steel_with_its_own_split_and_a_defect_on_every_image(tmp_path):
  root = tmp_path / "steel"
  write_steel(root)
  result, metrics, predictions, manifest = _main(
      tmp_path, "--config.data.source=image_mask_folders",
      f"--config.data.source_kwargs.root={root}",
      "--config.data.source_kwargs.masks_dir=annotations",
      "--config.data.source_kwargs.recursive=True",
      "--config.data.source_kwargs.class_names="
      "('background','inclusion','patches','scratches')",
      r"--config.data.split_pattern=^(\w+)/",
      input_dir=root / "images" / "test")
  tests = sorted(i["id"] for i in manifest["items"] if i["split"] == "test")
  assert tests == [f"test/test_{i:03d}" for i in range(8)]
  assert metrics["num_defect_free_images"] == 0
  assert metrics["false_alarm_rate"] is None  # Not measurable, not 0.
  assert "not measurable (no defect-free image)" in result.stdout
  assert len(predictions) == 8


def _polygon(rng):
  r, c = rng.integers(6, 40, 2)
  return [[float(c), float(r)], [float(c + 14), float(r + 2)],
          [float(c + 12), float(r + 9)], [float(c + 1), float(r + 7)]]


def test_colour_photographs_with_labelme_polygons(tmp_path):
  rng = np.random.default_rng(1)
  root = tmp_path / "photos"
  root.mkdir()
  for i in range(30):
    image = rng.normal((150, 120, 90), 12, (56, 72, 3)).clip(0, 255)
    shapes = []
    if i % 3:  # A third of the parts are defect-free.
      points = _polygon(rng)
      label = "pitting" if i % 3 == 1 else "scratch"
      shapes.append({"label": label, "points": points,
                     "shape_type": "polygon"})
      xs, ys = zip(*points)
      image[int(min(ys)):int(max(ys)), int(min(xs)):int(max(xs))] *= 0.5
    Image.fromarray(image.astype(np.uint8)).save(root / f"part{i:02d}.jpg",
                                                 quality=95)
    (root / f"part{i:02d}.json").write_text(json.dumps({
        "version": "5.4.1", "shapes": shapes, "imagePath": f"part{i:02d}.jpg",
        "imageHeight": 56, "imageWidth": 72, "imageData": None}))
  _, metrics, predictions, manifest = _main(
      tmp_path, "--config.data.source=labelme",
      f"--config.data.source_kwargs.root={root}",
      "--config.data.source_kwargs.class_names="
      "('background','pitting','scratch')", input_dir=root)
  assert manifest["channels"] == 3  # Colour stays colour.
  assert metrics["num_defect_free_images"] > 0
  assert len(predictions) == 30


def test_road_cracks_with_matlab_ground_truth(tmp_path):
  import scipy.io
  rng = np.random.default_rng(2)
  root = tmp_path / "cracks"
  (root / "images").mkdir(parents=True)
  (root / "groundTruth").mkdir()
  for i in range(30):
    image = rng.normal(110, 15, (48, 72, 3)).clip(0, 255)
    segmentation = np.ones((48, 72), np.uint8)  # 1 = background, 2 = crack.
    if i % 2:
      r = int(rng.integers(8, 40))
      segmentation[r:r + 2, 5:60] = 2
      image[r:r + 2, 5:60] = 30
    Image.fromarray(image.astype(np.uint8)).save(
        root / "images" / f"{i:03d}.jpg", quality=95)
    scipy.io.savemat(root / "groundTruth" / f"{i:03d}.mat", {
        "groundTruth": {"Segmentation": segmentation,
                        "Boundaries": np.zeros_like(segmentation)}})
  _, metrics, predictions, manifest = _main(
      tmp_path, "--config.data.source=image_mask_folders",
      f"--config.data.source_kwargs.root={root}",
      "--config.data.source_kwargs.masks_dir=groundTruth",
      "--config.data.source_kwargs.mask_ext=.mat",
      "--config.data.source_kwargs.mat_field=groundTruth.Segmentation",
      "--config.data.source_kwargs.value_map={1: 0, 2: 1}",
      "--config.data.source_kwargs.class_names=('background','crack')",
      input_dir=root / "images")
  assert manifest["num_items"] == 30 and manifest["num_quarantined"] == 0
  assert metrics["num_defect_images"] > 0
  assert len(predictions) == 30
