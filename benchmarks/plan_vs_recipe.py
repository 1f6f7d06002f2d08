"""The planned config against a hand-tuned recipe, same data, budget, seeds.

  python benchmarks/plan_vs_recipe.py --recipe=experiments/quickstart.py \
      --out=workdirs/pvr_quickstart --budget_minutes=6 --seeds=0,1,2

Ingests the recipe's dataset once (<out>/data), plans from the template
(configs/segmentation.py) with nothing but the dataset's name and the
budget given (<out>/plan/plan/), then trains and evaluates the recipe and
the plan per seed through main.py (each in a fresh process, both under
`train.time_budget_minutes`; the recipe keeps its own steps as the cap).
Prints per run and mean ± std over seeds: test defect-image Dice,
false-alarm rate, mean defect IoU, steps trained, training seconds.
Finished runs (eval/test_metrics.json present) are not run again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import REPO, mean_std, run_main
from chameleon_jax import components
from chameleon_jax import configfile

KEYS = ("defect_image_dice", "false_alarm_rate", "mean_defect_iou")


def _row(workdir: Path) -> dict:
  metrics = json.loads((workdir / "eval/test_metrics.json").read_text())
  budget = json.loads((workdir / "budget.json").read_text())
  return {**{k: metrics[k] for k in KEYS}, "steps": budget["steps"],
          "train_seconds": budget.get("train_seconds", float("nan"))}


def main() -> None:
  """Runs the comparison (module docstring) and prints the table."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipe", required=True)
  parser.add_argument("--out", required=True, type=Path)
  parser.add_argument("--budget_minutes", type=float, required=True)
  parser.add_argument("--seeds", default="0,1,2")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  data_root = (args.out / "data").resolve()
  recipe = configfile.load(REPO / args.recipe)
  recipe.data.root = str(data_root)
  if not data_root.exists():
    components.ingest(recipe, str(args.out), log=lambda *a: None)
  common = [f"--config.data.root={data_root}",
            f"--config.train.time_budget_minutes={args.budget_minutes:g}"]
  plan_dir = args.out / "plan"
  if not (plan_dir / "plan/config.py").exists():
    run_main("--config=configs/segmentation.py", f"--workdir={plan_dir}",
          f"--config.data.name={recipe.data.name}", *common, "--mode=plan")
  runs = {"recipe": (str(REPO / args.recipe), []),
          "planned": (str(plan_dir / "plan/config.py"), [])}
  for seed in seeds:
    for name, (config, rows) in runs.items():
      workdir = args.out / f"{name}_s{seed}"
      if not (workdir / "eval/test_metrics.json").exists():
        run_main(f"--config={config}", f"--workdir={workdir}",
              f"--config.seed={seed}", *common, "--mode=train,eval")
      rows.append(_row(workdir))
      print(f"{name} seed {seed}: " + ", ".join(
          f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
  print(f"\n| | {' | '.join(KEYS)} | steps | train s |")
  print("| --- |" + " --- |" * (len(KEYS) + 2))
  for name, (_, rows) in runs.items():
    cells = [mean_std([r[k] for r in rows]) for k in KEYS]
    cells += [f"{np.mean([r['steps'] for r in rows]):.0f}",
              f"{np.mean([r['train_seconds'] for r in rows]):.0f}"]
    print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
