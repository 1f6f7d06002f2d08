"""The regression gate: a candidate against the champion, paired over images.

  verdict = gate.compare(candidate, champion, thresholds, buckets)

Both models' per-image results on the same frozen test split (`Evidence`:
eval/<split>_per_image.json rows, each model scored with its own calibrated
decision rule) are compared on

  primary        defect-image Dice (mean image Dice over defect images);
  class <name>   the same over the defect images whose dominant true class
                 is <name>, per defect class;
  size <bucket>  the share of ground-truth defect components found (a
                 predicted defect pixel on it), per size bucket: tiny (area
                 <= the dataset's 25th percentile component), small, large
                 (> the 75th; fingerprint masks.component_area).

A paired bootstrap over images (the same `resamples` draws of the test
images for both models, fixed seed) gives each delta = candidate - champion
a percentile interval at 1 - alpha and a one-sided p-value for a drop
beyond `epsilon`: p = (1 + #{delta* >= -epsilon}) / (1 + resamples). The
class and bucket p-values are corrected together by Holm's step-down.

Blessed if and only if every check passes (the verdict lists each failure):
the lower bound of delta(primary) >= -epsilon; no class and no size bucket
with a significant drop; the candidate's false-alarm rate on the split
<= max_false_alarm; every compared number finite. The gate fails closed:
missing evidence, another dataset or class list is a `GateError` before any
number is computed. When the primary interval is wider than epsilon, the
verdict warns that the split cannot detect a regression of epsilon.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

import numpy as np

# Anything a gate compares: its thresholds, all required (fail closed).
THRESHOLD_FIELDS = ("epsilon", "alpha", "resamples", "seed",
                    "max_false_alarm")
MIN_RESAMPLES = 2000
FEW = 10  # Images or components below which a comparison's interval is coarse.
BUCKETS = ("tiny", "small", "large")


class GateError(ValueError):
  """Evidence or thresholds the gate cannot compare (names what and why)."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """What blesses a candidate (module docstring).

  Attributes:
    epsilon: the regression tolerated, in Dice / found-share units (0.02).
    alpha: the error rate of every interval and test (0.05).
    resamples: paired bootstrap resamples, >= MIN_RESAMPLES (2000).
    seed: the bootstrap's seed (0): the same evidence, the same verdict.
    max_false_alarm: the candidate's false-alarm rate on the split (0.2).
  """
  epsilon: float
  alpha: float
  resamples: int
  seed: int
  max_false_alarm: float

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "Thresholds":
    """Checked thresholds.

    Raises:
      GateError: an empty set, an unknown or missing field, or a value out
        of its range (named with the range).
    """
    if not values:
      raise GateError("gate thresholds are empty: expected "
                      f"{list(THRESHOLD_FIELDS)}.")
    unknown = sorted(set(values) - set(THRESHOLD_FIELDS))
    missing = [f for f in THRESHOLD_FIELDS if f not in values]
    if unknown or missing:
      raise GateError(f"gate thresholds: unknown {unknown}, missing "
                      f"{missing}; expected exactly {list(THRESHOLD_FIELDS)}.")
    ranges = {"epsilon": (0.0, 1.0), "alpha": (1e-6, 0.5),
              "resamples": (MIN_RESAMPLES, 10**6), "seed": (0, 2**32 - 1),
              "max_false_alarm": (0.0, 1.0)}
    for name, (low, high) in ranges.items():
      value = values[name]
      if isinstance(value, bool) or not isinstance(value, (int, float)) or \
          not math.isfinite(value) or not low <= value <= high:
        raise GateError(f"gate.{name} = {value!r}: expected a number in "
                        f"[{low:g}, {high:g}].")
    return cls(epsilon=float(values["epsilon"]), alpha=float(values["alpha"]),
               resamples=int(values["resamples"]), seed=int(values["seed"]),
               max_false_alarm=float(values["max_false_alarm"]))


@dataclasses.dataclass(frozen=True)
class Evidence:
  """One model's results on a split.

  Attributes:
    name: how the verdict names it (a workdir, "version 3").
    dataset_hash: the dataset version it was evaluated on.
    class_names: background first.
    rows: eval/<split>_per_image.json (id, dice, defect, false_alarm,
      true_class, components [[class, native area, found], ...]).
    identity: what identifies the model (params digest, checkpoint step).
  """
  name: str
  dataset_hash: str
  class_names: tuple[str, ...]
  rows: tuple[dict, ...]
  identity: dict


def _check_rows(evidence: Evidence) -> None:
  needed = ("id", "dice", "defect", "false_alarm", "true_class", "components")
  if not evidence.rows:
    raise GateError(f"{evidence.name}: no per-image results.")
  for row in evidence.rows:
    missing = [k for k in needed if k not in row]
    if missing:
      raise GateError(
          f"{evidence.name}: per-image result {row.get('id')!r} lacks "
          f"{missing}; evaluate it again with eval.decision='calibrated' "
          "(--mode=eval writes them).")


def _paired(candidate: Evidence, champion: Evidence
            ) -> tuple[list[dict], list[dict]]:
  """Both row lists in one image order; refuses unlike evidence."""
  if candidate.dataset_hash != champion.dataset_hash:
    raise GateError(
        f"dataset hashes differ: candidate {candidate.name} "
        f"{candidate.dataset_hash}, champion {champion.name} "
        f"{champion.dataset_hash}; a gate compares models on the same "
        "frozen test split.")
  if candidate.class_names != champion.class_names:
    raise GateError(f"class lists differ: candidate "
                    f"{list(candidate.class_names)}, champion "
                    f"{list(champion.class_names)}.")
  for evidence in (candidate, champion):
    _check_rows(evidence)
  ours = {r["id"]: r for r in candidate.rows}
  theirs = {r["id"]: r for r in champion.rows}
  if set(ours) != set(theirs) or len(ours) != len(candidate.rows):
    raise GateError(
        f"the per-image results cover different images ({len(ours)} of "
        f"the candidate, {len(theirs)} of the champion, "
        f"{len(set(ours) ^ set(theirs))} in one only).")
  ids = sorted(ours)
  return [ours[i] for i in ids], [theirs[i] for i in ids]


def bucket_of(area: float, bounds: tuple[float, float]) -> str:
  """"tiny" (<= bounds[0]), "small" or "large" (> bounds[1])."""
  return ("tiny" if area <= bounds[0] else
          "large" if area > bounds[1] else "small")


def _per_image(rows: list[dict], class_names, bounds):
  """Per image, per comparison: (value, weight); a comparison's statistic
  is sum(value * w) / sum(w) over the resampled images."""
  n = len(rows)
  columns = {}
  defect = np.array([r["defect"] for r in rows], np.float64)
  dice = np.array([r["dice"] for r in rows], np.float64)
  columns["primary"] = (dice * defect, defect)
  true = np.array([r["true_class"] for r in rows])
  for k, name in enumerate(class_names[1:], start=1):
    weight = defect * (true == k)
    columns[f"class {name}"] = (dice * weight, weight)
  for bucket in BUCKETS:
    found, count = np.zeros(n), np.zeros(n)
    for i, r in enumerate(rows):
      for _, area, hit in r["components"]:
        if bucket_of(area, bounds) == bucket:
          count[i] += 1
          found[i] += bool(hit)
    columns[f"size {bucket}"] = (found, count)
  return columns


def resample_counts(n: int, resamples: int, seed: int, block: int = 256
                    ) -> Iterator[np.ndarray]:
  """Blocks of (<= block, n) counts: how often each image is drawn in a
  resample of n draws with replacement; the same draws for both models,
  memory bounded by `block` resamples at a time."""
  rng = np.random.default_rng(seed)
  for start in range(0, resamples, block):
    size = min(block, resamples - start)
    yield rng.multinomial(n, np.full(n, 1.0 / n), size=size)


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjusted p-values (monotone, clipped at 1)."""
  p = np.asarray(p_values, np.float64)
  order = np.argsort(p, kind="stable")
  m = len(p)
  adjusted = np.empty(m)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return adjusted


def compare(candidate: Evidence, champion: Evidence, thresholds: Thresholds,
            bounds: tuple[float, float]) -> dict:
  """The verdict (module docstring) as a JSON-able dict: blessed, reasons,
  warnings, and per comparison n, both values, delta, interval, p-values.

  Raises:
    GateError: evidence that cannot be compared (`_paired`).
  """
  ours, theirs = _paired(candidate, champion)
  t = thresholds
  cand = _per_image(ours, candidate.class_names, bounds)
  champ = _per_image(theirs, champion.class_names, bounds)
  keys = list(cand)
  # Per comparison four columns (candidate value, weight, champion value,
  # weight); every resample's sums in one product per block.
  columns = np.stack([col for k in keys for col in (*cand[k], *champ[k])], 1)
  sums = np.concatenate([counts @ columns for counts in
                         resample_counts(len(ours), t.resamples, t.seed)])
  comparisons = []
  for j, key in enumerate(keys):
    (cv, cw), (hv, hw) = cand[key], champ[key]
    # Weights are the same for both but where a scale merged or split a
    # component (size buckets): each model's own share.
    n, n_champion = int(cw.sum()), int(hw.sum())
    entry = {"name": key, "n": n, "n_champion": n_champion}
    if not n or not n_champion:
      entry.update(candidate=None, champion=None, delta=None, low=None,
                   high=None, p=None)
      comparisons.append(entry)
      continue
    s_cv, s_cw, s_hv, s_hw = sums[:, 4 * j:4 * j + 4].T
    with np.errstate(invalid="ignore", divide="ignore"):
      delta_star = s_cv / s_cw - s_hv / s_hw
    delta_star = delta_star[np.isfinite(delta_star)]
    low, high = np.percentile(delta_star, [50 * t.alpha, 100 - 50 * t.alpha])
    p = (1 + np.sum(delta_star >= -t.epsilon)) / (1 + len(delta_star))
    ours_value, theirs_value = cv.sum() / n, hv.sum() / n_champion
    entry.update(candidate=float(ours_value), champion=float(theirs_value),
                 delta=float(ours_value - theirs_value), low=float(low),
                 high=float(high), p=float(p),
                 resamples_used=int(len(delta_star)))
    comparisons.append(entry)
  return _decide(comparisons, candidate, champion, ours, t)


def intervals(evidence: Evidence, bounds: tuple[float, float],
              resamples: int = MIN_RESAMPLES, seed: int = 0,
              alpha: float = 0.05) -> list[dict]:
  """One model's figures with percentile bootstrap intervals (resampling
  its images; what a model card reports): the primary metric, every class
  and every size bucket, as the gate compares them.

  Returns:
    [{"name", "n", "value", "low", "high"}] in the gate's order; value,
    low and high are None where there is no image or component.

  Raises:
    GateError: incomplete per-image results.
  """
  _check_rows(evidence)
  rows = list(evidence.rows)
  columns = _per_image(rows, evidence.class_names, bounds)
  keys = list(columns)
  stacked = np.stack([c for k in keys for c in columns[k]], 1)
  sums = np.concatenate([counts @ stacked for counts in
                         resample_counts(len(rows), resamples, seed)])
  out = []
  for j, key in enumerate(keys):
    value, weight = columns[key]
    n = int(weight.sum())
    entry = {"name": key, "n": n, "value": None, "low": None, "high": None}
    if n:
      with np.errstate(invalid="ignore", divide="ignore"):
        star = sums[:, 2 * j] / sums[:, 2 * j + 1]
      star = star[np.isfinite(star)]
      low, high = np.percentile(star, [50 * alpha, 100 - 50 * alpha])
      entry.update(value=float(value.sum() / n), low=float(low),
                   high=float(high))
    out.append(entry)
  return out


def _finite(value: float) -> float | None:
  """JSON has no NaN: an unmeasurable figure is null."""
  return value if math.isfinite(value) else None


def _false_alarms(rows, t: Thresholds, reasons: list[str]) -> float:
  """The false-alarm rate of `rows`; appends why it fails the budget."""
  clean = [r for r in rows if not r["defect"]]
  rate = (sum(bool(r["false_alarm"]) for r in clean) / len(clean)
          if clean else float("nan"))
  if not math.isfinite(rate):
    reasons.append("false-alarm rate: no defect-free image in the split; "
                   "the budget cannot be checked.")
  elif rate > t.max_false_alarm + 1e-12:
    reasons.append(f"false-alarm rate {rate:.4f} > budget "
                   f"{t.max_false_alarm:g} ({len(clean)} defect-free "
                   "images).")
  return rate


def _decide(comparisons, candidate, champion, rows, t: Thresholds) -> dict:
  reasons, warnings = [], []
  primary = comparisons[0]
  if primary["low"] is None or not math.isfinite(primary["low"]):
    reasons.append("primary: no defect image in the split; nothing to "
                   "compare.")
  else:
    if primary["low"] < -t.epsilon:
      reasons.append(
          f"primary (defect-image Dice): delta {primary['delta']:+.4f}, "
          f"lower bound {primary['low']:+.4f} < -{t.epsilon:g} (n = "
          f"{primary['n']} defect images).")
    if (primary["high"] - primary["low"]) / 2 > t.epsilon:
      warnings.append(
          f"too few defect images to detect a regression of {t.epsilon:g}: "
          f"n = {primary['n']}, interval half-width "
          f"{(primary['high'] - primary['low']) / 2:.4f}.")
  tested = [c for c in comparisons[1:] if c["p"] is not None]
  for c, adjusted in zip(tested, holm([c["p"] for c in tested])):
    c["p_holm"] = float(adjusted)
    c["significant_drop"] = bool(adjusted < t.alpha)
    if c["significant_drop"]:
      reasons.append(
          f"{c['name']}: {c['champion']:.4f} -> {c['candidate']:.4f} (delta "
          f"{c['delta']:+.4f}, interval [{c['low']:+.4f}, {c['high']:+.4f}]"
          f", n = {c['n']}), a drop beyond {t.epsilon:g} at Holm-adjusted "
          f"p = {adjusted:.4f} < {t.alpha:g}.")
    if c["n"] < FEW:
      warnings.append(f"{c['name']}: n = {c['n']}; an interval over fewer "
                      f"than {FEW} is coarse (a bootstrap of few images).")
  false_alarm = _false_alarms(rows, t, reasons)
  for c in comparisons[1:]:
    if c["p"] is None:
      warnings.append(f"{c['name']}: no test image or component (candidate "
                      f"{c['n']}, champion {c['n_champion']}); not compared.")
  return {"blessed": not reasons, "reasons": reasons, "warnings": warnings,
          "candidate": {"name": candidate.name, **candidate.identity},
          "champion": {"name": champion.name, **champion.identity},
          "dataset_hash": candidate.dataset_hash,
          "thresholds": dataclasses.asdict(t),
          "false_alarm_rate": _finite(false_alarm), "comparisons": comparisons}


def first_deploy(candidate: Evidence, thresholds: Thresholds, allowed: bool,
                 where: str) -> dict:
  """The verdict where there is no champion: not blessed unless `allowed`
  (gate.first_deploy), and then only when the candidate's own figures pass
  (a defect image to score, the false-alarm budget).

  Raises:
    GateError: the candidate's per-image results are incomplete.
  """
  _check_rows(candidate)
  rows = list(candidate.rows)
  reasons = []
  if not allowed:
    reasons.append(f"no champion: no version labelled 'stable' in {where} "
                   "and no gate.champion; a first deployment needs "
                   "gate.first_deploy=True.")
  defect = [r["dice"] for r in rows if r["defect"]]
  if not defect:
    reasons.append("primary: no defect image in the split; nothing to score.")
  false_alarm = _false_alarms(rows, thresholds, reasons)
  return {"blessed": not reasons, "reasons": reasons, "warnings": [],
          "first_deploy": True,
          "candidate": {"name": candidate.name, **candidate.identity},
          "champion": None, "dataset_hash": candidate.dataset_hash,
          "thresholds": dataclasses.asdict(thresholds),
          "false_alarm_rate": _finite(false_alarm),
          "primary": float(np.mean(defect)) if defect else None,
          "comparisons": []}
