"""A sweep's search space, declared in an experiment file's `get_sweep()`.

big_vision's grammar for grids, Optuna's distributions for ranges, and
replicates (seeds, folds) that every candidate runs:

  from chameleon_jax.sweeps import space as s

  def get_sweep():
    return s.Space(
        grid=s.product(s.sweep("train.learning_rate", [2e-3, 5e-3]),
                       s.zipped(s.sweep("data.crop_size", [(96, 96), (160, 160)]),
                                s.sweep("train.batch_size", [32, 16]))),
        replicates=s.seeds(0, 1))

  # or sampled: 12 candidates drawn by Optuna's TPE sampler
  s.Space(ranges={"train.learning_rate": s.Range(1e-4, 1e-2, log=True)},
          trials=12, replicates=s.seeds(0, 1))

A `get_sweep()` returning a plain list of override dicts (the older form)
is a grid without replicates. Keys are dotted config keys; the composer
checks each against the config before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Sequence


def sweep(key: str, values: Sequence[Any]) -> list[dict]:
  """One axis: [{key: v} for v in values]."""
  if not values:
    raise ValueError(f"sweep({key!r}, []): an axis needs at least one value.")
  return [{key: v} for v in values]


def _merge(parts: Sequence[dict]) -> dict:
  out: dict = {}
  for part in parts:
    clash = set(out) & set(part)
    if clash:
      raise ValueError(f"keys {sorted(clash)} are set by two axes of one "
                       "product/zip; each key belongs to one axis.")
    out.update(part)
  return out


def product(*axes: Sequence[dict]) -> list[dict]:
  """Every combination of the axes' members (the last axis varies fastest)."""
  return [_merge(parts) for parts in itertools.product(*axes)]


def zipped(*axes: Sequence[dict]) -> list[dict]:
  """The axes' members side by side; the axes must be equally long."""
  lengths = sorted({len(a) for a in axes})
  if len(lengths) > 1:
    raise ValueError(f"zipped axes have lengths {lengths}; they must be "
                     "equal.")
  return [_merge(parts) for parts in zip(*axes)]


def seeds(*values: int) -> tuple[dict, ...]:
  """Replicates over `config.seed`."""
  return tuple({"seed": int(v)} for v in values)


def folds(k: int) -> tuple[dict, ...]:
  """Replicates over the k validation folds (`data.fold`; ingest with
  data.folds=k)."""
  return tuple({"data.fold": i} for i in range(k))


@dataclasses.dataclass(frozen=True)
class Range:
  """A sampled numeric key: uniform (or log-uniform) in [low, high];
  `integer` draws whole numbers."""
  low: float
  high: float
  log: bool = False
  integer: bool = False

  def __post_init__(self):
    if not self.low < self.high:
      raise ValueError(f"Range({self.low}, {self.high}): low must be below "
                       "high.")
    if self.log and self.low <= 0:
      raise ValueError(f"Range({self.low}, {self.high}, log=True): a log "
                       "range needs low > 0.")


@dataclasses.dataclass(frozen=True)
class Space:
  """What a sweep searches (module docstring).

  Attributes:
    grid: override dicts, one candidate each (product/zipped/sweep);
      default one empty candidate.
    ranges: sampled keys; with ranges, `trials` candidates are drawn (by
      Optuna's TPE sampler, seeded), each a grid member plus drawn values.
    trials: candidates to draw when there are ranges.
    replicates: override dicts every candidate runs (seeds, folds); its
      score is the mean over them.
    rungs: successive halving: fractions of train.steps at which
      candidates are compared (ascending, the last 1.0); () = none.
    seed: the sampler's seed.
  """
  grid: tuple = ({},)
  ranges: dict = dataclasses.field(default_factory=dict)
  trials: int = 0
  replicates: tuple = ({},)
  rungs: tuple = ()
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "grid", tuple(dict(g) for g in self.grid))
    object.__setattr__(self, "replicates",
                       tuple(dict(r) for r in self.replicates))
    if not self.grid:
      raise ValueError("Space(grid=()): at least one candidate.")
    if self.ranges and self.trials < 1:
      raise ValueError(f"Space with ranges {sorted(self.ranges)} needs "
                       "trials >= 1 (candidates to draw).")
    if not self.ranges and self.trials:
      raise ValueError(f"Space(trials={self.trials}) without ranges: a grid "
                       "runs each member once; drop trials.")
    swept = {k for g in self.grid for k in g} | set(self.ranges)
    replicated = {k for r in self.replicates for k in r}
    if swept & replicated:
      raise ValueError(f"keys {sorted(swept & replicated)} are both swept "
                       "and replicates.")
    if self.rungs and (list(self.rungs) != sorted(set(self.rungs)) or
                       self.rungs[-1] != 1.0 or self.rungs[0] <= 0):
      raise ValueError(f"rungs {self.rungs}: ascending fractions of "
                       "train.steps in (0, 1], the last 1.0.")

  @property
  def keys(self) -> list[str]:
    """Every swept key (not the replicates'), sorted."""
    return sorted({k for g in self.grid for k in g} | set(self.ranges))

  @property
  def sampled(self) -> bool:
    return bool(self.ranges)

  def describe(self) -> dict:
    """A JSON-able description (part of the sweep's identity)."""
    return {"grid": [_plain(g) for g in self.grid],
            "ranges": {k: dataclasses.asdict(r)
                       for k, r in sorted(self.ranges.items())},
            "trials": self.trials,
            "replicates": [_plain(r) for r in self.replicates],
            "rungs": list(self.rungs), "seed": self.seed}


def _plain(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in sorted(value.items())}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return repr(value)
  return value


def from_experiment(value: Any) -> Space:
  """`get_sweep()`'s return value as a Space (a list of dicts: a grid)."""
  if isinstance(value, Space):
    return value
  if isinstance(value, (list, tuple)) and all(isinstance(v, dict)
                                              for v in value):
    return Space(grid=tuple(value))
  raise TypeError(f"get_sweep() returned {type(value).__name__}; expected "
                  "a chameleon_jax.sweeps.space.Space or a list of override "
                  "dicts.")
