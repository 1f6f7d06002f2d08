"""Shared by the comparison benchmarks (loss_evidence.py, architectures.py):
train one configuration, evaluate it on the test split, keep the result.

Each run lives in its own workdir and ends with <workdir>/result.json
(written atomically); a rerun returns the stored result, so an interrupted
sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from chameleon_jax import atomic

REPO = Path(__file__).resolve().parents[1]


def run_main(*args: str) -> None:
  """`python main.py ARGS` in the repository, echoed; exits with its
  stderr's tail when it fails (comparison benchmarks run modes this way,
  a fresh process per run)."""
  command = [sys.executable, "main.py", *args]
  print("  $", " ".join(command[1:]), flush=True)
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  if result.returncode:
    raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")


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
            "defect_iou": metrics["mean_defect_iou"],
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
