"""The planner: golden tests per rule on synthetic fingerprints, refusals,
the user's choices, byte-identical plans, and --mode=plan on a real ingest.

Fingerprints are computed by the real `data.fingerprint.Fingerprint` from
generated images with square defects of a known size, then edited where a
rule needs a dataset too large to generate (3000 px images).
"""

import copy
import dataclasses

import numpy as np
import pytest

from chameleon_jax.data.fingerprint import Fingerprint
from chameleon_jax.planning import facts as facts_lib
from chameleon_jax.planning import planner, rules, schedule
from chameleon_jax.planning.facts import PlanError, facts_from
from chameleon_jax.planning.machine import MachineProfile

CPU = MachineProfile(platform="cpu", device_kind="cpu", devices=1,
                     memory_bytes=24 * 2**30, cpu_count=2,
                     seconds_per_gflop=0.03)


def dataset(n=60, size=(64, 64), defect_side=(6,), empty_fraction=0.5,
            channels=1, dtype=np.uint8, val_share=0.25, stripes=()):
  """(fingerprint, split_items) of `n` images with one square defect of
  `defect_side[k]` px for class k + 1 on the non-empty ones; noise, with
  vertical stripes added to image i where stripes[i % len(stripes)] is
  "|", horizontal ones where it is "-"."""
  names = ["background"] + [f"d{k + 1}" for k in range(len(defect_side))]
  fp = Fingerprint(names, channels)
  rng = np.random.default_rng(0)
  items = {"train": [], "val": [], "test": []}
  high = np.iinfo(dtype).max
  for i in range(n):
    image = rng.integers(0, high // 2, (*size, channels)).astype(dtype)
    kind = stripes[i % len(stripes)] if stripes else None
    if kind in ("|", "-"):
      axis = 1 if kind == "|" else 0
      line = (np.arange(size[axis]) % 4 < 2) * (high // 3)
      image += np.expand_dims(line, (1 - axis, 2)).astype(dtype)
    mask = np.zeros(size, np.uint8)
    empty = i < round(n * empty_fraction)
    if not empty:
      k = i % len(defect_side)
      s = defect_side[k]
      mask[4:4 + s, 4:4 + s] = k + 1
    fp.add(image, mask, True, int(mask.max()), f"{i:064x}")
    split = ("val" if i % 4 == 0 and val_share else "test" if i % 4 == 1
             else "train")
    items[split].append({"height": size[0], "width": size[1],
                         "classes_present": [] if empty else [int(mask.max())],
                         "has_mask": True, "label": int(mask.max())})
  return fp.result(), items


def plan(fingerprint, items, machine=CPU, budget=25.0, base=None, fixed=None):
  f = facts_from(fingerprint, items)
  return planner.make_plan(f, machine, budget, base or {}, fixed or {})


def value(p, key):
  return p.choices[key].value


def test_task_from_annotations():
  fp, items = dataset()
  assert value(plan(fp, items), "task") == "segmentation"
  fp_cls = copy.deepcopy(fp)
  fp_cls["images"]["with_mask"] = 0
  fp_cls["images"]["labels"] = {"background": 30, "d1": 30}
  for split in items.values():
    for item in split:
      item["has_mask"] = False
  p = plan(fp_cls, items)
  assert value(p, "task") == "classification"
  assert value(p, "model.name") == "classifier"
  assert value(p, "loss.name") == "cross_entropy"
  assert value(p, "train.best_metric") == "balanced_accuracy"


@pytest.mark.parametrize("p25,expected", [
    (10.0, 1.0),     # 0.5² x 10 = 2.5 < 16: native
    (82.75, 0.5),    # 0.5² x 82.75 = 20.7 >= 16 (magnetic tile's blowholes)
    (400.0, 0.25),   # 0.25² x 400 = 25; 0.125² x 400 = 6.25
    (5000.0, 0.125)])
def test_scale_keeps_the_smallest_defects_visible(p25, expected):
  fp, items = dataset()
  fp["classes"]["d1"]["components"]["area"]["p25"] = p25
  p = plan(fp, items)
  assert value(p, "data.scale") == expected
  assert f"p25 {p25:g} px²" in p.choices["data.scale"].evidence


def test_scale_follows_the_smallest_class():
  fp, items = dataset(defect_side=(20, 6))  # p25 areas 400 and 36
  assert value(plan(fp, items), "data.scale") == 1.0  # 0.5² x 36 = 9 < 16


def test_canvas_is_the_largest_scaled_image_at_the_stride():
  fp, items = dataset(size=(64, 64), defect_side=(40,))  # p25 1600 -> 0.125
  fp["images"]["height"] = {"min": 222, "median": 324, "max": 403}
  fp["images"]["width"] = {"min": 103, "median": 270, "max": 632}
  fp["classes"]["d1"]["components"]["area"]["p25"] = 82.75
  p = plan(fp, items)
  assert value(p, "data.image_size") == (224, 320)  # 202x316 at 0.5, stride 32
  assert value(p, "data.size_policy") == "pad"
  # Small images: fewer levels, so the coarsest keeps >= 2 px.
  fp, items = dataset(size=(32, 32), defect_side=(3,))
  p = plan(fp, items)
  assert value(p, "data.image_size") == (32, 32)
  assert len(value(p, "model.kwargs")["widths"]) == rules.levels((32, 32)) == 5
  # A scaled size whose rounded-up canvas would allow one level more
  # (28x36 -> 4 levels, stride 8 -> 32x40; 32 px alone would give 5 levels,
  # stride 16, which 40 is not a multiple of): the model keeps the canvas's.
  fp, items = dataset(size=(28, 36), defect_side=(6,))
  p = plan(fp, items)
  assert value(p, "data.image_size") == (32, 40)
  assert len(value(p, "model.kwargs")["widths"]) == 4


def test_whole_images_when_small_crops_when_large():
  fp, items = dataset(size=(96, 96), defect_side=(3,))
  p = plan(fp, items)
  assert value(p, "data.crop_size") == ()
  fp, items = dataset(size=(64, 64), defect_side=(3,))
  fp["images"]["height"] = {"min": 3000, "median": 3000, "max": 3000}
  fp["images"]["width"] = {"min": 2000, "median": 2000, "max": 2000}
  fp["classes"]["d1"]["components"]["area"]["p50"] = 90000.0  # 300 px side
  p = plan(fp, items)
  assert value(p, "data.scale") == 1.0  # 9 px² defects: native
  assert value(p, "data.image_size") == (3008, 2016)
  assert value(p, "data.crop_size") == (608, 608)  # 2 x 300, stride 32
  # Small defects in a large crop: most crops on a defect.
  assert value(p, "data.augment.foreground_crop_fraction") == 0.67


def test_sampling_needs_defect_free_images():
  fp, items = dataset(empty_fraction=0.7)
  assert value(plan(fp, items), "data.defect_image_fraction") == 0.5
  fp, items = dataset(empty_fraction=0.0)  # every image has a defect
  p = plan(fp, items)
  assert value(p, "data.defect_image_fraction") == -1.0
  assert value(p, "loss.kwargs") == {}  # no empty images to exclude


def test_loss_and_class_weights_follow_the_class_frequencies():
  fp, items = dataset(defect_side=(6, 6))
  p = plan(fp, items)
  assert value(p, "loss.name") == "dice_ce"
  assert value(p, "loss.kwargs") == {"reduce_over": "image",
                                     "empty_target": "exclude"}
  fp["classes"]["d2"]["images"] = 1  # 1 against 15 images: < 10 %
  weights = value(plan(fp, items), "loss.kwargs")["class_weights"]
  assert len(weights) == 3 and weights[0] == 1.0
  assert all(1.0 <= w <= 10.0 for w in weights)


def test_augmentation_from_bit_depth_orientation_and_texture():
  fp, items = dataset()
  p = plan(fp, items)
  assert value(p, "data.augment_preset") == "industrial"
  assert "data.augment.rotate90" not in p.choices  # square noise: turns kept
  assert "neither" in p.notes["rotate90"][0]
  fp, items = dataset(dtype=np.uint16, size=(48, 64))  # 16-bit, landscape
  p = plan(fp, items)
  assert value(p, "data.augment_preset") == "geometric"
  assert value(p, "data.augment.rotate90") is False
  for stripes in ("|", "-"):  # One texture direction in every image.
    p = plan(*dataset(stripes=stripes))
    assert value(p, "data.augment.rotate90") is False
    assert "texture ln(Ex/Ey)" in p.choices["data.augment.rotate90"].evidence
  # Both directions, or one in a third of the images: turns kept.
  for stripes in ("|-", "|  "):
    assert "data.augment.rotate90" not in plan(*dataset(stripes=stripes)).choices
  # A fingerprint of schema version 1 has no texture: said so, turns kept.
  fp, items = dataset(stripes="|")
  del fp["images"]["texture"]
  assert "not measured" in plan(fp, items).notes["rotate90"][1]


def test_a_short_schedule_gets_the_light_augmentation():
  """Where fewer than PASSES_WANTED passes fit, the light variant."""
  fp, items = dataset(n=200)
  slow = dataclasses.replace(CPU, seconds_per_gflop=50.0)
  p = plan(fp, items, machine=slow, budget=5.0)
  assert value(p, "data.augment_preset") == "default"
  assert "light variant" in p.choices["data.augment_preset"].rule
  fp16, items16 = dataset(n=200, dtype=np.uint16)
  assert value(plan(fp16, items16, machine=slow, budget=5.0),
               "data.augment_preset") == "flips"
  assert value(plan(fp, items, budget=60.0), "data.augment_preset") == \
      "industrial"


def test_decision_rule_needs_defect_free_val_images():
  fp, items = dataset(n=200, empty_fraction=0.6)
  p = plan(fp, items)
  assert value(p, "eval.decision") == "calibrated"
  assert value(p, "train.best_metric") == "calibrated/score"
  fp, items = dataset(n=40, empty_fraction=0.5)  # 10 defect-free val images
  p = plan(fp, items)
  assert value(p, "eval.decision") == "argmax"
  assert value(p, "train.best_metric") == "mean_defect_iou"


def test_input_normalisation_in_the_data_units():
  fp, items = dataset(dtype=np.uint16)
  model = value(plan(fp, items), "model.kwargs")
  stats = fp["intensity"]["channel_0"]["all"]
  assert model["input_mean"] == (round(stats["mean"] / 65535, 4),)
  assert model["input_std"] == (round(stats["std"] / 65535, 4),)


def test_width_and_batch_follow_the_machine_and_the_data():
  fp, items = dataset()
  many = copy.deepcopy(items)  # 2000 training images: room for 31 M params.
  many["train"] += [dict(many["train"][0]) for _ in range(2000)]
  slow = plan(fp, many, machine=dataclasses.replace(
      CPU, seconds_per_gflop=1.0))
  fast = plan(fp, many, machine=dataclasses.replace(
      CPU, seconds_per_gflop=1e-5))
  # 30 training images feed only the narrowest, however fast the machine.
  few = plan(fp, items, machine=dataclasses.replace(
      CPU, seconds_per_gflop=1e-5))
  assert value(few, "model.kwargs")["widths"][0] == schedule.FIRST_WIDTHS[0]
  assert "per training image" in few.choices["model.kwargs"].evidence
  assert value(slow, "model.kwargs")["widths"][0] == schedule.FIRST_WIDTHS[0]
  assert value(fast, "model.kwargs")["widths"][0] == schedule.FIRST_WIDTHS[-1]
  assert value(fast, "train.batch_size") == 16
  # A device of 200 MiB: the batch shrinks to what fits; GroupNorm below 8.
  tight = plan(fp, items, machine=dataclasses.replace(
      CPU, memory_bytes=200 * 2**20))
  batch = value(tight, "train.batch_size")
  assert 1 <= batch < 8
  assert value(tight, "model.kwargs")["norm"] == "group"
  assert value(tight, "train.learning_rate") == 2e-3
  with pytest.raises(PlanError, match="no candidate model trains"):
    plan(fp, items, machine=dataclasses.replace(CPU, memory_bytes=2**20))


def test_schedule_from_the_budget():
  fp, items = dataset()
  p = plan(fp, items, budget=10.0)
  assert value(p, "train.time_budget_minutes") == 10.0
  steps, warmup = value(p, "train.steps"), value(p, "train.warmup_steps")
  assert steps % 100 == 0 and steps >= 100
  assert 20 <= warmup <= 100
  assert value(p, "train.eval_every") * 3 >= steps


@pytest.mark.parametrize("edit,match", [
    (lambda fp, it: fp["classes"].pop("d1"), "a single class"),
    (lambda fp, it: fp["classes"]["d1"].update(pixels=0),
     "classes.*.pixels = 0"),
    (lambda fp, it: it["val"].clear(), "split 'val' has 0"),
    (lambda fp, it: fp["images"].update(channels={"1": 3, "3": 5}),
     "images.channels"),
])
def test_datasets_no_plan_serves_are_refused(edit, match):
  fp, items = dataset()
  edit(fp, items)
  with pytest.raises(PlanError, match=match):
    facts_from(fp, items)


def test_the_users_choice_wins_and_is_recorded():
  fp, items = dataset(size=(512, 512), defect_side=(3,))
  p = plan(fp, items, fixed={"data.crop_size": (64, 64),
                             "loss.kwargs.smoothing": 0.5})
  crop = p.choices["data.crop_size"]
  assert crop.value == (64, 64) and crop.by == "user"
  assert crop.planned == (128, 128)
  assert "would have chosen (128, 128)" in crop.evidence
  # Later rules read the user's crop (the batch is sized at 64x64) ...
  assert "data.crop_size" in planner.plan_markdown(p, _header())
  # ... and a fixed leaf of a planned dict joins the plan's dict.
  assert p.choices["loss.kwargs"].value == {
      "reduce_over": "image", "empty_target": "exclude", "smoothing": 0.5}


def _header():
  return {"dataset": {"name": "d", "version": "v1", "hash": "abc"},
          "machine": dataclasses.asdict(CPU)}


def test_the_plan_is_byte_identical():
  fp, items = dataset(n=80, defect_side=(5, 9))
  texts = []
  for _ in range(2):
    p = plan(copy.deepcopy(fp), copy.deepcopy(items),
             base={"data.source": "synthetic"})
    template = {"data.source": "synthetic"}
    texts.append((planner.plan_json(p, _header()),
                  planner.plan_markdown(p, _header()),
                  planner.config_file(p, _header(), template)))
  assert texts[0] == texts[1]
  # Every planned key has a rule and evidence.
  for choice in plan(fp, items).choices.values():
    assert choice.rule and choice.evidence


def test_smallest_and_largest_defect():
  fp, items = dataset(defect_side=(3, 12))
  f = facts_from(fp, items)
  assert facts_lib.smallest_defect(f).name == "d1"
  assert facts_lib.largest_defect(f).name == "d2"
