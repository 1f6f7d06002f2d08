"""Magnetic tile surface defects (../shared/data/magnetic_tile).

Five defect classes (Blowhole, Break, Crack, Fray, Uneven) and background,
grey, images of 1225 different sizes, 71% defect-free. The quality question
is binary (does this tile have a defect, and where): it is answered on
p(defect) = 1 - p(background) of the five-class model. Trained on the five
classes, the same network answered it better than trained on defect vs
background: test defect-image Dice 0.161 +- 0.018 against 0.092 +- 0.069 at
14 % and 12 % false alarms, and a higher validation Dice within 15 % false
alarms in every seed (3 seeds each, checkpoints chosen alike;
benchmarks/RESULTS.md, issue 8). `:binary` trains on defect vs background.
This recipe: 0.184 +- 0.058 at 0.175 +- 0.022 (3 seeds), short of the 0.5
that issue 8 asks for.

Data: images at half resolution (the largest, 403x632, fits the 224x320
evaluation canvas; padding is ignored), 128x128 training crops; half of
every batch comes from defect images (71% of images are defect-free, so
uniform sampling shows a defect in too few crops to learn from) and two
thirds of those crops are centred on a defect; Dice per image (images
without a defect excluded from the Dice term, which would otherwise be a
constant ~1 for them) + CE, so a tiny blowhole weighs as much as a large
uneven region.
Half resolution and 128x128 crops are the trade that fits the budget: at
full resolution (same crops, less context per crop) or on whole tiles (the
context, but a quarter of the steps) the test Dice fell from 0.140 to
0.055 and 0.053 (seed 0, same wall clock). Training without the default
90-degree turns (the tiles have an axis) moved the 3-seed test Dice within
the seed spread and lowered the validation figure, so they stay on.

Model: a 6-level UNet 8-16-32-64-128-256 (GroupNorm). On XLA:CPU the cost of
a UNet sits in its full-resolution convolutions: halving the first level's
width and adding a sixth level trains 2.1x more images per second than the
4-level 16-128 UNet (26.2 against 12.7 img/s, 128x128 crops, batch 16;
benchmarks/train_throughput.py --widths), and
the stride-32 bottleneck sees a whole half-resolution tile. At the same CPU
budget it raised the best validation defect-image Dice at <= 20 % false
alarms from 0.087 to 0.163 (benchmarks/RESULTS.md, issue 8). 1800 steps of
16 crops train in ~17-20 minutes on 2 idle CPU cores, compilation included.

Checkpoint: every validation (steps 600, 1200, 1800; ~40 s each) also
chooses the decision rule on val, and the best checkpoint is the one whose
rule scores best there ("calibrated/score", evaluation/decision.py). The
argmax masks' Dice, which chose before, is measured at 91-100 % false alarms;
on the same trajectories the calibrated choice moved the 3-seed test Dice
from 0.161 to 0.184 (within the seed spread).

  python main.py --config=experiments/magnetic_tile.py --workdir=workdirs/mt \
      --mode=ingest,train,eval
  python main.py --config=experiments/magnetic_tile.py:binary ...
"""

from pathlib import Path

from configs import segmentation

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLASSES = {"MT_Free": 0, "MT_Blowhole": 1, "MT_Break": 2, "MT_Crack": 3,
           "MT_Fray": 4, "MT_Uneven": 5}


def get_config(variant: str = "multiclass"):
  if variant not in ("binary", "multiclass"):
    raise ValueError(f"variant {variant!r}; expected binary or multiclass.")
  config = segmentation.get_config()
  config.data.name = f"magnetic_tile_{variant}"
  config.data.source = "class_folders"
  config.data.source_kwargs = {
      "root": str(SHARED / "data" / "magnetic_tile"), "classes": CLASSES,
      "images_subdir": "Imgs", "image_ext": ".jpg", "mask_ext": ".png",
      "threshold": 128, "binary": variant == "binary", "channels": 1}
  config.data.scale = 0.5
  config.data.image_size = (224, 320)  # multiple of the stride 32
  config.data.size_policy = "pad"
  config.data.crop_size = (128, 128)
  config.data.defect_image_fraction = 0.5
  config.data.augment.foreground_crop_fraction = 0.67
  config.data.num_workers = 1
  config.model.kwargs.widths = (8, 16, 32, 64, 128, 256)
  config.loss.name = "dice_ce"
  config.loss.kwargs = {"reduce_over": "image", "empty_target": "exclude"}
  config.train.batch_size = 16
  config.train.steps = 1800
  config.train.warmup_steps = 50
  config.train.eval_every = 600
  config.train.checkpoint_every = 600
  config.train.best_metric = "calibrated/score"
  config.eval.batch_size = 16
  # Image-level decisions (evaluation/decision.py): p(defect) thresholds
  # (mask and peak) and a minimum component area chosen on val within a
  # false-alarm budget below the 20 % target, on flip-averaged probabilities.
  # Measured on this recipe (grouped split, 3 seeds; benchmarks/RESULTS.md,
  # issue 8): "any predicted pixel" alarms on 97 % of clean test images, the
  # rule on 18 %; flips raise the best validation Dice at <= 15 % false alarms
  # from 0.091 to 0.192.
  config.eval.decision = "calibrated"
  config.eval.max_false_alarm = 0.15
  config.eval.flip_tta = True
  return config


def get_sweep():
  """Seeds of the recipe (`--mode=render --sweep`: one JobSet each)."""
  return [{"seed": seed} for seed in (0, 1, 2)]
