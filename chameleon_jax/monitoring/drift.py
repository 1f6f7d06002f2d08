"""One window of served images against its version's reference: the tests.

Four families of tests, each at `alpha / 4`, so a window of images drawn
like the reference alarms with probability at most `alpha` (the tests'
levels add up; each is exact or conservative under exchangeability):

  inputs      two-sample Kolmogorov-Smirnov (scipy) on every input statistic
              that varies, Bonferroni across them
  embedding   MMD with an RBF kernel (the reference's median distance) on
              the embeddings, p-value from `permutations` random
              relabellings of reference + window (exact level)
  alarm_rate  Fisher's exact test of the window's alarms against the
              reference's: the alarm rate of clean data is the reference's
              (defect images at their usual share, defect-free ones within
              the calibrated false-alarm budget), and both counts are
              samples, so the reference's own uncertainty is counted
  outputs     Kolmogorov-Smirnov on p(defect) and the defect areas,
              Bonferroni across them

Warnings, never a drift alarm: confidence drift (KS on the mean entropy at
the same level) and the label-free false-alarm estimate above the budget.
The estimate: with q = P(defect image | p(defect)) from the reference's
isotonic map, the expected false alarms are sum(1 - q) over alarmed images,
over the expected defect-free images sum(1 - q) over all.

`top_moved` ranks every statistic by its KS distance, so an alert can say
what changed even when the test that fired was the embedding's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats as scipy_stats

from chameleon_jax.monitoring.reference import Reference

FAMILIES = ("inputs", "embedding", "alarm_rate", "outputs")


@dataclasses.dataclass(frozen=True)
class Settings:
  """How windows are tested.

  Attributes:
    alpha: the probability that a window drawn like the reference alarms
      (split equally over the four families).
    permutations: relabellings of the MMD permutation test (its smallest
      p-value is 1 / (permutations + 1), so keep it above 4 / alpha).
    min_images: a smaller window is skipped (counted), never "no drift".
    top: statistics named as the ones that moved most.
    seed: the permutations' seed (a window's test is reproducible).
  """
  alpha: float = 0.01
  permutations: int = 1999
  min_images: int = 20
  top: int = 3
  seed: int = 0

  def __post_init__(self):
    if not 0 < self.alpha < 1:
      raise ValueError(f"alpha={self.alpha}: expected a level in (0, 1)")
    if self.permutations + 1 < len(FAMILIES) / self.alpha:
      raise ValueError(
          f"permutations={self.permutations} cannot reach a p-value below "
          f"alpha / {len(FAMILIES)} = {self.alpha / len(FAMILIES):g}; use at "
          f"least {int(np.ceil(len(FAMILIES) / self.alpha))}")

  @property
  def level(self) -> float:
    """Each family's level."""
    return self.alpha / len(FAMILIES)


def ks_family(reference: dict[str, np.ndarray], window: dict[str, np.ndarray],
              level: float, family: str) -> dict:
  """KS tests of every shared, varying statistic; the family alarms when the
  smallest p-value is below level / m (Bonferroni)."""
  names = [k for k in sorted(reference) if k in window
           and np.ptp(np.concatenate([reference[k], window[k]])) > 0]
  if not names:
    return {"test": family, "statistic": "", "value": 0.0, "p_value": 1.0,
            "threshold": level, "alarm": False}
  tests = {k: scipy_stats.ks_2samp(reference[k], window[k]) for k in names}
  worst = min(names, key=lambda k: (tests[k].pvalue, -tests[k].statistic))
  threshold = level / len(names)
  return {"test": family, "statistic": worst,
          "value": float(tests[worst].statistic),
          "p_value": float(tests[worst].pvalue), "threshold": threshold,
          "alarm": bool(tests[worst].pvalue < threshold)}


def rbf_kernel(x: np.ndarray, bandwidth: float) -> np.ndarray:
  """exp(-|xi - xj|² / (2 bandwidth²)) for the rows of x."""
  sq = np.sum(x * x, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
  return np.exp(-d2 / (2 * bandwidth * bandwidth))


def mmd_permutation(reference: np.ndarray, window: np.ndarray,
                    bandwidth: float, permutations: int,
                    rng: np.random.Generator) -> tuple[float, float]:
  """(MMD², p-value) of the biased RBF-kernel MMD between two samples; the
  p-value counts the relabellings at least as extreme, the observed one
  included (so it is never 0).

  For a labelling z (1 = window, of n ones among N = m + n), with K the
  pooled kernel and r its row sums, sum_xx = z'Kz, sum_xy = r'z - z'Kz and
  sum_yy = 1'K1 - 2 r'z + z'Kz: one matrix product scores all relabellings.
  """
  pooled = np.concatenate([reference, window]).astype(np.float64)
  m, n = len(reference), len(window)
  k = rbf_kernel(pooled, bandwidth)
  r, total = k.sum(axis=1), k.sum()
  z = np.zeros((permutations + 1, m + n))
  z[0, m:] = 1
  for i in range(1, permutations + 1):
    z[i, rng.permutation(m + n)[:n]] = 1
  quad = np.einsum("pi,pi->p", z @ k, z)
  linear = z @ r
  s_ww, s_wr = quad, linear - quad
  s_rr = total - 2 * linear + quad
  mmd = s_rr / m**2 + s_ww / n**2 - 2 * s_wr / (m * n)
  return float(mmd[0]), float(np.mean(mmd >= mmd[0] - 1e-12))


def evaluate(reference: Reference, rows: list[dict],
             settings: Settings = Settings()) -> dict:
  """The window's verdict.

  Args:
    reference: the version's reference profile.
    rows: the window's events' data, {"inputs", "embedding", "outputs"}.
    settings: levels and window rules.

  Returns:
    {"images", "drift" (any family alarmed), "tests" (one per family:
    test, statistic, value, p_value, threshold, alarm), "warnings",
    "top_moved" ([(statistic, KS distance, reference median, window
    median)]), "alarm_rate", "reference_alarm_rate",
    "estimated_false_alarm_rate", "false_alarm_budget"}.

  Raises:
    ValueError: fewer than `settings.min_images` rows (the caller skips and
      counts such a window).
  """
  if len(rows) < settings.min_images:
    raise ValueError(f"a window of {len(rows)} images is smaller than "
                     f"min_images={settings.min_images}")
  level = settings.level
  inputs = _columns(rows, "inputs")
  outputs = _columns(rows, "outputs")
  embeddings = np.asarray([r["embedding"] for r in rows], np.float64)
  rng = np.random.default_rng(settings.seed)
  mmd, mmd_p = mmd_permutation(reference.embeddings, embeddings,
                               reference.bandwidth, settings.permutations, rng)
  alarms = int(outputs["alarm"].sum())
  n = len(rows)
  _, fisher_p = scipy_stats.fisher_exact(
      [[alarms, n - alarms],
       [reference.alarms, reference.images - reference.alarms]])
  output_keys = [k for k in outputs if k == "p_defect"
                 or k.startswith("area/")]
  tests = [
      ks_family(reference.inputs, inputs, level, "inputs"),
      {"test": "embedding", "statistic": "mmd2", "value": mmd,
       "p_value": mmd_p, "threshold": level, "alarm": bool(mmd_p < level)},
      {"test": "alarm_rate", "statistic": "alarm_rate", "value": alarms / n,
       "p_value": float(fisher_p), "threshold": level,
       "alarm": bool(fisher_p < level)},
      ks_family({k: reference.outputs[k] for k in output_keys
                 if k in reference.outputs},
                {k: outputs[k] for k in output_keys}, level, "outputs")]
  warnings = []
  confidence = ks_family({"entropy": reference.outputs["entropy"]},
                         {"entropy": outputs["entropy"]}, level, "confidence")
  if confidence["alarm"]:
    warnings.append(confidence)
  q = reference.calibrated(outputs["p_defect"])
  clean = float(np.sum(1 - q))
  estimate = (float(np.sum((1 - q) * outputs["alarm"]) / clean)
              if clean > 0 else None)
  budget = reference.false_alarm_budget
  if estimate is not None and budget is not None and estimate > budget:
    warnings.append({"test": "false_alarm_estimate",
                     "statistic": "estimated_false_alarm_rate",
                     "value": estimate, "threshold": budget, "alarm": True})
  return {"images": n, "drift": any(t["alarm"] for t in tests),
          "tests": tests, "warnings": warnings,
          "top_moved": top_moved({**reference.inputs, **reference.outputs},
                                 {**inputs, **outputs}, settings.top),
          "alarm_rate": alarms / n,
          "reference_alarm_rate": reference.alarms / reference.images,
          "estimated_false_alarm_rate": estimate,
          "false_alarm_budget": budget}


def top_moved(reference: dict[str, np.ndarray], window: dict[str, np.ndarray],
              top: int) -> list[tuple[str, float, float, float]]:
  """The `top` statistics with the largest KS distance, with their
  reference and window medians."""
  moved = []
  for k in sorted(set(reference) & set(window)):
    distance = float(scipy_stats.ks_2samp(reference[k], window[k]).statistic)
    moved.append((k, distance, float(np.median(reference[k])),
                  float(np.median(window[k]))))
  moved.sort(key=lambda m: -m[1])
  return moved[:top]


def _columns(rows: list[dict], field: str) -> dict[str, np.ndarray]:
  keys = set(rows[0][field])
  for r in rows[1:]:
    keys &= set(r[field])
  return {k: np.asarray([r[field][k] for r in rows], np.float64)
          for k in sorted(keys)}
