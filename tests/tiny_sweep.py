"""A tiny sweep for tests: two learning rates x two seeds of the tiny config."""

from chameleon_jax.sweeps import space as s
from tests import tiny_config


def get_config():
  """The tiny experiment (tests/tiny_config.py), validating at the end."""
  config = tiny_config.get_config()
  config.train.steps = 10
  config.train.checkpoint_every = 5
  return config


def get_sweep():
  """2 learning rates, each with seeds 0 and 1."""
  return s.Space(grid=s.sweep("train.learning_rate", [2e-3, 1e-2]),
                 replicates=s.seeds(0, 1))
