"""The sweep's leaderboard: every candidate's score with its uncertainty,
the winner and whether it is significantly better than the runner-up, and
what each swept key did.

  <workdir>/sweep/leaderboard.json  candidates ranked, winner, marginals
  <workdir>/sweep/leaderboard.md    the same for people
  <workdir>/sweep/leaderboard.png   score against compute per candidate,
                                    and one marginal panel per swept key

A candidate's score is the mean over its replicates (seeds, folds) of the
best validation metric of each run; its 95 % interval is a percentile
bootstrap of that mean. The winner is significantly better than the
runner-up when the bootstrap interval of their mean paired difference (the
same replicates) lies above 0; with two or three replicates such an
interval is wide, and the report says so rather than crowning a winner on
noise. Everything is a function of the scores: the same scores give the
same files (the bootstrap is seeded), whatever order the trials ran in.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

from chameleon_jax import atomic

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after the backend)

RESAMPLES = 2000
LEVEL = 0.95


def bootstrap_interval(values, seed: int = 0) -> list[float]:
  """Percentile bootstrap interval (LEVEL) of the mean of `values`."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return [float(values.mean()), float(values.mean())]
  rng = np.random.default_rng(seed)
  means = rng.choice(values, (RESAMPLES, len(values))).mean(axis=1)
  tail = (1 - LEVEL) / 2 * 100
  return [float(np.percentile(means, tail)),
          float(np.percentile(means, 100 - tail))]


def candidates(trials) -> list[dict]:
  """One entry per candidate (its first decided trial): those that ran to
  the end ranked by mean score (ties: candidate id), then those pruned by
  successive halving (latest rung first, then mean)."""
  seen: dict[str, dict] = {}
  for t in sorted(trials, key=lambda t: t.number):
    cid = t.user_attrs.get("candidate_id")
    if cid is None or cid in seen or "runs" not in t.user_attrs:
      continue
    runs = sorted(t.user_attrs["runs"], key=lambda r: json.dumps(
        r["replicate"], sort_keys=True))
    scores = [r["score"] for r in runs]
    seen[cid] = {
        "id": cid, "overrides": t.user_attrs["candidate"],
        "pruned": t.state.name == "PRUNED",
        "rungs": [{k: h[k] for k in ("steps", "mean", "std", "promoted",
                                     "reason")}
                  for h in t.user_attrs.get("rungs", [])],
        "replicates": [r["replicate"] for r in runs],
        "runs": [r["run"] for r in runs], "scores": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
        "interval": bootstrap_interval(scores),
        "steps": int(sum(r["steps"] for r in runs)),
        "seconds": float(sum(r.get("seconds", 0.0) for r in runs))}
  return sorted(seen.values(), key=lambda c: (
      c["pruned"], -(c["rungs"][-1]["steps"] if c["rungs"] else 0),
      -c["mean"], c["id"]))


def comparison(ranked: list[dict]) -> dict:
  """Winner against runner-up (candidates that ran to the end): the paired
  difference and its interval."""
  ranked = [c for c in ranked if not c["pruned"]]
  if len(ranked) < 2:
    return {"significant": None, "difference": None, "interval": None,
            "text": "One candidate ran to the end: nothing to compare."}
  winner, runner_up = ranked[0], ranked[1]
  pairs = {json.dumps(r, sort_keys=True): s for r, s in
           zip(runner_up["replicates"], runner_up["scores"])}
  diffs = [s - pairs[json.dumps(r, sort_keys=True)] for r, s in
           zip(winner["replicates"], winner["scores"])
           if json.dumps(r, sort_keys=True) in pairs]
  if not diffs:
    return {"significant": None, "difference": None, "interval": None,
            "text": "No shared replicates: no paired comparison."}
  interval = bootstrap_interval(diffs, seed=1)
  significant = interval[0] > 0
  coarse = (f"; with {len(diffs)} replicates the interval is little more "
            "than their range" if len(diffs) < 5 else "")
  text = (f"The winner leads the runner-up by {np.mean(diffs):.4f} "
          f"({LEVEL:.0%} interval {interval[0]:.4f} to {interval[1]:.4f}, "
          f"{len(diffs)} paired replicates{coarse}): " +
          ("significantly better." if significant else
           "NOT significantly better; more replicates (seeds) would tell."))
  return {"significant": bool(significant), "difference": float(np.mean(diffs)),
          "interval": interval, "text": text}


def marginals(ranked: list[dict], keys: list[str]) -> dict:
  """Per swept key: each value's candidates' mean score, best first."""
  out = {}
  for key in keys:
    groups: dict[str, list[float]] = {}
    for c in (c for c in ranked if not c["pruned"]):
      groups.setdefault(json.dumps(c["overrides"].get(key)), []).append(c["mean"])
    out[key] = sorted(({"value": json.loads(v), "mean": float(np.mean(m)),
                        "candidates": len(m)} for v, m in groups.items()),
                      key=lambda e: -e["mean"])
  return out


def _plot(ranked: list[dict], margins: dict, metric: str, path: Path) -> None:
  panels = 1 + len(margins)
  fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.6),
                           squeeze=False)
  ax = axes[0][0]
  for i, c in enumerate(ranked):
    color = "0.6" if c["pruned"] else ("C3" if i == 0 else "C0")
    if c["rungs"]:  # Successive halving: the candidate's path over rungs.
      per_run = len(c["scores"])
      xs = [h["steps"] * per_run for h in c["rungs"]]
      ax.plot(xs, [h["mean"] for h in c["rungs"]], "-", color=color, lw=1)
      for x in xs:
        ax.axvline(x, color="0.9", lw=0.5, zorder=0)
    ax.errorbar(c["steps"], c["mean"], yerr=c["std"], fmt="o",
                color=color, capsize=3)
    ax.annotate(c["id"][:6], (c["steps"], c["mean"]), fontsize=7,
                xytext=(3, 3), textcoords="offset points")
  ax.set_xlabel("training steps (all replicates; grey: pruned)")
  ax.set_ylabel(f"val {metric} (mean ± std)")
  ax.set_title("candidates (winner red)")
  for ax, (key, entries) in zip(axes[0][1:], margins.items()):
    values = [json.dumps(e["value"]) for e in entries]
    order = sorted(range(len(values)), key=lambda i: values[i])
    ax.bar([values[i] for i in order], [entries[i]["mean"] for i in order])
    ax.set_title(key, fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def write(trials, out: Path, *, metric: str, identity: str, keys: list[str],
          winner_config: str, failed: int = 0, grid_steps: int = 0) -> dict:
  """Writes leaderboard.{json,md,png} into `out`; returns the JSON dict.
  `grid_steps`: what running every candidate to the end would have cost
  (successive halving reports its share)."""
  ranked = candidates(trials)
  verdict = comparison(ranked)
  margins = marginals(ranked, keys)
  board = {"metric": metric, "direction": "maximize", "identity": identity,
           "candidates": ranked, "comparison": verdict, "marginals": margins,
           "winner": (ranked[0]["id"] if ranked and not ranked[0]["pruned"]
                      else None),
           "compute_steps": int(sum(c["steps"] for c in ranked)),
           "grid_steps": grid_steps,
           "winner_config": winner_config, "failed_trials": failed}
  atomic.write_json(out / "leaderboard.json", board)
  halved = any(c["rungs"] for c in ranked)
  lines = [f"# Sweep leaderboard ({metric} on val, higher is better)", "",
           f"Sweep identity `{identity}`. Winner: `{board['winner']}`, its "
           f"config `{winner_config}`. {verdict['text']}", "",
           f"Compute: {board['compute_steps']} training steps"
           + (f" ({board['compute_steps'] / grid_steps:.0%} of the "
              f"{grid_steps} of the full grid)." if grid_steps else "."), "",
           "| rank | candidate | swept values | scores | mean ± std | "
           f"{LEVEL:.0%} interval | steps |" + (" rungs |" if halved else ""),
           "| --- | --- | --- | --- | --- | --- | --- |" +
           (" --- |" if halved else "")]
  for i, c in enumerate(ranked, 1):
    rungs = "; ".join(f"{h['steps']}: {h['mean']:.4f}" + (
        "" if h["promoted"] or h is c["rungs"][-1] and not c["pruned"]
        else f" pruned ({h['reason']})") for h in c["rungs"])
    lines.append(
        f"| {i} | `{c['id']}` | `{json.dumps(c['overrides'], sort_keys=True)}`"
        f" | {', '.join(f'{s:.4f}' for s in c['scores'])} | {c['mean']:.4f} ± "
        f"{c['std']:.4f} | {c['interval'][0]:.4f}–{c['interval'][1]:.4f} | "
        f"{c['steps']} |" + (f" {rungs} |" if halved else ""))
  lines += ["", "## What each swept key did", ""]
  for key, entries in margins.items():
    lines.append(f"- `{key}`: " + "; ".join(
        f"{json.dumps(e['value'])} -> {e['mean']:.4f} ({e['candidates']})"
        for e in entries))
  if failed:
    lines += ["", f"{failed} trial(s) failed; their errors are in the study "
              "(user attribute `error`)."]
  atomic.write_text(out / "leaderboard.md", "\n".join(lines) + "\n")
  if ranked:
    _plot(ranked, margins, metric, out / "leaderboard.png")
  return board
