"""Successive halving that survives small data.

On a few hundred images, early validation scores are noisy: plain
successive halving (keep the top 1/eta at every rung) prunes good
candidates on that noise. Here:

- rungs are steps of the run's own schedule (`Space.rungs`, fractions of
  train.steps; each run keeps the schedule of all its steps and stops at
  the rung, `train.stop_at`, then resumes from that checkpoint), and the
  first rung is at least one full pass over the training defect images;
- a candidate's rung score is the mean over its replicates (seeds, folds),
  all on the same frozen validation split;
- the top ceil(n * keep) candidates go on, and so does every candidate
  whose gap to the last of them is within the replicate spread (the larger
  sample std of the two): a candidate is pruned only when the lead over it
  exceeds that spread;
- the top rung runs every surviving candidate to the end with all its
  replicates; the winner is chosen there (report.py says whether it is
  significantly better than the runner-up).

The rungs run synchronously in one sweep process (`parallel` runs at a
time); each rung's scores are files in the run directories, so a killed
sweep resumes and makes the same decisions.
"""

from __future__ import annotations

import math
from concurrent import futures

import numpy as np
import optuna
from optuna.trial import TrialState

from chameleon_jax.sweeps import runner as runner_lib
from chameleon_jax.sweeps.space import _plain

KEEP = 1 / 3  # Share of candidates a rung promotes by rank (eta = 3).


def rung_steps(fractions, total: int, first_min: int) -> list[int]:
  """Rung step counts: `fractions` of `total`, the first raised to at
  least `first_min` (one pass over the defect images), duplicates merged,
  the last `total`."""
  steps = [min(total, max(1, round(f * total))) for f in fractions]
  steps[0] = min(total, max(steps[0], first_min))
  out = []
  for s in steps:
    if not out or s > out[-1]:
      out.append(s)
  if out[-1] != total:
    out.append(total)
  return out


def _stats(scores) -> tuple[float, float]:
  scores = np.asarray(scores, np.float64)
  return (float(scores.mean()),
          float(scores.std(ddof=1)) if len(scores) > 1 else 0.0)


def promote(scores: dict[str, list[float]], keep: float = KEEP) -> dict[str, dict]:
  """The rung decision (module docstring) per candidate id:
  {mean, std, promoted, reason}."""
  stats = {cid: _stats(s) for cid, s in scores.items()}
  ranked = sorted(stats, key=lambda c: (-stats[c][0], c))
  n_keep = max(1, math.ceil(len(ranked) * keep))
  cut_mean, cut_std = stats[ranked[n_keep - 1]]
  out = {}
  for rank, cid in enumerate(ranked):
    mean, std = stats[cid]
    spread = max(std, cut_std)
    if rank < n_keep:
      promoted, reason = True, f"rank {rank + 1} of {len(ranked)}"
    elif cut_mean - mean <= spread:
      promoted, reason = True, (f"within the replicate spread ({spread:.4f})"
                                f" of rank {n_keep}")
    else:
      promoted, reason = False, (f"{cut_mean - mean:.4f} behind rank {n_keep},"
                                 f" beyond the replicate spread {spread:.4f}")
    out[cid] = {"mean": mean, "std": std, "promoted": promoted,
                "reason": reason}
  return out


def run(job: runner_lib.Job, total_steps: int, first_min: int,
        log=print) -> list[optuna.trial.FrozenTrial]:
  """Runs the grid of `job.space` by successive halving; records every
  candidate in the study (COMPLETE at the top rung, PRUNED below, with its
  rung means as intermediate values) and returns the study's trials."""
  space = job.space
  study, _ = runner_lib.open_study(job, log)
  steps = rung_steps(space.rungs, total_steps, first_min)
  candidates = {runner_lib.candidate_id(m): m for m in space.grid}
  runs = {cid: job.prepare(m) for cid, m in candidates.items()}
  alive = sorted(candidates)
  history: dict[str, list[dict]] = {cid: [] for cid in candidates}
  results: dict[str, list[dict]] = {}
  for k, stop in enumerate(steps):
    last = stop == total_steps
    tasks = [(cid, replicate, run_dir) for cid in alive
             for replicate, run_dir in runs[cid]]
    with futures.ThreadPoolExecutor(max(1, job.parallel)) as pool:
      done = list(pool.map(lambda t: runner_lib.execute(
          t[2], job, 0 if last else stop), tasks))
    results = {cid: [] for cid in alive}
    for (cid, replicate, run_dir), result in zip(tasks, done):
      results[cid].append({"replicate": _plain(replicate), "run": run_dir.name,
                           **result})
    decisions = promote({c: [r["score"] for r in results[c]] for c in alive})
    for cid in alive:
      history[cid].append({"rung": k, "steps": stop, **decisions[cid]})
      history[cid][-1]["promoted"] = decisions[cid]["promoted"] and not last
      _record(study, candidates[cid], results[cid], history[cid],
              pruned=not last and not decisions[cid]["promoted"])
    log(f"sweep: rung {k} ({stop} steps): {len(alive)} candidates, "
        f"{sum(d['promoted'] for d in decisions.values()) if not last else 0}"
        " promoted")
    alive = sorted(c for c in alive if decisions[c]["promoted"])
    if last:
      break
  return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def _record(study: optuna.Study, overrides: dict, results: list[dict],
            history: list[dict], pruned: bool) -> None:
  """Adds the candidate's trial once it is decided (never twice)."""
  if not pruned and history[-1]["promoted"]:
    return  # Still running: recorded at its last rung.
  cid = runner_lib.candidate_id(overrides)
  if any(t.user_attrs.get("candidate_id") == cid
         for t in study.get_trials(deepcopy=False)):
    return
  study.add_trial(optuna.trial.create_trial(
      state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
      value=None if pruned else history[-1]["mean"],
      intermediate_values={h["steps"]: h["mean"] for h in history},
      user_attrs={"candidate": _plain(overrides), "candidate_id": cid,
                  "runs": results, "rungs": history}))


def compute(trials) -> int:
  """Training steps the trials' runs took (all rungs, all replicates)."""
  return sum(r["steps"] for t in trials for r in t.user_attrs["runs"])


def first_pass_steps(defect_images: int, batch_size: int,
                     defect_share: float) -> int:
  """Steps in which the training defect images are each seen once."""
  return math.ceil(defect_images / max(batch_size * defect_share, 1e-9))

