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

With --one_core_each, the plan is made on one core and each seed's recipe
and plan run at the same time, each pinned to its own core (swapping cores
from seed to seed): both see the same machine, other work on it slows both
alike, and three seeds take three budgets of wall time instead of six.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import REPO, mean_std, run_main, start_main, wait_main
from chameleon_jax import components
from chameleon_jax import configfile

KEYS = ("defect_image_dice", "false_alarm_rate", "mean_defect_iou")


def _row(workdir: Path) -> dict:
  metrics = json.loads((workdir / "eval/test_metrics.json").read_text())
  budget = json.loads((workdir / "budget.json").read_text())
  # Mean defect IoU is an argmax-mask figure: argmax/... under the
  # calibrated decision (evaluation/report.figure_names; older runs: plain).
  return {**{k: metrics.get(f"argmax/{k}", metrics[k])
             if k == "mean_defect_iou" else metrics[k] for k in KEYS},
          "steps": budget["steps"],
          "train_seconds": budget.get("train_seconds", float("nan"))}


def main() -> None:
  """Runs the comparison (module docstring) and prints the table."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipe", required=True)
  parser.add_argument("--out", required=True, type=Path)
  parser.add_argument("--budget_minutes", type=float, required=True)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--one_core_each", action="store_true")
  args = parser.parse_args()
  cores = ([frozenset({0}), frozenset({1})] if args.one_core_each
           else [None, None])
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
          f"--config.data.name={recipe.data.name}", *common, "--mode=plan",
          cpus=cores[1])
  runs = {"recipe": (str(REPO / args.recipe), []),
          "planned": (str(plan_dir / "plan/config.py"), [])}
  for seed in seeds:
    pending = []
    for i, (name, (config, _)) in enumerate(runs.items()):
      workdir = args.out / f"{name}_s{seed}"
      if not (workdir / "eval/test_metrics.json").exists():
        pending.append(start_main(
            f"--config={config}", f"--workdir={workdir}",
            f"--config.seed={seed}", *common, "--mode=train,eval",
            cpus=cores[(i + seed) % 2]))
        if not args.one_core_each:
          wait_main(pending.pop())
    for process in pending:
      wait_main(process)
    for name, (_, rows) in runs.items():
      rows.append(_row(args.out / f"{name}_s{seed}"))
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
