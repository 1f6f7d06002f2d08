"""Runs a sweep's candidates as processes, resumably, on an Optuna study.

Optuna holds the study (SQLite in the workdir, or PostgreSQL for workers
on several machines) and samples ranges (TPE); this module owns what is the
product's: which candidate a trial is, its runs (one ordinary workdir per
replicate, named by the hash of its resolved config), resuming, and the
score. A grid's candidates are queued once, when the study is created; a
worker pops a queued trial atomically (Optuna's `ask`), so two workers, in
one process or on two machines, never take the same candidate. Every
running trial records a heartbeat; a trial whose worker died (SIGKILL, a
lost node) goes stale after 3 heartbeats, is failed and queued again
(`RetryFailedTrialCallback`), and its runs resume from their checkpoints.
A run whose score.json exists is never run again.

Training runs are child processes (`command(run_dir, stop_at)`, normally
`main.py --mode=train`) that die with the sweep (guard.py sets
PR_SET_PDEATHSIG), so a killed sweep leaves no orphan writing into a run
directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import TrialState

from chameleon_jax import atomic
from chameleon_jax.sweeps.space import Space, _plain

STALE_HEARTBEATS = 3  # A trial silent this many heartbeats is dead.
SCHEMA_ATTEMPTS = 5


class SweepError(RuntimeError):
  """A sweep that cannot run: storage, identity, a failing run (named)."""


@dataclasses.dataclass(frozen=True)
class Job:
  """What the composer hands the runner.

  `prepare(overrides)` writes the candidate's run configs and returns
  [(replicate overrides, run directory)]; `command(run_dir, stop_at)` is
  the training process's argv (stop_at 0: train to the end; else stop
  after that step, a rung of successive halving); `metric` the validation
  metric maximised.
  """
  workdir: Path
  storage: str
  study_name: str
  identity: str
  space: Space
  parallel: int
  heartbeat_s: int
  metric: str
  prepare: Callable[[dict], list[tuple[dict, Path]]]
  command: Callable[[Path, int], list[str]]


def candidate_id(overrides: dict) -> str:
  """The candidate's identity: a hash of its swept values."""
  text = json.dumps(_plain(overrides), sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _redacted(url: str) -> str:
  if "@" in url and "://" in url:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
  return url


def open_study(job: Job, log=print) -> tuple[optuna.Study, RDBStorage]:
  """The job's study and its storage: created (grid queued, identity
  stored) or loaded.

  Raises:
    SweepError: the storage cannot be reached, or the study belongs to
      another sweep (different identity).
  """
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  # Heartbeats are recorded by this runner (ask/tell), not Study.optimize.
  warnings.filterwarnings("ignore", message="Heartbeat of storage")
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  engine = {"pool_pre_ping": True}
  if job.storage.startswith("sqlite"):  # Writers wait for each other.
    engine["connect_args"] = {"timeout": 120}
  for attempt in range(SCHEMA_ATTEMPTS):
    try:
      storage = RDBStorage(
          job.storage, heartbeat_interval=job.heartbeat_s,
          grace_period=STALE_HEARTBEATS * job.heartbeat_s,
          failed_trial_callback=RetryFailedTrialCallback(max_retry=None),
          engine_kwargs=engine)
      break
    except Exception as e:  # SQLAlchemy raises many types.
      # Two workers creating the schema at once: one loses the race.
      if "already exists" in str(e) or "UNIQUE constraint" in str(e) or \
          "duplicate key" in str(e):
        if attempt + 1 < SCHEMA_ATTEMPTS:
          time.sleep(0.5 * (attempt + 1))
          continue
      raise SweepError(f"sweep.storage {_redacted(job.storage)}: cannot "
                       f"open the study database ({type(e).__name__}: "
                       f"{str(e).splitlines()[0]}).") from e
  sampler = optuna.samplers.TPESampler(seed=job.space.seed)
  try:
    study = optuna.create_study(storage=storage, study_name=job.study_name,
                                direction="maximize", sampler=sampler)
    study.set_user_attr("identity", job.identity)
    if not job.space.sampled and not job.space.rungs:  # Halving adds its own.
      for member in range(len(job.space.grid)):
        study.enqueue_trial({"member": member}, user_attrs={"member": member})
    study.set_user_attr("ready", True)
    log(f"sweep: study {job.study_name} created in {_redacted(job.storage)}")
    return study, storage
  except optuna.exceptions.DuplicatedStudyError:
    study = optuna.load_study(study_name=job.study_name, storage=storage,
                              sampler=sampler)
  for _ in range(600):  # The creator queues the grid, then marks it ready.
    attrs = study.user_attrs
    if attrs.get("identity") not in (None, job.identity):
      raise SweepError(
          f"study {job.study_name} in {_redacted(job.storage)} belongs to "
          f"another sweep (identity {attrs['identity']}, this one "
          f"{job.identity}); use another --workdir or sweep.storage.")
    if attrs.get("ready"):
      return study, storage
    time.sleep(0.1)
  raise SweepError(f"study {job.study_name}: its creator never finished "
                   "queueing the grid.")


def _guarded(command: list[str]) -> list[str]:
  """`command`, started so that it dies with this process (guard.py)."""
  return [sys.executable, "-m", "chameleon_jax.sweeps.guard",
          str(os.getpid()), *command]


def read_score(run_dir: Path, metric: str, stop_at: int = 0) -> dict:
  """The best validation `metric` in run_dir/metrics.jsonl (up to step
  `stop_at` where > 0) and its step.

  Raises:
    SweepError: no validation was logged, or none has `metric` (the keys
      it has are named).
  """
  rows = [json.loads(line) for line in
          (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
  vals = [r for r in rows if r.get("split") == "val"
          and (not stop_at or r["step"] <= stop_at)]
  if not vals:
    raise SweepError(f"{run_dir / 'metrics.jsonl'}: no validation logged.")
  if not any(metric in r for r in vals):
    raise SweepError(f"{run_dir / 'metrics.jsonl'}: no validation metric "
                     f"{metric!r} (sweep.metric); it has "
                     f"{sorted(k for k in vals[-1] if k not in ('step', 'split'))}.")
  best = max((r for r in vals if metric in r),
             key=lambda r: (r[metric], -r["step"]))
  steps = max(r["step"] for r in vals)
  return {"score": best[metric], "step": best["step"], "steps": steps}


def execute(run_dir: Path, job: Job, stop_at: int = 0) -> dict:
  """One run, trained (or resumed) to the end or to step `stop_at`, unless
  its score file (score.json; score@<stop_at>.json) exists.

  Raises:
    SweepError: the training process failed (its log named).
  """
  done = run_dir / (f"score@{stop_at}.json" if stop_at else "score.json")
  if done.exists():
    return json.loads(done.read_text())
  start = time.perf_counter()
  with open(run_dir / "train.log", "ab") as out:
    code = subprocess.call(_guarded(job.command(run_dir, stop_at)),
                           stdout=out, stderr=out)
  if code:
    raise SweepError(f"run {run_dir} failed (exit {code}); see "
                     f"{run_dir / 'train.log'}.")
  result = {**read_score(run_dir, job.metric, stop_at),
            "seconds": round(time.perf_counter() - start, 1)}
  atomic.write_json(done, result)
  return result


class Runner:
  """Workers over one study (module docstring)."""

  def __init__(self, job: Job, log=print):
    self.job, self.log = job, log
    self.study, self.storage = open_study(job, log)
    self.study_id = self.storage.get_study_id_from_name(job.study_name)
    self._requeue_failed()
    self.lock = threading.Lock()
    self.started = time.perf_counter()
    self.durations: list[float] = []
    self.errors: list[str] = []

  def _requeue_failed(self) -> None:
    """Queues again the grid members whose every trial failed (a run that
    crashed in an earlier attempt): a rerun retries them."""
    if self.job.space.sampled:
      return
    states: dict[int, set] = {}
    for t in self.study.get_trials(deepcopy=False):
      member = t.user_attrs.get("member")
      if member is not None and not t.user_attrs.get("spare"):
        states.setdefault(member, set()).add(t.state)
    for member, seen in sorted(states.items()):
      if seen == {TrialState.FAIL}:
        self.study.enqueue_trial({"member": member},
                                 user_attrs={"member": member})

  def _counts(self) -> dict[str, int]:
    counts = {s: 0 for s in ("done", "running", "waiting", "failed")}
    for t in self.study.get_trials(deepcopy=False):
      if t.user_attrs.get("spare"):
        continue
      key = {TrialState.COMPLETE: "done", TrialState.RUNNING: "running",
             TrialState.WAITING: "waiting"}.get(t.state, "failed")
      counts[key] += 1
    return counts

  def _next(self) -> optuna.Trial | None:
    """A trial to run, or None when there is none to start now."""
    counts = self._counts()
    if self.job.space.sampled:
      if not counts["waiting"] and (counts["done"] + counts["running"]
                                    >= self.job.space.trials):
        return None
    elif not counts["waiting"]:
      return None
    trial = self.study.ask()
    if not self.job.space.sampled and "member" not in trial.user_attrs:
      # Another worker popped the last queued trial first: ask() made a new
      # one, which no grid member belongs to.
      trial.set_user_attr("spare", True)
      self.study.tell(trial, state=TrialState.FAIL)
      return None
    return trial

  def _overrides(self, trial: optuna.Trial) -> dict:
    space = self.job.space
    member = (trial.suggest_categorical("member", list(range(len(space.grid))))
              if len(space.grid) > 1 or not space.sampled else 0)
    overrides = dict(space.grid[member])
    for key, r in sorted(space.ranges.items()):
      overrides[key] = (trial.suggest_int(key, int(r.low), int(r.high), log=r.log)
                        if r.integer else
                        trial.suggest_float(key, r.low, r.high, log=r.log))
    return overrides

  def _heartbeat(self, trial_id: int, stop: threading.Event) -> None:
    while not stop.wait(self.job.heartbeat_s):
      self.storage.record_heartbeat(trial_id)

  def _run_trial(self, trial: optuna.Trial) -> None:
    trial_id = self.storage.get_trial_id_from_study_id_trial_number(
        self.study_id, trial.number)
    self.storage.record_heartbeat(trial_id)
    stop = threading.Event()
    beat = threading.Thread(target=self._heartbeat, args=(trial_id, stop),
                            daemon=True)
    beat.start()
    start = time.perf_counter()
    try:
      overrides = self._overrides(trial)
      trial.set_user_attr("candidate", _plain(overrides))
      trial.set_user_attr("candidate_id", candidate_id(overrides))
      runs = []
      for replicate, run_dir in self.job.prepare(overrides):
        runs.append({"replicate": _plain(replicate), "run": run_dir.name,
                     **execute(run_dir, self.job)})
      trial.set_user_attr("runs", runs)
      score = sum(r["score"] for r in runs) / len(runs)
      self.study.tell(trial, score)
    except SweepError as e:
      trial.set_user_attr("error", str(e))
      self.study.tell(trial, state=TrialState.FAIL)
      with self.lock:
        self.errors.append(str(e))
    finally:
      stop.set()
    with self.lock:
      self.durations.append(time.perf_counter() - start)
    self._progress()

  def _progress(self) -> None:
    counts = self._counts()
    best = ""
    try:
      b = self.study.best_trial
      best = (f"; best {b.value:.4f} ({b.user_attrs.get('candidate')})")
    except ValueError:
      pass
    total = (self.job.space.trials if self.job.space.sampled
             else len(self.job.space.grid))
    left = max(total - counts["done"], 0)
    eta = ""
    if self.durations and left:
      mean = sum(self.durations) / len(self.durations)
      eta = f"; ETA {mean * left / self.job.parallel / 60:.1f} min"
    self.log(f"sweep: {counts['done']}/{total} done, {counts['running']} "
             f"running, {counts['failed']} failed{best}{eta}")

  def _worker(self) -> None:
    while True:
      optuna.storages.fail_stale_trials(self.study)
      with self.lock:
        trial = self._next()
      if trial is not None:
        self._run_trial(trial)
        continue
      if not self._counts()["running"]:
        return
      time.sleep(self.job.heartbeat_s)  # Others' trials: wait, or go stale.

  def run(self) -> list[optuna.trial.FrozenTrial]:
    """Runs until every candidate has a score; returns the complete trials.

    Raises:
      SweepError: some runs failed (each named); the others are kept.
    """
    self._progress()
    workers = [threading.Thread(target=self._worker)
               for _ in range(max(1, self.job.parallel))]
    for w in workers:
      w.start()
    for w in workers:
      w.join()
    if self.errors:
      raise SweepError("; ".join(self.errors))
    return [t for t in self.study.get_trials(states=(TrialState.COMPLETE,))]
