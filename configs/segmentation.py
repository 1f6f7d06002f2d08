"""Template for segmentation experiments. Every knob, with where it acts.

Experiments in `experiments/` start from `get_config()` and override. On the
command line: `--config=experiments/x.py --config.train.steps=500`; unknown
keys are refused. Component defaults that are not set here (e.g. a UNet's
norm groups, a loss's smoothing) are gin-bindable: `config.gin_bindings =
["models.unet.norm_groups = 4"]` or `config.gin_files = ["configs/x.gin"]`.
A value given here always wins over a gin binding.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.gin_files = []
  config.gin_bindings = []

  # --- ETL (--mode=ingest) and input pipeline -------------------------------
  config.data = ml_collections.ConfigDict()
  config.data.root = ""  # Where dataset versions live; "" = <workdir>/data.
  config.data.name = "dataset"
  config.data.version = ""  # "" = the LATEST version of data.name.
  config.data.source = "synthetic"  # A DATASETS registry name.
  config.data.source_kwargs = ml_collections.ConfigDict()
  config.data.splits = ml_collections.ConfigDict(
      {"train": 0.7, "val": 0.15, "test": 0.15})
  config.data.split_seed = 0
  config.data.max_bad_fraction = 0.05  # Ingest fails above this share.
  config.data.scale = 1.0  # Resampling factor for every image, first.
  config.data.image_size = (96, 96)  # (H, W) for eval; () = native (train).
  config.data.size_policy = "resize"  # resize | pad | crop (transforms.py).
  config.data.crop_size = ()  # Training crop (H, W); () = whole image.
  config.data.num_workers = 0  # Grain worker processes.
  # Share of every batch drawn from images with a defect (exact per batch);
  # -1 = sample images uniformly. Real data is ~70% defect-free.
  config.data.defect_image_fraction = -1.0
  config.data.augment = ml_collections.ConfigDict({
      "foreground_crop_fraction": 0.33,
      "crop_scale": (1.0, 1.0),
      "flip": True,
      "rotate90": True,
      "brightness": 0.1,
      "contrast": 0.1,
      "noise_std": 0.02,
  })

  # --- Model and loss (registry names + their options) ----------------------
  config.model = ml_collections.ConfigDict()
  config.model.name = "unet"
  config.model.dtype = "float32"  # Compute dtype; "bfloat16" for mixed.
  config.model.kwargs = ml_collections.ConfigDict(
      {"widths": (16, 32, 64, 128), "norm": "group"})
  config.loss = ml_collections.ConfigDict()
  config.loss.name = "dice_ce"
  config.loss.kwargs = ml_collections.ConfigDict()

  # --- Optimisation ----------------------------------------------------------
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16  # Global, over all devices and processes.
  config.train.steps = 1000
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 50
  config.train.weight_decay = 1e-4
  config.train.grad_clip_norm = 1.0  # 0 = no clipping.
  config.train.ema_decay = 0.0  # 0 = no EMA; e.g. 0.99 evaluates the EMA.
  config.train.log_every = 20
  config.train.eval_every = 250  # Validation every N steps; 0 = at the end only.
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 2
  config.train.best_metric = "mean_defect_iou"  # "" = no best checkpoint.

  # --- Evaluation and prediction ---------------------------------------------
  config.eval = ml_collections.ConfigDict()
  config.eval.split = "test"
  config.eval.batch_size = 16
  config.eval.min_defect_area = 1  # Predicted pixels that raise an alarm.
  config.eval.checkpoint = "best"  # best | latest
  config.eval.num_worst = 8  # Overlays written for the worst images.
  config.predict = ml_collections.ConfigDict()
  config.predict.input_dir = ""
  config.predict.output_dir = ""  # "" = <workdir>/predictions.

  # --- Multi-process (jax.distributed); None = from the environment ----------
  config.distributed = ml_collections.ConfigDict()
  config.distributed.coordinator_address = ""
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  return config
