"""A sweep runner over a stand-in for training, for tests/test_sweeps.py.

Each run is a child process (`python tests/sweep_driver.py train RUN_DIR`)
that reads the run's job.json (the candidate's values), sleeps a while in
two halves (a "checkpoint" file marks the first), appends to the run's
executions.log, and writes metrics.jsonl with a validation score that is a
function of the values: a resumed run finishes only its second half, like a
training run resuming from its checkpoint.

  python tests/sweep_driver.py sweep WORKDIR STORAGE [PARALLEL]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from chameleon_jax.sweeps import report, runner
from chameleon_jax.sweeps import space as s

SPACE = s.Space(grid=s.product(s.sweep("lr", [0.1, 0.3, 0.5]),
                               s.sweep("width", [8, 16])),
                replicates=s.seeds(0, 1))
SLEEP_S = float(os.environ.get("SWEEP_DRIVER_SLEEP", "0.6"))
TOTAL_STEPS = 20


def score(values: dict) -> float:
  """The stand-in's validation score of a run's values."""
  return round(1 - (values["lr"] - 0.3) ** 2 + values["width"] / 1000
               + values["seed"] / 100, 6)


def train(run_dir: Path, stop_at: int = 0) -> None:
  """The stand-in training process (module docstring): steps 1-20,
  validated every 5 (the score rises to score(values) at step 20); with
  `stop_at`, up to that step; a rerun continues after the last step it
  logged."""
  values = json.loads((run_dir / "job.json").read_text())
  with open(run_dir / "executions.log", "a") as log:
    log.write(f"{os.getpid()}\n")
  checkpoint = run_dir / "checkpoint"
  if not checkpoint.exists():
    time.sleep(SLEEP_S / 2)
    checkpoint.write_text("half")
  time.sleep(SLEEP_S / 2)
  metrics = run_dir / "metrics.jsonl"
  done = ([json.loads(line)["step"] for line in metrics.read_text().splitlines()]
          if metrics.exists() else [0])
  rows = []
  for step in (5, 10, 15, 20):
    if max(done) < step <= (stop_at or TOTAL_STEPS):
      rows += [{"step": step, "split": "train", "loss": 1 / step},
               {"step": step, "split": "val",
                "score": round(score(values) - 0.1 * (1 - step / TOTAL_STEPS),
                               6)}]
  with open(metrics, "a") as out:
    out.write("".join(json.dumps(r) + "\n" for r in rows))


def job(workdir: Path, storage: str, parallel: int = 1,
        space: s.Space = SPACE) -> runner.Job:
  """A runner Job over `space` whose runs are the stand-in."""
  out = workdir / "sweep"

  def prepare(overrides):
    runs = []
    for replicate in space.replicates:
      values = {**overrides, **replicate}
      run_dir = out / "runs" / runner.candidate_id(values)
      run_dir.mkdir(parents=True, exist_ok=True)
      (run_dir / "job.json").write_text(json.dumps(values))
      runs.append((replicate, run_dir))
    return runs

  return runner.Job(
      workdir=out, storage=storage, study_name="driver", identity="driver-1",
      space=space, parallel=parallel, heartbeat_s=1, metric="score",
      prepare=prepare,
      command=lambda run_dir, stop_at: [sys.executable, __file__, "train",
                                        str(run_dir), str(stop_at)])


def sweep(workdir: Path, storage: str, parallel: int = 1) -> dict:
  """Runs the stand-in sweep and writes its leaderboard."""
  trials = runner.Runner(job(workdir, storage, parallel), log=print).run()
  return report.write(trials, workdir / "sweep", metric="score",
                      identity="driver-1", keys=SPACE.keys,
                      winner_config="winner.py")


if __name__ == "__main__":
  if sys.argv[1] == "train":
    train(Path(sys.argv[2]), int(sys.argv[3]))
  else:
    sweep(Path(sys.argv[2]), sys.argv[3],
          int(sys.argv[4]) if len(sys.argv) > 4 else 1)
