"""Metrics: one definition of every number the toolkit reports.

  images.py          what a "defect image" and an "alarm" are, the per-image
                     Dice, and per-image results of a class map (NumPy)
  confusion.py       IoU and Dice per class from a confusion matrix
  segmentation.py    psum-able sums of a batch (jit) and their summary
  classification.py  the same for image classification

Training, evaluation, the decision rule and the robustness sweep all count
through these, so a "false alarm" means the same thing in every report.
"""
