"""Which loss on imbalanced defect data: the evidence table of issue 4.

  python benchmarks/loss_evidence.py --out=workdirs/loss_evidence \
      [--settings=fg2,fg05,fg01,magnetic_tile] [--losses=...] [--seeds=0,1,2]

Every loss trains the same model with the same optimiser, data order, batch
and number of steps on each setting (an equal budget in steps; the seconds
each run took are reported too, since Lovasz costs more per step), then the
final weights are evaluated on the test split:

  fg2, fg05, fg01  synthetic grey 96x96 surfaces, binary (defect vs
                   background), 70% defect-free images, one defect per defect
                   image covering 2%, 0.5% or 0.1% of its pixels; images are
                   sampled uniformly (so ~70% of every batch is empty);
  magnetic_tile    ../shared/data/magnetic_tile, binary, the recipe of
                   experiments/magnetic_tile.py at a smaller budget (skipped
                   when ../shared is absent).

Reported per loss and setting, mean (and std) over the seeds: defect-class
IoU on the test split (pixels pooled), false-alarm rate (share of defect-free
test images with >= 1 predicted defect pixel) and false-positive pixels per
defect-free image. Each run writes <out>/<setting>/<loss>/seed<k>/result.json;
a rerun skips finished runs, so the sweep resumes after an interruption.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from chameleon_jax import components  # noqa: E402
from chameleon_jax.data import dataset  # noqa: E402
from benchmarks import harness  # noqa: E402
from configs import segmentation  # noqa: E402

# name -> (registry loss, kwargs). Region losses use their registered
# defaults (batch reduction, background excluded, empty targets penalised).
LOSSES = {
    "cross_entropy": ("cross_entropy", {}),
    "focal": ("focal", {}),
    "dice_ce": ("dice_ce", {}),
    "dice_focal": ("dice_focal", {}),
    "tversky": ("tversky", {}),
    "lovasz": ("lovasz", {}),
    # The magnetic-tile recipe's variant: Dice per image, empty images
    # excluded from the Dice term (CE still sees them).
    "dice_ce_image": ("dice_ce", {"reduce_over": "image",
                                  "empty_target": "exclude"}),
}
FOREGROUND = {"fg2": 0.02, "fg05": 0.005, "fg01": 0.001}


def setting_config(setting: str, steps: int):
  """The experiment config of one setting (data, model, budget)."""
  if setting in FOREGROUND:
    config = segmentation.get_config()
    fraction = FOREGROUND[setting]
    config.data.name = f"synthetic_binary_{setting}"
    config.data.source = "synthetic"
    config.data.source_kwargs = {
        "num_images": 600, "seed": 0, "channels": 1, "binary": True,
        "min_size": (96, 96), "max_size": (96, 96), "empty_fraction": 0.7,
        "min_defect_fraction": fraction, "max_defect_fraction": fraction,
        "max_defects_per_image": 1}
    config.data.image_size = (96, 96)
    config.train.batch_size = 8
  elif setting == "magnetic_tile":
    from experiments import magnetic_tile  # pylint: disable=import-outside-toplevel
    config = magnetic_tile.get_config("binary")
    config.data.crop_size = (96, 96)
    config.data.num_workers = 0  # Grain workers need absl flags parsed.
    config.train.batch_size = 8
  else:
    raise ValueError(f"Unknown setting {setting!r}; expected one of "
                     f"{[*FOREGROUND, 'magnetic_tile']}.")
  # Half the default widths: the losses, not the model, are compared, and
  # 84 runs must fit a CPU afternoon.
  config.model.kwargs = {"widths": (8, 16, 32, 64), "norm": "group"}
  config.train.steps = steps
  config.train.warmup_steps = min(50, steps // 10)
  config.train.eval_every = 0
  config.train.checkpoint_every = steps
  config.train.keep_checkpoints = 1
  config.train.log_every = max(steps // 4, 1)
  config.train.best_metric = ""
  config.eval.checkpoint = "latest"
  config.eval.num_worst = 0
  return config


def run_one(config, out: Path, data_root: Path, loss: str, seed: int) -> dict:
  config = config.copy_and_resolve_references()
  config.data.root = str(data_root)
  config.seed = seed
  config.loss.name, kwargs = LOSSES[loss]
  config.loss.kwargs = kwargs
  return harness.train_and_evaluate(config, out / loss / f"seed{seed}",
                                    loss=loss, seed=seed)


def table(results: dict[str, dict[str, list[dict]]]) -> str:
  settings = list(results)
  head = "| loss | " + " | ".join(
      f"{s}: IoU / false alarms / FP px" for s in settings) + " | s/run |"
  lines = [head, "| --- " * (len(settings) + 2) + "|"]
  losses = [l for l in LOSSES if any(l in results[s] for s in settings)]
  for loss in losses:
    cells, seconds = [], []
    for s in settings:
      runs = results[s].get(loss, [])
      if not runs:
        cells.append("")
        continue
      fa = np.mean([r["false_alarm_rate"] for r in runs])
      fp = np.mean([r["fp_pixels_per_clean_image"] for r in runs])
      seconds += [r["train_seconds"] for r in runs]
      cells.append(f"{harness.mean_std([r['defect_iou'] for r in runs])} / "
                   f"{fa:.2f} / {fp:.1f}")
    lines.append(f"| {loss} | " + " | ".join(cells) +
                 f" | {np.mean(seconds):.0f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default="workdirs/loss_evidence")
  parser.add_argument("--settings", default="fg2,fg05,fg01,magnetic_tile")
  parser.add_argument("--losses", default=",".join(LOSSES))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--mt_steps", type=int, default=300)
  args = parser.parse_args()
  unknown = set(args.losses.split(",")) - set(LOSSES)
  if unknown:
    parser.error(f"unknown --losses {sorted(unknown)}; expected {list(LOSSES)}")
  out = Path(args.out)
  configs = {}
  for setting in args.settings.split(","):
    steps = args.mt_steps if setting == "magnetic_tile" else args.steps
    config = setting_config(setting, steps)
    if setting == "magnetic_tile" and not Path(
        config.data.source_kwargs.root).is_dir():
      print(f"skipping {setting}: {config.data.source_kwargs.root} is absent")
      continue
    config.data.root = str(out / "data")
    try:
      dataset.latest(config.data.root, config.data.name)
    except FileNotFoundError:
      components.ingest(config, str(out), log=lambda *a: None)
    configs[setting] = config
  # Seeds outermost: an interrupted sweep still covers every setting.
  results: dict[str, dict[str, list[dict]]] = {s: {} for s in configs}
  for seed in map(int, args.seeds.split(",")):
    for setting, config in configs.items():
      for loss in args.losses.split(","):
        r = run_one(config, out / setting, Path(config.data.root), loss, seed)
        results[setting].setdefault(loss, []).append(r)
        print(f"{setting:14} {loss:14} seed {seed}: IoU "
              f"{r['defect_iou']:.3f} false alarms "
              f"{r['false_alarm_rate']:.2f} FP px "
              f"{r['fp_pixels_per_clean_image']:.1f} "
              f"({r['train_seconds']:.0f} s)", flush=True)
  print()
  print(table(results))


if __name__ == "__main__":
  main()
