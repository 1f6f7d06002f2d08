"""A sweep on the built-in synthetic data: learning rate x UNet width.

  python main.py --config=experiments/synthetic_sweep.py --workdir=W \
      --mode=ingest,sweep                  # the full grid: 9 x 2 seeds
  python main.py --config=experiments/synthetic_sweep.py:halving \
      --workdir=W2 --config.data.root=W/data --mode=sweep
                                           # the same by successive halving

benchmarks/halving_vs_grid.py runs both and compares them (RESULTS.md).
"""

from chameleon_jax.sweeps import space as s
from configs import segmentation


def get_config(variant: str = "grid"):
  """Small synthetic data and a short schedule (a few minutes a run).

  Raises:
    ValueError: a variant other than grid or halving.
  """
  _check(variant)  # The variant changes the sweep, not the config.
  config = segmentation.get_config()
  config.data.name = "synthetic_sweep"
  config.data.source = "synthetic"
  config.data.source_kwargs.update({"num_images": 320, "seed": 0, "channels": 1,
                               "min_size": (64, 64), "max_size": (64, 64),
                               "min_defect_fraction": 0.01,
                               "max_defect_fraction": 0.05})
  config.data.image_size = (64, 64)
  config.data.defect_image_fraction = 0.5
  config.model.kwargs.widths = (8, 16, 32, 64)
  config.train.batch_size = 16
  config.train.steps = 270
  config.train.warmup_steps = 20
  config.train.eval_every = 30
  config.train.checkpoint_every = 30
  config.train.log_every = 30
  return config


def get_sweep(variant: str = "grid"):
  """3 learning rates x 3 first-level widths, seeds 0 and 1; `halving`:
  rungs at 1/9 and 1/3 of the schedule."""
  _check(variant)
  space = s.product(s.sweep("train.learning_rate", [5e-4, 2e-3, 8e-3]),
                    s.sweep("model.kwargs.widths", [(4, 8, 16, 32),
                                                    (8, 16, 32, 64),
                                                    (16, 32, 64, 128)]))
  rungs = (1 / 9, 1 / 3, 1.0) if variant == "halving" else ()
  return s.Space(grid=space, replicates=s.seeds(0, 1), rungs=rungs)


def _check(variant: str) -> None:
  if variant not in ("grid", "halving"):
    raise ValueError(f"variant {variant!r}; expected grid or halving.")
