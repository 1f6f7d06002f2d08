"""Shared by the comparison benchmarks (loss_evidence.py, architectures.py):
train one configuration, evaluate it on the test split, keep the result.

Each run lives in its own workdir and ends with <workdir>/result.json
(written atomically); a rerun returns the stored result, so an interrupted
sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from chameleon_jax import atomic

REPO = Path(__file__).resolve().parents[1]


def start_main(*args: str, cpus: frozenset[int] | None = None
               ) -> subprocess.Popen:
  """Starts `python main.py ARGS` in the repository, echoed; with `cpus`
  the process (and the XLA thread pool it sizes from its affinity) runs on
  those cores only. Pair with `wait_main`."""
  command = [sys.executable, "main.py", *args]
  print("  $", " ".join(command[1:]),
        f"(cores {sorted(cpus)})" if cpus else "", flush=True)
  return subprocess.Popen(
      command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True, preexec_fn=(lambda: os.sched_setaffinity(0, cpus))
      if cpus else None)


def wait_main(process: subprocess.Popen) -> None:
  """Waits for `start_main`'s process; exits with its stderr's tail when
  it failed."""
  _, stderr = process.communicate()
  if process.returncode:
    raise SystemExit(f"{' '.join(process.args)} failed:\n{stderr[-4000:]}")


def run_main(*args: str, cpus: frozenset[int] | None = None) -> None:
  """`python main.py ARGS` in the repository, waited for (comparison
  benchmarks run modes this way, a fresh process per run)."""
  wait_main(start_main(*args, cpus=cpus))


def train_and_evaluate(config, workdir: Path, **labels) -> dict:
  """Trains `config` in `workdir`, evaluates the final weights on "test".

  Returns {**labels, train_seconds, steps, defect_iou, defect_image_dice,
  false_alarm_rate, fp_pixels_per_clean_image, metrics}.
  """
  from chameleon_jax.components import modes  # pylint: disable=import-outside-toplevel
  result_path = workdir / "result.json"
  if result_path.exists():
    return json.loads(result_path.read_text())
  start = time.perf_counter()
  modes.train(config, str(workdir))
  train_s = time.perf_counter() - start
  metrics = modes.evaluate(config, str(workdir))
  rows = json.loads((workdir / "eval" / "test_per_image.json").read_text())
  clean = [r["predicted_defect_pixels"] for r in rows if not r["defect"]]
  result = {**labels, "train_seconds": train_s, "steps": config.train.steps,
            "defect_iou": metrics.get("argmax/mean_defect_iou",
                                      metrics.get("mean_defect_iou")),
            "defect_image_dice": metrics["defect_image_dice"],
            "false_alarm_rate": metrics["false_alarm_rate"],
            "fp_pixels_per_clean_image": float(np.mean(clean)) if clean
                                         else 0.0,
            "metrics": metrics}
  atomic.write_json(result_path, result)
  return result


def mean_std(values) -> str:
  values = np.asarray(values, np.float64)
  return f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"
