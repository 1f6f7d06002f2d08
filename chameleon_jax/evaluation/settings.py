"""What evaluation and prediction are told to do, as plain typed values.

The composer (`components`) builds these from the `eval.*`, `predict.*` and
`data.*` config sections; nothing in evaluation reads a config. Their values
(and the reasons for them) are set in configs/segmentation.py.
"""

from __future__ import annotations

import dataclasses

DECISIONS = ("argmax", "calibrated")
CHECKPOINTS = ("best", "latest")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """`--mode=eval` and the decision rule.

  Attributes:
    split: the split evaluated ("test").
    checkpoint: "best" or "latest".
    min_defect_area: predicted pixels that raise an alarm (argmax masks).
    decision: "argmax" masks, or a "calibrated" rule chosen on val
      (segmentation only).
    max_false_alarm: the false-alarm budget the calibrated rule keeps to.
    per_class_rule: let each defect class have its own seed and area.
    flip_tta: average the probabilities over 4 flips.
    num_worst: overlays written for the worst images of each kind.

  Raises:
    ValueError: `decision` or `checkpoint` is not one of the known values.
  """
  split: str
  checkpoint: str
  min_defect_area: int
  decision: str
  max_false_alarm: float
  per_class_rule: bool
  flip_tta: bool
  num_worst: int

  def __post_init__(self):
    if self.decision not in DECISIONS:
      raise ValueError(f"eval.decision={self.decision!r}; expected one of "
                       f"{DECISIONS} ('calibrated': segmentation only).")
    if self.checkpoint not in CHECKPOINTS:
      raise ValueError(f"eval.checkpoint={self.checkpoint!r}; expected one "
                       f"of {CHECKPOINTS}.")

  @property
  def calibrated(self) -> bool:
    return self.decision == "calibrated"


@dataclasses.dataclass(frozen=True)
class PredictSettings:
  """`--mode=predict` on a folder of images.

  Attributes:
    input_dir: the folder of images (required).
    output_dir: where masks and overlays go ("" = <workdir>/predictions).
    window: (H, W) of sliding windows; () = the whole image at once.
    overlap: overlap of neighbouring windows (fraction of a window).
    scale: the pixel scale the model was trained at (`data.scale`).
    batch_size: windows per forward pass.
    canvases: (H, W) sizes a whole image is edge-padded to, the smallest
      that holds it (`export.buckets`, what the served model pads to, so
      both give the same masks); larger images: the next stride multiple.
  """
  input_dir: str
  output_dir: str
  window: tuple[int, ...]
  overlap: float
  scale: float
  batch_size: int
  canvases: tuple[tuple[int, int], ...] = ()

  def __post_init__(self):
    if not self.input_dir:
      raise ValueError("Set --config.predict.input_dir to a folder of "
                       "images.")
    object.__setattr__(self, "window", tuple(int(v) for v in self.window))
    object.__setattr__(self, "canvases", tuple(
        (int(h), int(w)) for h, w in self.canvases))
