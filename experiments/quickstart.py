"""Quickstart: synthetic grey surfaces with cracks, spots and stains.

  python main.py --config=experiments/quickstart.py --workdir=workdirs/quickstart \
      --mode=ingest,train,eval
"""

from pathlib import Path

from configs import segmentation


def get_config():
  """The README quickstart: the template on the built-in synthetic data."""
  config = segmentation.get_config()
  config.data.name = "synthetic"
  config.data.source = "synthetic"
  config.data.source_kwargs.update({"num_images": 800, "seed": 0, "channels": 1,
                               "min_size": (96, 96), "max_size": (96, 96)})
  config.data.image_size = (96, 96)
  config.train.batch_size = 16
  config.train.steps = 500
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  # The model card's human fields (a synthetic demo's; yours are your own).
  config.card.human = str(Path(__file__).parent / "cards" / "quickstart.yaml")
  return config
