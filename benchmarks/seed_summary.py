"""Mean and standard deviation over seeds of `--mode=eval` results.

  python benchmarks/seed_summary.py workdirs/mt_s0 workdirs/mt_s1 workdirs/mt_s2

Reads each workdir's `eval/test_metrics.json`, `eval/test_per_image.json`
and, for calibrated decisions, `eval/decision.json` (and `budget.json` of
runs planned to a time budget), and prints per run and
as mean +- std (sample std, n - 1) over runs:
  - the test figures of the decision rule: defect-image Dice, false-alarm
    rate, defect recall, and the argmax mask's Dice and false-alarm rate;
  - the rule chosen on validation and the validation frontier: the best
    validation defect-image Dice within each false-alarm budget;
  - test defect-image Dice per source folder (the id prefix before "/";
    for class-by-folder data, the true class), with the share of images
    where anything was found;
  - for multiclass models, the per-class pixel Dice and the image-level
    confusion between classes, summed over runs.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np

from chameleon_jax.evaluation.decision import within_budget
from chameleon_jax.train import budget as time_budget

TEST_KEYS = ("defect_image_dice", "false_alarm_rate", "defect_recall",
             "argmax/defect_image_dice", "argmax/false_alarm_rate")
BUDGETS = (0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


def _load(path: Path):
  if not path.exists():
    raise SystemExit(f"{path} is missing: run --mode=eval on that workdir.")
  return json.loads(path.read_text())


def frontier(decision: dict) -> dict[float, float]:
  """Best validation defect-image Dice within each false-alarm budget."""
  out = {}
  for budget in BUDGETS:
    fits = [g["defect_image_dice"] for g in decision["grid"]
            if within_budget(g["false_alarm_rate"], budget)]
    out[budget] = max(fits) if fits else float("nan")
  return out


def by_folder(per_image: list[dict]) -> dict[str, tuple[float, float, int]]:
  """Folder -> (mean Dice, share of images with a hit, images)."""
  dice = collections.defaultdict(list)
  for row in per_image:
    if row["defect"]:
      dice[row["id"].split("/")[0]].append(row["dice"])
  return {k: (float(np.mean(v)), float(np.mean(np.asarray(v) > 0)), len(v))
          for k, v in sorted(dice.items())}


def _mean_std(values) -> str:
  v = np.asarray(values, float)
  std = v.std(ddof=1) if len(v) > 1 else float("nan")
  return f"{v.mean():.3f} +- {std:.3f}"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("workdirs", nargs="+", type=Path)
  args = parser.parse_args()
  runs = []
  for workdir in args.workdirs:
    out = workdir / "eval"
    metrics = _load(out / "test_metrics.json")
    decision = (_load(out / "decision.json")
                if (out / "decision.json").exists() else None)
    runs.append((workdir.name, metrics, decision,
                 by_folder(_load(out / "test_per_image.json"))))

  keys = [k for k in TEST_KEYS if all(k in m for _, m, _, _ in runs)]
  print("test split:")
  print(f"  {'run':24}" + "".join(f"{k:>26}" for k in keys))
  for name, m, _, _ in runs:
    print(f"  {name:24}" + "".join(f"{m[k]:26.3f}" for k in keys))
  print(f"  {'mean +- std':24}"
        + "".join(f"{_mean_std([m[k] for _, m, _, _ in runs]):>26}"
                  for k in keys))

  if all(d is not None for _, _, d, _ in runs):
    print("\nrule chosen on val; best val defect-image Dice within a "
          "false-alarm budget:")
    print(f"  {'run':24}{'rule (p >=, peak >=, px >=)':>28}"
          + "".join(f"{'<= ' + str(b):>9}" for b in BUDGETS))
    fronts = []
    for name, _, d, _ in runs:
      r = d["rule"]
      seed = r.get("seed_threshold") or r["threshold"]  # Older rules: none.
      rule = (f"{r['threshold']:.2f}, {seed:.2f}, {r['min_area']}"
              + (" +class" if r.get("class_min_areas") else ""))
      fronts.append(frontier(d))
      print(f"  {name:24}{rule:>28}"
            + "".join(f"{fronts[-1][b]:9.3f}" for b in BUDGETS))
    print(f"  {'mean':24}{'':>28}"
          + "".join(f"{np.mean([f[b] for f in fronts]):9.3f}"
                    for b in BUDGETS))

  plans = {w.name: json.loads((w / time_budget.FILENAME).read_text())
           for w in args.workdirs if (w / time_budget.FILENAME).exists()}
  if plans:
    print("\ntime budget (budget.json): steps planned, seconds per step, "
          "per validation, and training seconds against the budget:")
    for name, b in plans.items():
      m = b["measured"]
      took = b.get("train_seconds", float("nan"))
      print(f"  {name:24}{b['steps']:>7} steps{m['step_s']:8.2f} s"
            f"{m['validation_s']:8.1f} s{took:9.0f} / {b['budget_s']:.0f} s")

  folders = sorted({k for *_, f in runs for k in f})
  print("\ntest defect-image Dice by folder (share of images with a hit):")
  for folder in folders:
    cells = [f[folder] for *_, f in runs if folder in f]
    print(f"  {folder:24}{_mean_std([c[0] for c in cells]):>18}   hit "
          f"{np.mean([c[1] for c in cells]):.2f}   n={cells[0][2]}")

  names = [k[len("dice/"):] for k in runs[0][1] if k.startswith("dice/")]
  if len(names) > 2 and all("image_confusion" in m for _, m, _, _ in runs):
    print("\nmulticlass: per-class pixel Dice through the rule, and the "
          "image-level confusion summed over runs\n(rows: true dominant "
          "class, 0 = defect-free; columns: no alarm, then the predicted "
          "class):")
    for name in names[1:]:
      print(f"  {name:24}"
            f"{_mean_std([m[f'dice/{name}'] for _, m, _, _ in runs]):>18}")
    confusion = sum(np.asarray(m["image_confusion"]) for _, m, _, _ in runs)
    short = ["free"] + [n.removeprefix("MT_")[:8] for n in names[1:]]
    print(f"  {'true / predicted':24}{'none':>9}"
          + "".join(f"{n:>9}" for n in short[1:]))
    for name, row in zip(short, confusion):
      print(f"  {name:24}" + "".join(f"{v:9d}" for v in row))


if __name__ == "__main__":
  main()
