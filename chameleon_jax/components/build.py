"""Config sections -> objects: the only code that reads a config.

Configs name registered components and give their options; the functions
here build them (datasets, models, losses, augmentation, input pipelines,
optimizers, restored models) and turn the sections the rooms below need into
their typed settings, so `main.py`, the modes, tests and benchmarks all
construct the same objects the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gin
import ml_collections

from chameleon_jax import sharding
from chameleon_jax.data import augment as augment_lib
from chameleon_jax.data import catalog
from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import images as imio
from chameleon_jax.data import labels, records
from chameleon_jax.data import formats  # noqa: F401  (registers formats)
from chameleon_jax.data import pipeline
from chameleon_jax.data import sources  # noqa: F401  (registers sources)
from chameleon_jax.data.augment import AugmentConfig
from chameleon_jax.evaluation.settings import EvalSettings, PredictSettings
from chameleon_jax.losses import build_loss
from chameleon_jax.model_io import card as card_lib
from chameleon_jax.model_io import restore as restore_lib
from chameleon_jax.models import build_model
from chameleon_jax.registry import DATASETS
from chameleon_jax.robustness import sweep  # Registers corruptions, attacks.
from chameleon_jax.train import loop


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


def config_digest(config: ml_collections.ConfigDict) -> str:
  """sha256 of the whole config (sorted JSON): what a model was made with."""
  return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True,
                                   default=str).encode()).hexdigest()


def parse_gin(config: ml_collections.ConfigDict) -> None:
  """Applies `config.gin_files` and `config.gin_bindings` (component defaults)."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(list(config.get("gin_files", [])),
                                      list(config.get("gin_bindings", [])))


def data_root(config: ml_collections.ConfigDict, workdir: str) -> Path:
  """Where dataset versions live: `data.root`, or <workdir>/data."""
  return Path(config.data.root) if config.data.root else Path(workdir) / "data"


def ingest(config: ml_collections.ConfigDict, workdir: str,
           log=print) -> dataset_lib.Dataset:
  """Runs the ETL stage: source -> validated, split, versioned shards."""
  source = config.data.source
  info, items = DATASETS.build(
      source, **catalog.checked(source, to_dict(config.data.source_kwargs)))
  with imio.pixel_limit(config.data.max_pixels):  # Items decode lazily.
    return dataset_lib.build(
        info, items, data_root(config, workdir), config.data.name,
        ingest_options(config), log=log)


def ingest_options(config: ml_collections.ConfigDict) -> dataset_lib.IngestOptions:
  """The `data.*` keys ingest uses (splits, seed, bad-file share, folds,
  groups, near-duplicate distance, the dataset's own split) as
  dataset.IngestOptions.
  """
  data = config.data
  return dataset_lib.IngestOptions(
      split_fractions=to_dict(data.splits), split_seed=data.split_seed,
      max_bad_fraction=data.max_bad_fraction, folds=data.get("folds", 0),
      group_pattern=data.get("group_pattern", ""),
      near_duplicate_bits=data.get("near_duplicate_bits", 4),
      split_pattern=data.split_pattern)


def open_dataset(config: ml_collections.ConfigDict, workdir: str, *,
                 name: str | None = None, version: str | None = None,
                 root: str | None = None) -> dataset_lib.Dataset:
  """The dataset version `data.version` of `data.name` under `data.root`
  (LATEST where the version is ""), with `data.fold` as validation;
  `name`, `version` and `root` open another dataset the same way."""
  root = Path(root) if root else data_root(config, workdir)
  name = config.data.name if name is None else name
  version = config.data.version if version is None else version
  fold = config.data.get("fold", 0)
  if version:
    return dataset_lib.Dataset.open(root / name / version, fold)
  return dataset_lib.latest(root, name, fold)


def served_examples(config: ml_collections.ConfigDict, workdir: str,
                    split: str):
  """(image, has a defect) of `split`'s records in their stored order, as
  a client would send them (stored size and bit depth); a defect is a
  defect pixel (segmentation) or a class other than 0 (classification)."""
  ds = open_dataset(config, workdir)
  segmentation = task(config) == "segmentation"
  for path in ds.shard_paths(split):
    for raw in records.read(Path(path)):
      record = records.decode_record(raw)
      yield record["image"], bool(
          labels.defect_pixels(record["mask"]).any() if segmentation
          else record["label"] != 0)


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """`model.kwargs` without the unset (None) options: those take the
  builder's defaults (or a gin binding)."""
  return {k: v for k, v in to_dict(config.model.kwargs).items()
          if v is not None}


def model_signature(config: ml_collections.ConfigDict, num_classes: int,
                    in_channels: int) -> dict:
  """What identifies a model's parameter layout (stored in checkpoints)."""
  return card_lib.signature(config.model.name, num_classes, in_channels,
                            config.model.dtype, model_kwargs(config))


def model(config: ml_collections.ConfigDict, num_classes: int,
          in_channels: int):
  """The model `model.name` with its set `model.kwargs`, for a dataset of
  `num_classes` and `in_channels`, initialised from `config.seed`.
  """
  return build_model(config.model.name, num_classes=num_classes,
                     in_channels=in_channels, dtype=config.model.dtype,
                     seed=config.seed, **model_kwargs(config))


def loss(config: ml_collections.ConfigDict):
  """The loss `loss.name` with `loss.kwargs` (losses.build_loss)."""
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
  """`data.image_size` as (H, W); None where it is () (native sizes)."""
  size = tuple(config.data.image_size)
  return (int(size[0]), int(size[1])) if size else None


def size_policy(config: ml_collections.ConfigDict) -> str:
  """`data.size_policy`, or where it is "" the task's own: "pad" for
  segmentation (whole images edge-padded at the bottom and right, the one
  convention of eval, predict, sliding windows and the served model) and
  "resize" for classification (the served classifier resizes)."""
  if config.data.size_policy:
    return config.data.size_policy
  return "resize" if task(config) == "classification" else "pad"


def canvases(config: ml_collections.ConfigDict) -> tuple[tuple[int, int], ...]:
  """The (H, W) canvases a whole image is edge-padded to at inference (the
  smallest that holds it: `evaluation.inference.canvas`): `export.buckets`,
  or () = (`data.image_size`,), the canvas evaluation pads to; () when
  both are () (predict pads to the stride; export refuses no buckets).

  Raises:
    ValueError: a segmentation bucket that does not hold `data.image_size`
      (an image evaluated on that canvas would be served on a smaller one,
      and GroupNorm makes every pixel depend on the padding).
  """
  size = image_size(config)
  buckets = tuple((int(h), int(w)) for h, w in config.export.buckets)
  if not buckets:
    return (size,) if size is not None else ()
  if task(config) == "segmentation" and size is not None:
    small = [b for b in buckets if b[0] < size[0] or b[1] < size[1]]
    if small:
      raise ValueError(
          f"export.buckets {small} do not hold data.image_size {size}: the "
          "served model would pad an image that evaluation padded to "
          f"{size} to a smaller canvas and answer differently; use buckets "
          f"of at least {size} (or () for exactly {size}).")
  return buckets


def augment(config: ml_collections.ConfigDict) -> AugmentConfig:
  """The preset `data.augment_preset`, with `data.augment` keys on top."""
  crop = tuple(config.data.crop_size)
  return augment_lib.from_preset(
      config.data.get("augment_preset", "default"),
      crop_size=(int(crop[0]), int(crop[1])) if crop else None,
      **to_dict(config.data.augment))


def eval_input(config: ml_collections.ConfigDict,
               batch_size: int | None = None) -> pipeline.EvalInput:
  """How evaluation sees a split: `data.image_size`, `data.size_policy`,
  `data.scale` and `eval.batch_size` (or `batch_size`).

  Raises:
    ValueError: `data.image_size` is () (evaluation batches need one size).
  """
  return pipeline.EvalInput(
      size=tuple(config.data.image_size), size_policy=size_policy(config),
      scale=float(config.data.scale),
      batch_size=int(config.eval.batch_size if batch_size is None
                     else batch_size))


def eval_settings(config: ml_collections.ConfigDict) -> EvalSettings:
  """The `eval.*` section as EvalSettings (unknown keys refused)."""
  section = to_dict(config.eval)
  section.pop("batch_size")  # Part of the EvalInput.
  return EvalSettings(**section)


def predict_settings(config: ml_collections.ConfigDict,
                     input_dir: str | None = None) -> PredictSettings:
  """The `predict.*` section (with `data.scale`, `eval.batch_size` and the
  served model's `canvases`); `input_dir` in place of predict.input_dir
  (the labelling tool predicts the dataset's own image folder)."""
  section = to_dict(config.predict)
  if input_dir is not None:
    section["input_dir"] = input_dir
  return PredictSettings(**section,
                         scale=float(config.data.scale),
                         batch_size=int(config.eval.batch_size),
                         canvases=canvases(config))


def robustness_settings(config: ml_collections.ConfigDict):
  """The `robustness.*` section as sweep.Settings (unknown keys refused)."""
  return sweep.Settings(**to_dict(config.robustness))


def train_settings(config: ml_collections.ConfigDict) -> loop.TrainSettings:
  """The `train.*` section as TrainSettings (unknown keys refused)."""
  return loop.TrainSettings(**to_dict(config.train))


def _checkpoint_layout(config: ml_collections.ConfigDict) -> dict:
  """What restoring needs of the training run: its optimizer (the state
  layout), whether it kept an EMA, the metric best checkpoints were kept by."""
  settings = train_settings(config)
  tx, _ = loop.optimizer(settings, settings.steps)
  return {"tx": tx, "use_ema": bool(settings.ema_decay),
          "best_metric": settings.best_metric or None}


def restore(config: ml_collections.ConfigDict, workdir: str, which: str,
            mesh=None) -> restore_lib.Restored:
  """`workdir`'s `which` ("best"/"latest") checkpoint, refusing a model
  other than the config's (model_io.restore)."""
  return restore_lib.restore(
      workdir, which, mesh=mesh, **_checkpoint_layout(config),
      expected=lambda sig: model_signature(config, sig["num_classes"],
                                           sig["in_channels"]))


def load_members(config: ml_collections.ConfigDict, workdirs):
  """Ensemble members (model_io.load_members): each member's own model,
  the experiment's `eval.checkpoint` and optimizer layout."""
  return restore_lib.load_members(workdirs, config.eval.checkpoint,
                                  **_checkpoint_layout(config))


def train_iterator(config: ml_collections.ConfigDict,
                   ds: dataset_lib.Dataset, mesh, process_index: int,
                   process_count: int):
  """The checkpointable training iterator of `data.*` (this process's rows
  of every global batch of `train.batch_size`)."""
  fraction = config.data.defect_image_fraction
  return pipeline.train_iterator(
      ds, split="train",
      local_batch_size=sharding.local_batch_size(config.train.batch_size,
                                                 mesh),
      seed=config.seed, size=image_size(config),
      size_policy=size_policy(config), augment=augment(config),
      scale=config.data.scale,
      defect_image_fraction=fraction if fraction >= 0 else None,
      defect_class_balance=config.data.defect_class_balance,
      num_workers=config.data.num_workers,
      process_index=process_index, process_count=process_count)
