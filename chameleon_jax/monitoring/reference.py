"""The reference profile a window is compared with, stored with each version.

Written at export into `<version>/assets.extra/monitoring/reference.json`
from the validation split, served by the exported model itself (its own
decisions, on the images as a client sends them): per image, the input
statistics, the embedding and the output statistics (`statistics.py`, the
same code the request log uses), and whether the image has a defect. From
these, once:

  bandwidth     the RBF kernel's width for the embeddings' MMD test: the
                median pairwise distance of the reference embeddings
  calibration   p(defect) -> P(the image has a defect), an isotonic
                regression on the labelled reference (scipy), so the monitor
                can estimate false alarms without labels (as NannyML's CBPE
                does for tabular models)
  alarm rate    the rate the calibrated rule alarms at on this data; the
                false-alarm budget the rule was calibrated to is kept beside

Rows are dicts {"inputs": {...}, "embedding": [...], "outputs": {...}};
the request log's events carry the same three fields.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.spatial.distance import pdist

SCHEMA = 1
RELATIVE_PATH = Path("assets.extra") / "monitoring" / "reference.json"


class ProfileError(ValueError):
  """A reference profile that is missing, unreadable or unusable."""


@dataclasses.dataclass(frozen=True)
class Reference:
  """A version's reference profile (arrays over the reference images).

  Attributes:
    inputs: input statistic name -> (n,) values.
    outputs: output statistic name -> (n,) values.
    embeddings: (n, d) embeddings.
    defect: (n,) bool, the image has a defect pixel (ground truth).
    bandwidth: the MMD kernel's width (median pairwise distance).
    calibration_x, calibration_y: the isotonic map p(defect) -> P(defect
      image), as increasing breakpoints (interpolated linearly).
    false_alarm_budget: the rule's calibrated budget (None: argmax rule).
    class_names: the model's classes, background first.
  """
  inputs: dict[str, np.ndarray]
  outputs: dict[str, np.ndarray]
  embeddings: np.ndarray
  defect: np.ndarray
  bandwidth: float
  calibration_x: np.ndarray
  calibration_y: np.ndarray
  false_alarm_budget: float | None
  class_names: tuple[str, ...]

  @property
  def images(self) -> int:
    return int(self.defect.size)

  @property
  def alarms(self) -> int:
    return int(self.outputs["alarm"].sum())

  def calibrated(self, p_defect: np.ndarray) -> np.ndarray:
    """P(defect image | p(defect)) by the stored isotonic map."""
    return np.interp(np.asarray(p_defect, np.float64), self.calibration_x,
                     self.calibration_y)

  def to_json(self) -> dict:
    return {
        "schema": SCHEMA, "images": self.images,
        "class_names": list(self.class_names),
        "false_alarm_budget": self.false_alarm_budget,
        "bandwidth": self.bandwidth,
        "calibration": {"x": self.calibration_x.tolist(),
                        "y": self.calibration_y.tolist()},
        "defect": self.defect.astype(int).tolist(),
        "inputs": {k: v.tolist() for k, v in self.inputs.items()},
        "outputs": {k: v.tolist() for k, v in self.outputs.items()},
        "embeddings": np.round(self.embeddings, 6).tolist()}

  @classmethod
  def from_json(cls, data: dict, source: str = "reference") -> "Reference":
    """Raises ProfileError naming `source` and the field."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
      raise ProfileError(f"{source}: not a reference profile of schema "
                           f"{SCHEMA}")
    try:
      return cls(
          inputs={k: np.asarray(v, np.float64)
                  for k, v in data["inputs"].items()},
          outputs={k: np.asarray(v, np.float64)
                   for k, v in data["outputs"].items()},
          embeddings=np.asarray(data["embeddings"], np.float64),
          defect=np.asarray(data["defect"], bool),
          bandwidth=float(data["bandwidth"]),
          calibration_x=np.asarray(data["calibration"]["x"], np.float64),
          calibration_y=np.asarray(data["calibration"]["y"], np.float64),
          false_alarm_budget=data["false_alarm_budget"],
          class_names=tuple(data["class_names"]))
    except (KeyError, TypeError, ValueError) as e:
      raise ProfileError(f"{source}: field {e} missing or malformed") from e


def build(rows: list[dict], defect: list[bool], class_names: tuple[str, ...],
          false_alarm_budget: float | None) -> Reference:
  """The reference profile of served rows and their ground truth.

  Args:
    rows: per image {"inputs", "embedding", "outputs"} (statistics.py).
    defect: per image, whether its mask has a defect pixel.
    class_names: the model's classes, background first.
    false_alarm_budget: the calibrated rule's budget, None for argmax.

  Raises:
    ProfileError: fewer than 2 rows, or rows with different statistics.
  """
  if len(rows) < 2 or len(rows) != len(defect):
    raise ProfileError(f"a reference needs at least 2 images with their "
                         f"labels; got {len(rows)} rows and {len(defect)} "
                         "labels")
  def columns(field):
    keys = sorted(rows[0][field])
    if any(sorted(r[field]) != keys for r in rows):
      raise ProfileError(f"the rows' {field} statistics differ in their "
                           "names")
    return {k: np.asarray([r[field][k] for r in rows], np.float64)
            for k in keys}
  embeddings = np.asarray([r["embedding"] for r in rows], np.float64)
  distances = pdist(embeddings)
  positive = distances[distances > 0]
  labels = np.asarray(defect, bool)
  outputs = columns("outputs")
  # Ties pooled first (mean label, weighted by count), then PAV (scipy).
  x, inverse, counts = np.unique(outputs["p_defect"], return_inverse=True,
                                 return_counts=True)
  means = np.bincount(inverse, weights=labels.astype(np.float64)) / counts
  y = isotonic_regression(means, weights=counts.astype(np.float64)).x
  return Reference(
      inputs=columns("inputs"), outputs=outputs, embeddings=embeddings,
      defect=labels,
      bandwidth=float(np.median(positive)) if positive.size else 1.0,
      calibration_x=x, calibration_y=y,
      false_alarm_budget=(None if false_alarm_budget is None
                          else float(false_alarm_budget)),
      class_names=tuple(class_names))


def load(version_dir: str | Path) -> Reference:
  """The reference stored with a served version directory."""
  path = Path(version_dir) / RELATIVE_PATH
  try:
    data = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise ProfileError(f"{path}: no reference profile (exported before "
                         "monitoring, or not by --mode=export)") from e
  except (OSError, json.JSONDecodeError) as e:
    raise ProfileError(f"{path}: unreadable ({e})") from e
  return Reference.from_json(data, str(path))
