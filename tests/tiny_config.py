"""A tiny, fast experiment for integration tests (32x32 grey synthetic data)."""

from configs import segmentation


def get_config(variant: str = ""):
  """The tiny experiment; variants: unet_wide (another model), learn (one
  larger defect class, long enough to learn it), folders (image and mask
  folders at data.source_kwargs.root), classification."""
  config = segmentation.get_config()
  config.data.name = "tiny"
  config.data.source_kwargs.update({
      "num_images": 96, "seed": 3, "channels": 1, "min_size": (32, 32),
      "max_size": (32, 32), "min_defect_fraction": 0.01,
      "max_defect_fraction": 0.05})
  config.data.image_size = (32, 32)
  config.data.augment.noise_std = 0.0
  config.model.kwargs = {"widths": (8, 16), "norm": "group"}
  config.train.batch_size = 8
  config.train.steps = 20
  config.train.warmup_steps = 2
  config.train.log_every = 1
  config.train.eval_every = 0
  config.train.checkpoint_every = 5
  config.eval.batch_size = 8
  if variant == "unet_wide":  # Another model, for the mismatch test.
    config.model.kwargs = {"widths": (16, 32), "norm": "group"}
  if variant == "learn":  # tests/test_training.py: the pipeline can learn.
    config.data.source_kwargs.update(min_defect_fraction=0.05,
                                     max_defect_fraction=0.15, binary=True)
    config.train.steps = 300
    config.train.warmup_steps = 10
    config.train.learning_rate = 5e-3
    config.train.log_every = 100
    config.train.checkpoint_every = 300
  if variant == "folders":  # Your own images and masks (source_kwargs.root).
    config.data.source = "image_mask_folders"
    for option in ("num_images", "seed", "min_size", "max_size",
                   "min_defect_fraction", "max_defect_fraction"):
      config.data.source_kwargs[option] = None  # Back to unset.
  if variant == "classification":  # Per-image labels (dominant class).
    config.task = "classification"
    config.model.name = "classifier"
    config.model.kwargs = {"encoder": "resnet18"}
    config.loss.name = "cross_entropy"
    config.train.best_metric = "balanced_accuracy"
  return config
