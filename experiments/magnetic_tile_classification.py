"""Magnetic tile as image classification: six classes (Free + 5 defect types).

The same ingested dataset as experiments/magnetic_tile.py:multiclass (each
image's label is its class folder; MT_Free is class 0, the OK class), whole
images resized to 160x160 (the tiles are 100-400 px, mostly elongated; a
classifier sees the whole part), a ResNet-18 classifier with GroupNorm, CE
with label smoothing 0.1, and half of every batch drawn from defect images
(71% of the images are defect-free). Best checkpoint on validation balanced
accuracy (mean per-class recall), which the rare classes weigh as much as
MT_Free. Evaluation writes accuracy, per-class recall/precision, the
false-alarm rate (Free predicted as a defect), defect recall and a confusion
matrix plot (eval/test_confusion.png).

  python main.py --config=experiments/magnetic_tile_classification.py \\
      --workdir=workdirs/mt_cls --mode=ingest,train,eval
"""

from experiments import magnetic_tile


def get_config(encoder: str = "resnet18"):
  """Six folders as six classes, `encoder` + linear head (the variant)."""
  config = magnetic_tile.get_config("multiclass")
  config.task = "classification"
  config.data.scale = 1.0
  config.data.image_size = (160, 160)
  config.data.size_policy = "resize"
  config.data.crop_size = ()
  config.data.augment.foreground_crop_fraction = 0.0
  config.model.name = "classifier"
  config.model.kwargs = {"encoder": encoder}
  config.loss.name = "cross_entropy"
  config.loss.kwargs = {"label_smoothing": 0.1}
  config.train.batch_size = 16
  config.train.steps = 1200
  config.train.eval_every = 300
  config.train.checkpoint_every = 300
  config.train.best_metric = "balanced_accuracy"
  return config
