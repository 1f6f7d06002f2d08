"""Turns an experiment config (which only describes) into components.

Configs name registered components and give their options; this module is the
one place that builds them, so `main.py`, the trainer, evaluation and the
benchmarks all construct the same objects the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gin
import ml_collections

from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import formats  # noqa: F401  (registers formats)
from chameleon_jax.data import sources  # noqa: F401  (registers sources)
from chameleon_jax import robustness  # noqa: F401  (corruptions, attacks)
from chameleon_jax.data import augment as augment_lib
from chameleon_jax.data.augment import AugmentConfig
from chameleon_jax.losses import build_loss
from chameleon_jax.models import build_model
from chameleon_jax.registry import DATASETS


def to_dict(value: Any) -> Any:
  """ConfigDict / FrozenConfigDict / tuples -> plain Python containers."""
  if isinstance(value, (ml_collections.ConfigDict,
                        ml_collections.FrozenConfigDict)):
    return {k: to_dict(v) for k, v in value.items()}
  if isinstance(value, dict):
    return {k: to_dict(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_dict(v) for v in value]
  return value


def parse_gin(config: ml_collections.ConfigDict) -> None:
  """Applies `config.gin_files` and `config.gin_bindings` (component defaults)."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(list(config.get("gin_files", [])),
                                      list(config.get("gin_bindings", [])))


def data_root(config: ml_collections.ConfigDict, workdir: str) -> Path:
  return Path(config.data.root) if config.data.root else Path(workdir) / "data"


def ingest(config: ml_collections.ConfigDict, workdir: str,
           log=print) -> dataset_lib.Dataset:
  """Runs the ETL stage: source -> validated, split, versioned shards."""
  info, items = DATASETS.build(config.data.source,
                               **to_dict(config.data.source_kwargs))
  return dataset_lib.build(
      info, items, data_root(config, workdir), config.data.name,
      ingest_options(config), log=log)


def ingest_options(config: ml_collections.ConfigDict) -> dataset_lib.IngestOptions:
  data = config.data
  return dataset_lib.IngestOptions(
      split_fractions=to_dict(data.splits), split_seed=data.split_seed,
      max_bad_fraction=data.max_bad_fraction, folds=data.get("folds", 0),
      group_pattern=data.get("group_pattern", ""),
      near_duplicate_bits=data.get("near_duplicate_bits", 4))


def open_dataset(config: ml_collections.ConfigDict,
                 workdir: str) -> dataset_lib.Dataset:
  root = data_root(config, workdir)
  fold = config.data.get("fold", 0)
  if config.data.version:
    return dataset_lib.Dataset.open(root / config.data.name /
                                    config.data.version, fold)
  return dataset_lib.latest(root, config.data.name, fold)


def model_signature(config: ml_collections.ConfigDict, num_classes: int,
                    in_channels: int) -> dict:
  """What identifies a model's parameter layout (stored in checkpoints)."""
  return {"name": config.model.name, "num_classes": num_classes,
          "in_channels": in_channels, "dtype": config.model.dtype,
          "kwargs": to_dict(config.model.kwargs)}


def model(config: ml_collections.ConfigDict, num_classes: int,
          in_channels: int):
  return build_model(config.model.name, num_classes=num_classes,
                     in_channels=in_channels, dtype=config.model.dtype,
                     seed=config.seed, **to_dict(config.model.kwargs))


def loss(config: ml_collections.ConfigDict):
  return build_loss(config.loss.name, **to_dict(config.loss.kwargs))


TASKS = ("segmentation", "classification")


def task(config: ml_collections.ConfigDict) -> str:
  """The experiment's task; decides targets, metrics and eval outputs."""
  name = config.get("task", "segmentation")
  if name not in TASKS:
    raise ValueError(f"task={name!r}; expected one of {TASKS}.")
  return name


def target_key(config: ml_collections.ConfigDict) -> str:
  """The batch entry the loss is computed against."""
  return "label" if task(config) == "classification" else "mask"


def image_size(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  size = tuple(config.data.image_size)
  return (int(size[0]), int(size[1])) if size else None


def augment(config: ml_collections.ConfigDict) -> AugmentConfig:
  """The preset `data.augment_preset`, with `data.augment` keys on top."""
  crop = tuple(config.data.crop_size)
  return augment_lib.from_preset(
      config.data.get("augment_preset", "default"),
      crop_size=(int(crop[0]), int(crop[1])) if crop else None,
      **to_dict(config.data.augment))
