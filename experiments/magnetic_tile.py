"""Magnetic tile surface defects (../shared/data/magnetic_tile).

Five defect classes (Blowhole, Break, Crack, Fray, Uneven) and background,
grey, images of 1225 different sizes, 71 % defect-free. The quality
question is binary (does this tile have a defect, and where); it is answered
on p(defect) = 1 - p(background) of the five-class model, which answered it
better than a model trained on defect vs background. `:binary` trains on
defect vs background.

The recipe: the presets rare_defects, defect_alarm and cpu_unet
(configs/presets.py), and this dataset's own choices:
  data.scale 0.5          the largest tile (403x632 at half resolution) fits
                          the 224x320 evaluation canvas (padding ignored);
  crop_size (160, 160)    the context/steps trade that fitted the budget;
  no 90-degree turns      the tiles have an axis (flips only);
  time_budget_minutes 25  at most 1800 steps of 16 crops; the loop plans
                          fewer where they do not fit (train/budget.py).

Figures per seed and machine, and the measurements behind each choice:
benchmarks/RESULTS.md, "Why each choice", "experiments/magnetic_tile.py", and
the magnetic-tile sections before it.

  python main.py --config=experiments/magnetic_tile.py --workdir=workdirs/mt \
      --mode=ingest,train,eval
  python main.py --config=experiments/magnetic_tile.py:binary ...
"""

from pathlib import Path

from configs import presets, segmentation

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLASSES = {"MT_Free": 0, "MT_Blowhole": 1, "MT_Break": 2, "MT_Crack": 3,
           "MT_Fray": 4, "MT_Uneven": 5}


def get_config(variant: str = "multiclass"):
  """The recipe; `variant` "multiclass" (five defect classes) or "binary".

  Raises:
    ValueError: an unknown variant.
  """
  if variant not in ("binary", "multiclass"):
    raise ValueError(f"variant {variant!r}; expected binary or multiclass.")
  config = presets.apply(segmentation.get_config(), "rare_defects",
                         "defect_alarm", "cpu_unet")
  config.data.name = f"magnetic_tile_{variant}"
  config.data.source = "class_folders"
  config.data.source_kwargs.update({
      "root": str(SHARED / "data" / "magnetic_tile"), "classes": CLASSES,
      "images_subdir": "Imgs", "image_ext": ".jpg", "mask_ext": ".png",
      "threshold": 128, "binary": variant == "binary", "channels": 1})
  config.data.scale = 0.5
  config.data.image_size = (224, 320)  # multiple of the stride 32
  config.data.size_policy = "pad"
  config.data.crop_size = (160, 160)
  config.data.augment.rotate90 = False  # Flips only (docstring).
  config.data.num_workers = 1
  config.train.batch_size = 16
  config.train.steps = 1800  # The cap; the budget decides on slower CPUs.
  config.train.time_budget_minutes = 25.0  # Issue 8's budget (docstring).
  config.train.warmup_steps = 50
  config.train.eval_every = 600
  config.train.checkpoint_every = 600
  config.eval.batch_size = 16
  # The model card's human fields (an example: yours name your team).
  config.card.human = str(Path(__file__).parent / "cards" /
                          "magnetic_tile.yaml")
  return config


def get_sweep():
  """Seeds of the recipe (`--mode=render --sweep`: one JobSet each)."""
  return [{"seed": seed} for seed in (0, 1, 2)]
