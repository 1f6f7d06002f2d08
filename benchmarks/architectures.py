"""Encoder/decoder pairs on magnetic tile at an equal CPU budget (issue 3).

  python benchmarks/architectures.py --out=workdirs/architectures \
      [--models=unet/-,unet/resnet18,fpn/resnet18,segformer/convnext_atto]
      [--budget_minutes=5 --seeds=0]

Every pair trains with the recipe of experiments/magnetic_tile.py (binary,
half resolution, 128x128 crops, evaluated on a 224x320 canvas, half of every batch from defect images,
Dice per image + CE, AdamW warmup + cosine) at batch 8 for as many steps as
fit `budget_minutes` of training on this machine: the step time of each
model is measured first (compiled, 6 steps after 2 warm-up steps) and the
schedule is set to budget / step time, so each schedule completes. The final
weights are evaluated on the test split: defect-image Dice, false-alarm rate
(defect-free images with >= 1 predicted defect pixel), false-positive pixels
per defect-free image, and training images/s. Results are stored per run
(<out>/<model>__<encoder>/seed<k>/result.json) and reused on a rerun.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments import magnetic_tile
from benchmarks import harness  # noqa: E402
from chameleon_jax import components  # noqa: E402
from chameleon_jax.data import dataset  # noqa: E402
from chameleon_jax import sharding
from chameleon_jax.train import loop, steps

DEFAULT = "unet/-,unet/resnet18,fpn/resnet18,segformer/convnext_atto"


def pair_config(architecture: str, encoder: str, data_root: Path):
  config = magnetic_tile.get_config("binary")
  config.data.root = str(data_root)
  config.data.crop_size = (128, 128)
  # Evaluation canvas: a multiple of 32 for every encoder (the experiment's
  # 208 rows suit the plain UNet only); the padding is ignored in metrics.
  config.data.image_size = (224, 320)
  config.data.num_workers = 0
  config.train.batch_size = 8
  config.model.name = architecture
  config.model.kwargs = ({} if encoder == "-" else {"encoder": encoder})
  config.train.eval_every = 0
  config.train.best_metric = ""
  config.train.keep_checkpoints = 1
  config.eval.checkpoint = "latest"
  config.eval.num_worst = 0
  return config


def step_seconds(config, num_classes: int, channels: int) -> float:
  """Seconds per compiled train step at the config's batch and crop."""
  mesh = sharding.make_mesh()
  config = config.copy_and_resolve_references()
  config.train.steps, config.train.warmup_steps = 100, 1
  settings = components.train_settings(config)
  graphdef, state = loop.build_state(
      components.model(config, num_classes, channels), settings, mesh)
  tx, _ = loop.optimizer(settings, settings.steps)
  step = jax.jit(steps.make_train_step(graphdef, components.loss(config), tx,
                                       None), donate_argnums=0)
  b = config.train.batch_size
  h, w = config.data.crop_size
  rng = np.random.default_rng(0)
  batch = sharding.shard_batch({
      "image": rng.uniform(size=(b, h, w, channels)).astype(np.float32),
      "mask": (rng.uniform(size=(b, h, w)) > 0.98).astype(np.int32)}, mesh)
  for _ in range(2):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(6):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / 6


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default="workdirs/architectures")
  parser.add_argument("--models", default=DEFAULT)
  parser.add_argument("--budget_minutes", type=float, default=5.0)
  parser.add_argument("--seeds", default="0")
  args = parser.parse_args()
  out = Path(args.out)
  probe = pair_config("unet", "-", out / "data")
  if not Path(probe.data.source_kwargs.root).is_dir():
    print(f"skipping: {probe.data.source_kwargs.root} is absent")
    return
  try:
    ds = dataset.latest(out / "data", probe.data.name)
  except FileNotFoundError:
    ds = components.ingest(probe, str(out), log=lambda *a: None)
  rows = []
  for pair in args.models.split(","):
    architecture, encoder = pair.split("/")
    config = pair_config(architecture, encoder, out / "data")
    seconds = step_seconds(config, ds.num_classes, ds.channels)
    config.train.steps = max(int(args.budget_minutes * 60 / seconds), 20)
    config.train.warmup_steps = max(config.train.steps // 20, 1)
    config.train.checkpoint_every = config.train.steps
    config.train.log_every = max(config.train.steps // 5, 1)
    runs = []
    for seed in map(int, args.seeds.split(",")):
      config.seed = seed
      runs.append(harness.train_and_evaluate(
          config, out / f"{architecture}__{encoder}" / f"seed{seed}",
          model=architecture, encoder=encoder, seed=seed,
          step_seconds=seconds))
      r = runs[-1]
      print(f"{pair:28} seed {seed}: {r['steps']} steps "
            f"({r['step_seconds']:.2f} s/step), defect Dice "
            f"{r['defect_image_dice']:.3f}, false alarms "
            f"{r['false_alarm_rate']:.2f}, FP px "
            f"{r['fp_pixels_per_clean_image']:.0f}", flush=True)
    rows.append((pair, runs))
  print(f"\nBudget {args.budget_minutes} min of training per run, batch 8, "
        "128x128 crops; test split, final weights.\n")
  print("| model/encoder | steps | train img/s | defect-image Dice | "
        "false-alarm rate | FP px per defect-free image |")
  print("| --- | ---: | ---: | --- | ---: | ---: |")
  for pair, runs in rows:
    print(f"| {pair} | {runs[0]['steps']} | "
          f"{8 / runs[0]['step_seconds']:.1f} | "
          f"{harness.mean_std([r['defect_image_dice'] for r in runs])} | "
          f"{np.mean([r['false_alarm_rate'] for r in runs]):.2f} | "
          f"{np.mean([r['fp_pixels_per_clean_image'] for r in runs]):.0f} |")


if __name__ == "__main__":
  main()
