"""Successive halving against the full grid it searches, on synthetic data.

  python benchmarks/halving_vs_grid.py --out=workdirs/halving_vs_grid

Runs experiments/synthetic_sweep.py's 9 configs x 2 seeds twice through
main.py: every run to the end (<out>/grid), and by successive halving with
rungs at 1/9 and 1/3 of the schedule (<out>/halving), on the same ingested
data. Prints each sweep's winner, the grid's score of the halving winner
against the grid's best (is it within one replicate std?), and the compute
of each in training steps. Rerunning resumes (both are sweeps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.harness import run_main

EXPERIMENT = "experiments/synthetic_sweep.py"


def _board(workdir: Path) -> dict:
  return json.loads((workdir / "sweep" / "leaderboard.json").read_text())


def main() -> None:
  """Runs both sweeps (module docstring) and prints the comparison."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, type=Path)
  args = parser.parse_args()
  grid_dir, halving_dir = (args.out / "grid").resolve(), (args.out / "halving").resolve()
  data = grid_dir / "data"
  run_main(f"--config={EXPERIMENT}", f"--workdir={grid_dir}", "--mode=ingest,sweep")
  run_main(f"--config={EXPERIMENT}:halving", f"--workdir={halving_dir}",
        f"--config.data.root={data}", "--mode=sweep")
  grid, halving = _board(grid_dir), _board(halving_dir)
  by_values = {json.dumps(c["overrides"], sort_keys=True): c
               for c in grid["candidates"]}
  best = grid["candidates"][0]
  winner = next(c for c in halving["candidates"] if c["id"] == halving["winner"])
  same = by_values[json.dumps(winner["overrides"], sort_keys=True)]
  gap = best["mean"] - same["mean"]
  spread = max(best["std"], same["std"])
  print(f"\ngrid best:      {best['overrides']} {best['mean']:.4f} ± "
        f"{best['std']:.4f}")
  print(f"halving winner: {winner['overrides']} {winner['mean']:.4f} ± "
        f"{winner['std']:.4f} (its grid runs: {same['mean']:.4f} ± "
        f"{same['std']:.4f})")
  print(f"gap to the grid's best {gap:.4f}, replicate std {spread:.4f}: "
        + ("within one std" if gap <= spread else "NOT within one std"))
  share = halving["compute_steps"] / grid["compute_steps"]
  print(f"compute: halving {halving['compute_steps']} steps, grid "
        f"{grid['compute_steps']} ({share:.0%})")
  print(f"halving verdict: {halving['comparison']['text']}")


if __name__ == "__main__":
  main()
