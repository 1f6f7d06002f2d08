"""Presets: groups of config values measured together, with their reasons.

A preset sets values on a template config (configs/segmentation.py) and
returns it. An experiment applies presets first, then sets what belongs to
its data (source, scale, image and crop sizes, steps); a value set after a
preset wins. `PRESETS` names them for tools that write configs (sweeps, a
config planner), so that a choice measured on one dataset is picked for the
next one by name, not copied by hand:

  config = presets.apply(segmentation.get_config(), "rare_defects",
                         "defect_alarm", "cpu_unet")

Component defaults (a UNet's norm groups, a loss's smoothing) are not
presets: they live in the components' code, with their reasons, and a gin
binding can override them (README, "Configuration").
"""

import ml_collections

from chameleon_jax.registry import Registry

# The one registry mechanism of every zoo; names are what a planner writes.
# Not gin-configurable: a preset has no argument to bind but the config.
PRESETS = Registry("presets", gin_configurable=False)


@PRESETS.register("rare_defects")
def rare_defects(config: ml_collections.ConfigDict) -> None:
  """Sampling and loss for few defect images and tiny defects.

  Half of every batch from defect images: real inspection data is ~70 %
  defect-free, and uniform sampling shows a defect in too few crops to
  learn from. Two thirds of those crops centred on a defect (nnU-Net uses a
  third; inspection defects often cover ~1 % of an image). Dice per image
  with images that have no defect excluded from the Dice term (for them it
  is a constant ~1, MONAI's "exclude" policy), + CE, so a 3-pixel blowhole
  weighs as much as a band across the part. Measured on magnetic tile
  (benchmarks/RESULTS.md, issue 8): with Dice pooled over the batch the test
  defect-image Dice fell from 0.140 to 0.031 and with uniform sampling to
  0.083 (seed 0); with random crops in place of crops on the defect, from
  0.184 +- 0.058 to 0.151 +- 0.067 (3 seeds at lr 2e-3, inside the spread;
  breaks and cracks lost most).
  """
  config.data.defect_image_fraction = 0.5
  config.data.augment.foreground_crop_fraction = 0.67
  config.loss.name = "dice_ce"
  config.loss.kwargs = {"reduce_over": "image", "empty_target": "exclude"}


@PRESETS.register("defect_alarm")
def defect_alarm(config: ml_collections.ConfigDict) -> None:
  """The image-level answer a quality engineer reads: alarm or not.

  A rule on p(defect) (mask and peak thresholds, minimum component area,
  evaluation/decision.py) chosen on the validation split within a 15 %
  false-alarm budget, on 4-flip averaged probabilities; the best checkpoint
  is the one whose rule scores best on val ("calibrated/score"). 15 % leaves
  room under a 20 % target for the step from val to test (test 15.6-19.9 %
  over 3 seeds on magnetic tile). Measured there (benchmarks/RESULTS.md,
  issue 8): without the rule 97 % of clean test tiles alarm, with it 18 %;
  without flips the best val Dice within 15 % falls from 0.192 to 0.091;
  choosing the checkpoint by the argmax masks' Dice (measured at 91-100 %
  false alarms) instead gave 0.161 against 0.184 on test (3 seeds at lr
  2e-3), within the seed spread.

  With several defect classes, each class (a component's class) gets its
  own seed threshold and minimum area when that adds at least 0.005 val
  Dice: classes of very different sizes (a blowhole of tens of pixels, an
  uneven band of thousands) cannot share one minimum area. On the
  BatchNorm recipe's 3 seeds (checkpoints chosen by the per-class score):
  val 0.354 against 0.340, test 0.290 +- 0.028 at 0.151 +- 0.018 false
  alarms against 0.288 +- 0.033 at 0.151 +- 0.066; on a model that finds
  both sizes (no 90-degree turns, seed 1) 0.150 -> 0.298.
  """
  config.eval.decision = "calibrated"
  config.eval.max_false_alarm = 0.15
  config.eval.flip_tta = True
  config.eval.per_class_rule = True
  config.train.best_metric = "calibrated/score"


@PRESETS.register("cpu_unet")
def cpu_unet(config: ml_collections.ConfigDict) -> None:
  """A UNet for a fixed CPU time budget: 6 levels, 8-256, BatchNorm, lr 5e-3.

  XLA:CPU spends a UNet's time in its full-resolution convolutions: a
  half-width first level and a sixth level train 2.1x the images per second
  of the 4-level 16-128 UNet at 128 px crops (benchmarks/train_throughput.py
  --widths), and the stride-32 bottleneck sees a whole 224x320 image. On
  magnetic tile at an equal CPU budget it raised the best val Dice within
  20 % false alarms from 0.087 to 0.163 (benchmarks/RESULTS.md, issue 8).
  Image and crop sizes must be multiples of 32.

  BatchNorm, not the template's GroupNorm. This preset trains on crops and
  evaluates whole images; GroupNorm normalises each image by its own
  statistics (at 8 channels and 8 groups, each channel of each crop), which
  discards a crop's overall brightness and differs between a training crop
  and a whole evaluation image (the likely reasons; not isolated), where
  BatchNorm evaluates with the training set's statistics. It needs a batch
  large enough for those statistics (16 crops here). On magnetic tile (3
  seeds) the test Dice rose from 0.206 +- 0.054 to 0.288 +- 0.033 (false
  alarms 0.123 +- 0.059 and 0.151 +- 0.066) and the best val Dice within
  15 % false alarms from 0.197 to 0.340, higher in every seed, in 11.6-11.9
  min of training against 12.6-12.9.

  A learning rate of 5e-3 (the template's 2e-3) for short schedules. On
  magnetic tile, 1800 steps (3 seeds, GroupNorm): test Dice 0.206 +- 0.054
  at 0.123 +- 0.059 false alarms against 0.184 +- 0.058 at 0.175 +- 0.022,
  and the best val Dice within 15 % false alarms 0.197 against 0.192:
  inside the seed spread, but val and test point the same way.
  """
  config.model.name = "unet"
  config.model.kwargs.widths = (8, 16, 32, 64, 128, 256)
  config.model.kwargs.norm = "batch"
  config.train.learning_rate = 5e-3


def apply(config: ml_collections.ConfigDict,
          *names: str) -> ml_collections.ConfigDict:
  """Applies the named presets to `config` in order and returns it."""
  for name in names:
    PRESETS.get(name)(config)  # An unknown name: KeyError with the known ones.
  return config
