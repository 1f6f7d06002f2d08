"""--mode=sweep: the experiment file's get_sweep(), run on this machine.

Every candidate x replicate is resolved against the config and checked by
the same builders training uses before anything runs (an unknown or
mistyped key, or a value no builder accepts, is an error naming the key and
value). Each run is an ordinary workdir, <workdir>/sweep/runs/<run id>/,
whose config.py is the resolved config (the run id is its hash) and which
resumes from its checkpoints. The sweep's identity (the base config and the
space) is kept in <workdir>/sweep/sweep.json: another sweep's workdir is
refused. The study lives in `sweep.storage` (SQLite in the workdir by
default; a PostgreSQL URL lets workers on several machines share it).
With `Space.rungs`, candidates are compared by successive halving
(sweeps/halving.py). Writes the leaderboard and winner.py (the winner's
config, loadable as it is) into <workdir>/sweep/.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import ml_collections

from chameleon_jax import atomic, configfile
from chameleon_jax.components import build
from chameleon_jax.sweeps import halving, report, runner
from chameleon_jax.sweeps import space as space_lib
from chameleon_jax.sweeps.runner import SweepError

def _set(config: ml_collections.ConfigDict, key: str, value: Any,
         known: list[str]) -> None:
  node = config
  parts = key.split(".")
  try:
    for part in parts[:-1]:
      node = node[part]
    if parts[-1] not in node:
      raise KeyError(parts[-1])
    node[parts[-1]] = tuple(value) if isinstance(value, list) else value
  except (KeyError, AttributeError) as e:
    close = difflib.get_close_matches(key, known, n=1)
    raise SweepError(f"sweep key {key!r} is not a config key"
                     + (f" (did you mean {close[0]!r}?)" if close else "")
                     + ".") from e
  except (TypeError, ValueError) as e:
    raise SweepError(f"sweep key {key!r} = {value!r}: {e}") from e


def _validate(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """The builders' own checks, run on a candidate's resolved config."""
  try:
    build.task(config)
    build.train_settings(config)
    build.eval_settings(config)
    build.eval_input(config)
    build.augment(config)
    build.loss(config)
  except Exception as e:  # Each builder raises its own type; name the values.
    raise SweepError(f"the sweep values {overrides} make an invalid config: "
                     f"{type(e).__name__}: {e}") from e


def _digest(value: Any) -> str:
  text = json.dumps(value, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _first_rung_minimum(config: ml_collections.ConfigDict, workdir: str,
                        space: space_lib.Space) -> int:
  """Steps of one pass over the training defect images (the first rung's
  minimum), checking what successive halving needs of the config.

  Raises:
    SweepError: sampled ranges, a time budget, or a swept train.steps.
  """
  if space.sampled:
    raise SweepError("successive halving (Space.rungs) runs a grid; drop "
                     "the ranges or the rungs.")
  if config.train.time_budget_minutes:
    raise SweepError(
        f"train.time_budget_minutes={config.train.time_budget_minutes}: "
        "rungs are fractions of train.steps, which a budget would change "
        "per run; set it to 0 and train.steps to the budget's steps (a "
        "plan's budget.json).")
  if "train.steps" in space.keys:
    raise SweepError("train.steps is swept: rungs need one schedule length.")
  items = build.open_dataset(config, workdir).items("train")
  defect = sum(1 for i in items if i.get("classes_present"))
  fraction = config.data.defect_image_fraction
  share = fraction if fraction > 0 else defect / max(len(items), 1)
  return halving.first_pass_steps(defect, config.train.batch_size, share)


def sweep(config: ml_collections.ConfigDict, workdir: str, config_file: str,
          main_path: str, log=print) -> dict:
  """Runs the sweep (module docstring); returns the leaderboard.

  Args:
    config: the experiment's config (command-line overrides applied).
    workdir: the sweep's workdir.
    config_file: the experiment file (path[:variant]) defining get_sweep()
      (called with the variant where one is given).
    main_path: main.py, which trains each run.
    log: progress lines.

  Raises:
    SweepError: no get_sweep(), a bad key or value, another sweep's
      workdir, an unreachable storage, or failed runs (after the report of
      the finished ones is written).
  """
  path, _, variant = config_file.partition(":")
  module = configfile.module(path)
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"{path} defines no get_sweep(); a sweep needs one "
                     "(chameleon_jax/sweeps/space.py).")
  space = space_lib.from_experiment(
      module.get_sweep(variant) if variant else module.get_sweep())
  base = copy.deepcopy(config)
  with base.unlocked():
    base.data.root = str(build.data_root(config, workdir).resolve())
  known = sorted(configfile.flatten(base.to_dict()))

  def resolve(overrides: dict) -> ml_collections.ConfigDict:
    resolved = copy.deepcopy(base)
    for key, value in sorted(overrides.items()):
      _set(resolved, key, value, known)
    _validate(resolved, overrides)
    return resolved

  for member in space.grid:  # Everything is checked before anything runs.
    for replicate in space.replicates:
      resolve({**member, **replicate})
    for key, r in space.ranges.items():
      for end in (r.low, r.high):
        resolve({**member, key: int(end) if r.integer else end})
  identity = _digest({"base": configfile.flatten(base.to_dict()),
                      "space": space.describe()})
  out = Path(workdir).resolve() / "sweep"
  out.mkdir(parents=True, exist_ok=True)
  record = out / "sweep.json"
  if record.exists() and json.loads(record.read_text())["identity"] != identity:
    raise SweepError(
        f"{out} holds another sweep (identity "
        f"{json.loads(record.read_text())['identity']}, this one {identity}:"
        " the experiment or its get_sweep() changed). Use another --workdir;"
        " nothing of the existing sweep was touched.")
  atomic.write_json(record, {"identity": identity, "experiment": path,
                             "space": space.describe()})
  template = configfile.template_values()

  def write_config(resolved, target: Path, docstring: str) -> None:
    text = configfile.render(docstring, [(
        "The sweep's resolved values:",
        configfile.differences(configfile.flatten(resolved.to_dict()),
                               template))])
    if not target.exists() or target.read_text() != text:
      atomic.write_text(target, text)

  def prepare(overrides: dict) -> list[tuple[dict, Path]]:
    runs = []
    for replicate in space.replicates:
      resolved = resolve({**overrides, **replicate})
      run_dir = out / "runs" / _digest(configfile.flatten(resolved.to_dict()))
      run_dir.mkdir(parents=True, exist_ok=True)
      write_config(resolved, run_dir / "config.py",
                   f"A run of the sweep {identity} ({path}).\n\nSwept: "
                   f"{overrides}; replicate: {replicate}.")
      runs.append((replicate, run_dir))
    return runs

  metric = config.sweep.metric or config.train.best_metric
  if not metric:
    raise SweepError("sweep.metric and train.best_metric are both empty: "
                     "name the validation metric the sweep maximises.")
  job = runner.Job(
      workdir=out, storage=config.sweep.storage or f"sqlite:///{out / 'study.db'}",
      study_name=f"{config.data.name}-{identity}", identity=identity,
      space=space, parallel=int(config.sweep.parallel),
      heartbeat_s=int(config.sweep.heartbeat_seconds), metric=metric,
      prepare=prepare,
      command=lambda run_dir, stop_at: [
          sys.executable, main_path, f"--config={run_dir / 'config.py'}",
          f"--workdir={run_dir}", "--mode=train",
          f"--config.train.stop_at={stop_at}"])
  error, failed, grid_steps = None, 0, 0
  if space.rungs:
    first = _first_rung_minimum(config, workdir, space)
    grid_steps = len(space.grid) * len(space.replicates) * config.train.steps
    try:
      trials = halving.run(job, int(config.train.steps), first, log)
    except SweepError as e:
      error = e
      trials = runner.open_study(job, log)[0].get_trials(
          states=(runner.TrialState.COMPLETE, runner.TrialState.PRUNED))
  else:
    sweep_runner = runner.Runner(job, log)
    try:
      trials = sweep_runner.run()
    except SweepError as e:
      error = e
      trials = sweep_runner.study.get_trials(
          states=(runner.TrialState.COMPLETE,))
    failed = len(sweep_runner.errors)
  board = report.write(trials, out, metric=metric, identity=identity,
                       keys=space.keys, winner_config=str(out / "winner.py"),
                       failed=failed, grid_steps=grid_steps)
  if board["winner"]:
    winner = next(c for c in board["candidates"] if c["id"] == board["winner"])
    write_config(resolve(winner["overrides"]), out / "winner.py",
                 f"The winner of the sweep {identity} ({path}).\n\n"
                 f"Swept values: {winner['overrides']}; val {metric} "
                 f"{winner['mean']:.4f} ± {winner['std']:.4f} over "
                 f"{len(winner['scores'])} replicates (leaderboard.md).")
  if error:
    raise error
  return board
