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

  Half of every batch from defect images (real inspection data is ~70 %
  defect-free; uniform sampling shows a defect in too few crops); two thirds
  of those crops centred on a defect (nnU-Net: a third; inspection defects
  often cover ~1 % of an image); Dice per image with defect-free images
  excluded from the Dice term (MONAI's "exclude"), + CE, so a 3-pixel
  blowhole weighs as much as a band across the part. Measured on magnetic
  tile: benchmarks/RESULTS.md, "Why each choice", "configs/presets.py, `rare_defects`".
  """
  config.data.defect_image_fraction = 0.5
  config.data.augment.foreground_crop_fraction = 0.67
  config.loss.name = "dice_ce"
  config.loss.kwargs = {"reduce_over": "image", "empty_target": "exclude"}


@PRESETS.register("defect_alarm")
def defect_alarm(config: ml_collections.ConfigDict) -> None:
  """The image-level answer a quality engineer reads: alarm or not.

  The decision rule (evaluation/decision.py) chosen on the validation split
  within a 15 % false-alarm budget (room under a 20 % target for the step
  from val to test), on 4-flip averaged probabilities; per defect class a
  seed threshold and minimum area where that adds 0.005 val Dice (classes of
  very different sizes cannot share one minimum area); the checkpoint whose
  rule scores best on val ("calibrated/score"). Measured on magnetic tile:
  benchmarks/RESULTS.md, "Why each choice", "configs/presets.py, `defect_alarm`".
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
  half-width first level and a sixth level train about twice the images per
  second of the 4-level 16-128 UNet, and the stride-32 bottleneck sees a
  whole 224x320 image. BatchNorm, since the preset trains on crops and
  evaluates whole images (GroupNorm normalises each by its own statistics);
  it needs batches of about 16. A learning rate of 5e-3 for short
  schedules. Image and crop sizes must be multiples of 32. Measured on
  magnetic tile: benchmarks/RESULTS.md, "Why each choice", "configs/presets.py, `cpu_unet`".
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
