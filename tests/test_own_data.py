"""Issue 39's traps on a user's own data, one test each (each failed on the
code before its fix): data where every image has a defect, colour images
brought to one channel."""

import json

from tests.conftest import run_main

CONFIG = "--config=tests/tiny_config.py"


def test_every_image_defective_trains_evaluates_and_says_what_is_unmeasurable(
    tmp_path):
  """No defect-free image (as in NEU-Seg, BSData, road cracks): the
  rare_defects preset's defect-image share cannot be honoured and is
  adapted with the reason logged (training runs), and the false-alarm rate
  is reported as not measurable instead of 0.000."""
  workdir = tmp_path / "run"
  result = run_main(
      CONFIG, f"--workdir={workdir}", "--mode=ingest,train,eval",
      f"--config.data.root={tmp_path / 'data'}",
      "--config.data.source_kwargs.empty_fraction=0.0",
      "--config.data.defect_image_fraction=0.5",
      "--config.data.defect_class_balance=True",
      "--config.eval.decision=calibrated", "--config.train.steps=6")
  assert "defect_image_fraction=0.5" in result.stderr
  assert "no defect-free image" in result.stderr
  metrics = json.loads((workdir / "eval" / "test_metrics.json").read_text())
  assert metrics["num_defect_free_images"] == 0
  assert metrics["false_alarm_rate"] is None
  assert "false_alarm_rate: not measurable (no defect-free image)" in (
      result.stdout)
  assert "false_alarm_rate: 0.0000" not in result.stdout


def test_rates_without_their_images_are_undefined_not_zero():
  import math

  import numpy as np

  from chameleon_jax import atomic
  from chameleon_jax.metrics import classification, segmentation
  sums = {"confusion": np.eye(2) * 10, "defect_image_dice_sum": 3.0,
          "num_defect_images": 4, "num_false_alarms": 0,
          "num_defect_free_images": 0, "num_images": 4}
  out = segmentation.summarize(sums, ("background", "pit"))
  assert math.isnan(out["false_alarm_rate"])
  assert out["defect_image_dice"] == 0.75
  clean_only = segmentation.summarize(
      {**sums, "num_defect_images": 0, "defect_image_dice_sum": 0.0,
       "num_defect_free_images": 4, "num_false_alarms": 1},
      ("background", "pit"))
  assert math.isnan(clean_only["defect_image_dice"])
  assert clean_only["false_alarm_rate"] == 0.25
  cls = classification.summarize_classification(
      {"confusion": np.array([[0, 0], [1, 3]]), "num_images": 4},
      ("ok", "defect"))
  assert math.isnan(cls["false_alarm_rate"]) and cls["defect_recall"] == 0.75
  assert atomic.json_ready({"a": float("nan"), "b": [np.float32(0.5)],
                            "c": np.int64(2)}) == {"a": None, "b": [0.5],
                                                   "c": 2}


def test_predict_takes_the_colour_images_ingest_took(tmp_path):
  """Trap 4: ingest brought RGB images to the model's one channel, predict
  refused the same files ("3 channels, the model expects 1"). Predict now
  converts as ingest does (one function, sources.to_channels)."""
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(0)
  root = tmp_path / "raw"
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  for i in range(24):
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:8 + i % 8 + 2, 10:14] = 1
    Image.fromarray(image).save(root / "images" / f"p{i:02d}.png")
    Image.fromarray(mask).save(root / "masks" / f"p{i:02d}.png")
  workdir = tmp_path / "run"
  result = run_main(
      f"{CONFIG}:folders", f"--workdir={workdir}",
      "--mode=ingest,train,predict", f"--config.data.root={tmp_path / 'data'}",
      f"--config.data.source_kwargs.root={root}",
      "--config.data.source_kwargs.channels=1", "--config.train.steps=3",
      "--config.train.batch_size=4", f"--config.predict.input_dir={root}/images")
  assert "== predict ==" in result.stdout
  masks = sorted((workdir / "predictions").glob("*_mask.png"))
  assert len(masks) == 24
  # Trap 9: masks of class indices that a viewer shows in colour.
  with Image.open(masks[0]) as mask:
    assert mask.mode == "P" and mask.getpalette()[3:6] == [230, 25, 75]
    assert np.asarray(mask).max() <= 1


def _rgb_folders(root, n=6, grey=()):
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(1)
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  for i in range(n):
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    if i in grey:
      image = image[:, :, :1].repeat(1, axis=2)[:, :, 0]
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = i % 2
    Image.fromarray(image).save(root / "images" / f"p{i}.png")
    Image.fromarray(mask).save(root / "masks" / f"p{i}.png")


def test_colour_images_stay_colour_unless_a_channel_count_is_asked(tmp_path):
  """Trap 3: labelme and the folder sources turned colour images into grey
  by default (only the report's channel count showed it). Without
  `channels`, images are kept as decoded; a dataset whose images disagree
  quarantines the odd ones with the fix named; channels=1 still converts."""
  from chameleon_jax.data import dataset, sources
  from chameleon_jax.data.formats import labelme  # noqa: F401
  _rgb_folders(tmp_path / "rgb")
  options = dataset.IngestOptions({"train": 0.5, "val": 0.25, "test": 0.25})
  kept = dataset.build(*sources.image_mask_folders(str(tmp_path / "rgb")),
                       tmp_path / "out", "rgb", options, log=lambda *_: None)
  assert kept.channels == 3
  grey = dataset.build(*sources.image_mask_folders(str(tmp_path / "rgb"),
                                                   channels=1),
                       tmp_path / "out", "grey", options, log=lambda *_: None)
  assert grey.channels == 1
  _rgb_folders(tmp_path / "mixed", n=30, grey=(5,))
  mixed = dataset.build(*sources.image_mask_folders(str(tmp_path / "mixed")),
                        tmp_path / "out", "mixed", options,
                        log=lambda *_: None)
  assert mixed.channels == 3 and mixed.manifest["num_quarantined"] == 1
  reason = json.loads((mixed.path / "quarantine.json").read_text())[0]
  assert reason["path"].endswith("p5.png")
  assert "1 channel(s)" in reason["reason"] and "channels=3" in reason["reason"]


def _official_split(root, counts=(("training", 20), ("test", 8))):
  """NEU-Seg's layout: images/<split>/*.jpg, annotations/<split>/*.png."""
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(2)
  for split, n in counts:
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 255, (16, 16), np.uint8)).save(
          root / "images" / split / f"{split[:2]}{i:03d}.jpg")
      mask = np.zeros((16, 16), np.uint8)
      mask[2:6, 3:9] = 1 + i % 2
      Image.fromarray(mask).save(root / "annotations" / split /
                                 f"{split[:2]}{i:03d}.png")


def test_a_datasets_own_split_is_kept_from_its_folders(tmp_path):
  """Trap 6: NEU-Seg ships training/ and test/ folders; folder search was
  not recursive and the split could not be kept. With `recursive` the
  subfolders are read (ids "test/te000"), and `data.split_pattern` keeps the
  test folder as the test split, validation drawn from training only."""
  import pytest
  from chameleon_jax.data import dataset, sources
  _official_split(tmp_path / "neu")
  kwargs = dict(masks_dir="annotations",
                class_names=("background", "inclusion", "patch"))
  with pytest.raises(ValueError, match="recursive=True"):
    sources.image_mask_folders(str(tmp_path / "neu"), **kwargs)
  options = dataset.IngestOptions({"train": 0.7, "val": 0.15, "test": 0.15},
                                  split_pattern=r"^(\w+)/")
  ds = dataset.build(*sources.image_mask_folders(str(tmp_path / "neu"),
                                                 recursive=True, **kwargs),
                     tmp_path / "out", "neu", options, log=lambda *_: None)
  by_split = {}
  for item in ds.manifest["items"]:
    by_split.setdefault(item["split"], []).append(item["id"])
  assert sorted(by_split["test"]) == [f"test/te{i:03d}" for i in range(8)]
  assert all(i.startswith("training/") for i in by_split["train"]
             + by_split["val"])
  # Validation is the val share of train + val, from the training folder.
  assert len(by_split["val"]) == round(20 * 0.15 / 0.85)
  assert ds.manifest["split_pattern"] == r"^(\w+)/"
  # Without the option, the same items are split by the fractions alone.
  mixed = dataset.build(*sources.image_mask_folders(
      str(tmp_path / "neu"), recursive=True, **kwargs), tmp_path / "out",
      "neu_mixed", dataset.IngestOptions({"train": 0.7, "val": 0.15,
                                          "test": 0.15}), log=lambda *_: None)
  test = [i["id"] for i in mixed.manifest["items"] if i["split"] == "test"]
  assert any(i.startswith("training/") for i in test)


def test_split_keeping_holds_groups_and_names_what_it_cannot_do():
  import pytest
  from chameleon_jax.data import splits
  items = [(f"{s}/{i}", (1, False), f"h{s}{i}") for s in ("train", "test")
           for i in range(10)]
  own = [splits.own_split(i, r"^(\w+)/") for i, _, _ in items]
  groups = [i for i, _, _ in items]
  groups[3] = groups[12]  # train/3 is a duplicate of test/2: held out too.
  got = splits.split_keeping(items, {"train": 0.8, "val": 0.2, "test": 0.0},
                             0, own, groups)
  assert {i for i, s in got.items() if s == "test"} == {
      f"test/{i}" for i in range(10)} | {"train/3"}
  assert sorted(got.values()).count("val") == 2  # 0.2 of the 9 left.
  with pytest.raises(ValueError, match="expected one of"):
    splits.own_split("holdout/1", r"^(\w+)/")
  with pytest.raises(ValueError, match="k-fold"):
    splits.split_keeping(items, {"fold0": 0.5, "fold1": 0.5}, 0,
                         ["val"] * 20)


def test_every_printout_says_which_figures_it_shows():
  """Trap 8: eval printed argmax and calibrated figures under inconsistent
  names, robustness argmax Dice beside eval's calibrated one unlabelled."""
  from chameleon_jax.evaluation.report import figure_names
  assert "calibrated decision rule" in figure_names("calibrated", "eval")
  assert "argmax/*: argmax masks" in figure_names("calibrated", "eval")
  assert figure_names("argmax", "eval").startswith("figures of argmax masks")
  assert "argmax masks" in figure_names("calibrated", "robustness")
  assert "calibrated/*" in figure_names("calibrated", "validation")
  assert "calibrated/*" not in figure_names("argmax", "validation")


def test_a_long_ingest_says_how_far_it_is(tmp_path, monkeypatch):
  """Trap 9: ingest printed nothing for minutes. It reports its progress
  every dataset.PROGRESS_S seconds (here: at every input) and the phase
  after reading."""
  from chameleon_jax.data import dataset, sources
  _rgb_folders(tmp_path / "rgb", n=6)
  monkeypatch.setattr(dataset, "PROGRESS_S", 0.0)
  lines = []
  dataset.build(*sources.image_mask_folders(str(tmp_path / "rgb")),
                tmp_path / "out", "rgb", dataset.IngestOptions(
                    {"train": 0.5, "val": 0.25, "test": 0.25}),
                log=lines.append)
  progress = [l for l in lines if l.startswith("ingest: ")]
  assert progress[0].startswith("ingest: 0 inputs read")
  assert progress[5].startswith("ingest: 5 inputs read (5 accepted, 0 "
                                "quarantined)")
  assert progress[6].startswith("ingest: 6 inputs read in") and \
      "looking for duplicates" in progress[6]


def test_panels_have_titles_a_legend_and_visible_small_defects():
  """Trap 9: worst-image panels had no titles or colour legend, and pits of
  a few pixels vanished at thumbnail size."""
  import numpy as np
  from chameleon_jax.data import overlays
  image = np.full((20, 30, 1), 128, np.uint8)
  truth = np.zeros((20, 30), np.uint8)
  truth[4, 5] = 2  # A one-pixel pit.
  plain = overlays.panel(image, truth, truth)
  assert plain.shape == (20, 3 * 30 + 2 * 4, 3)
  out = overlays.panel(image, truth, truth, titles=("a", "truth", "argmax"),
                       class_names=("ok", "scratch", "pit"), min_height=100)
  factor = 5  # 20 px -> 100 px.
  assert out.shape == (14 + 20 * factor + 14, 3 * 30 * factor + 2 * 4, 3)
  # The pit: a 5x5 block of its class colour in the truth tile.
  pit = overlays.PALETTE[2]
  tile = out[14:14 + 100, 30 * factor + 4:2 * 30 * factor + 4]
  blended = np.rint(0.45 * 128 + 0.55 * pit)
  assert (np.abs(tile[20:25, 25:30] - blended) <= 1).all()
  # Legend: a swatch of each defect class's colour; titles: dark text.
  legend = out[-14:]
  for k in (1, 2):
    assert (legend == overlays.PALETTE[k].astype(np.uint8)).all(-1).any()
  assert (out[:14] < 100).any()


def test_the_data_reports_examples_show_a_pit_of_a_few_pixels():
  """Trap 9: BSData's example strip was unreadable, the pits being a few
  pixels at thumbnail size. Defect examples are cropped around the class."""
  import numpy as np
  from chameleon_jax.data import report
  mask = np.zeros((900, 1200), np.uint8)
  mask[400:403, 700:704] = 2  # A 3 x 4 px pit.
  rows, cols = report.around(mask, 2)
  assert (rows.stop - rows.start, cols.stop - cols.start) == (64, 64)
  assert mask[rows, cols].sum() == mask.sum()  # The pit is inside.
  big = np.zeros((900, 1200), np.uint8)
  big[100:500, 200:900] = 1  # Large regions: the whole image.
  assert report.around(big, 1) == np.s_[:, :]
  edge = np.zeros((200, 300), np.uint8)
  edge[0:2, 298:300] = 1  # At a corner: the window stays inside.
  rows, cols = report.around(edge, 1)
  assert (rows.start, cols.stop) == (0, 300) and edge[rows, cols].sum() == 4
