"""What a run tells people: metrics.jsonl, TensorBoard events, a progress bar.

TensorBoard event files are written with tensorboardX, which needs no
TensorFlow. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping, TextIO

import jax
import numpy as np

from chameleon_jax import atomic


class MetricWriter:
  """Appends {"step", "split", metrics...} lines and TensorBoard scalars.

  Args:
    workdir: where metrics.jsonl and tensorboard/ are.
    start: the step training (re)starts from: lines after it, written by a
      run that was stopped before its next checkpoint, are dropped first
      (atomically), so a resumed run's steps appear once.
  """

  def __init__(self, workdir: str | Path, start: int = 0):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # No TensorFlow import.
      workdir = Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      _drop_after(workdir / "metrics.jsonl", start)
      self._jsonl = open(workdir / "metrics.jsonl", "a")
      self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    # Scalars only (a confusion matrix stays in the eval JSON).
    clean = {k: float(v) for k, v in metrics.items()
             if not isinstance(v, (list, tuple, dict)) and np.ndim(v) == 0}
    self._jsonl.write(json.dumps({"step": step, "split": split, **{
        k: (v if math.isfinite(v) else None) for k, v in clean.items()}}) + "\n")
    self._jsonl.flush()
    for k, v in clean.items():
      if math.isfinite(v):
        self._tb.add_scalar(f"{split}/{k}", v, step)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def _drop_after(path: Path, step: int) -> None:
  """Rewrites `path` without the lines of steps after `step` (unreadable
  lines, e.g. one cut by a kill, go too)."""
  if not path.exists():
    return
  kept, dropped = [], 0
  for line in path.read_text().splitlines():
    try:
      if json.loads(line).get("step", 0) <= step:
        kept.append(line)
        continue
    except (ValueError, AttributeError):
      pass
    dropped += 1
  if dropped:
    atomic.write_text(path, "".join(f"{line}\n" for line in kept))


class ProgressBar:
  """step/total, loss, images/s and ETA; redraws in place on a terminal."""

  def __init__(self, total: int, start: int, batch_size: int,
               stream: TextIO = sys.stderr, width: int = 24):
    self.total, self.start, self.batch_size = total, start, batch_size
    self.stream, self.width = stream, width
    self.enabled = jax.process_index() == 0
    self._t0 = time.perf_counter()
    self._tty = hasattr(stream, "isatty") and stream.isatty()

  def update(self, step: int, **values: float) -> None:
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self._t0
    done = step - self.start
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    filled = int(self.width * step / max(self.total, 1))
    bar = "#" * filled + "." * (self.width - filled)
    text = " ".join(f"{k} {v:.4g}" for k, v in values.items())
    line = (f"[{bar}] {step}/{self.total} {text} "
            f"{rate * self.batch_size:.1f} img/s ETA {_duration(eta)}")
    self.stream.write(("\r" + line) if self._tty else (line + "\n"))
    self.stream.flush()

  def close(self) -> None:
    if self.enabled and self._tty:
      self.stream.write("\n")


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "--:--"
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
