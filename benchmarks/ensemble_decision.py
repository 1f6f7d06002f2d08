"""Does averaging trained models help the decision rule? Members and their mean.

  python benchmarks/ensemble_decision.py --config=experiments/magnetic_tile.py \
      --workdir=workdirs/mt_s0 --members=workdirs/mt_s1,workdirs/mt_s2

For each member alone and for the ensemble (the mean of the members' softmax
probabilities, each flip-averaged when eval.flip_tta is on, as in eval), side
by side in one run: the decision rule chosen on "val" within
eval.max_false_alarm (decision.calibrate, as --mode=eval does), the val
frontier (best val defect-image Dice within each false-alarm budget) and the
rule's test figures. Every member uses its `eval.checkpoint` ("best": the
step its own validation chose). Several members trained within one budget
is a lever only if the ensemble's val frontier is above every member's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks.seed_summary import BUDGETS, frontier  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Flags only when run as a script: importing `mean_items` (tests) must
  not claim --config, which other benchmark modules define too."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Member 0's workdir (holds the "
                      "dataset reference).")
  flags.DEFINE_list("members", [], "Workdirs of the further members.")

Item = tuple[int, np.ndarray, np.ndarray]


def mean_items(member_items: Sequence[Sequence[Item]]) -> list[Item]:
  """Per image, the mean of the members' (H, W, K) probabilities.

  Every member's items must cover the same images in the same order (they
  come from one dataset split); float32 means, labels from member 0.
  """
  out = []
  for row in zip(*member_items, strict=True):
    indices = {index for index, _, _ in row}
    if len(indices) != 1:
      raise ValueError(f"Members disagree on the image order: indices "
                       f"{sorted(indices)} at one position.")
    probs = np.mean([p.astype(np.float32) for _, p, _ in row], axis=0)
    out.append((row[0][0], probs, row[0][2]))
  return out


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  from chameleon_jax import components  # pylint: disable=import-outside-toplevel
  from chameleon_jax.evaluation import decision  # pylint: disable=import-outside-toplevel
  from chameleon_jax.train import steps  # pylint: disable=import-outside-toplevel
  config = FLAGS.config
  members, mesh = components.load_members(config, [FLAGS.workdir] + FLAGS.members)
  ds = components.open_dataset(config, FLAGS.workdir)
  preds = {split: [] for split in ("val", "test")}
  for graphdef, state, _, _ in members:
    predict = jax.jit(steps.make_predict_fn(graphdef, config.eval.flip_tta))
    for split, items in preds.items():
      items.append(list(decision.predictions(
          predict, state, ds, split, components.eval_input(config), mesh)))
  runs = [(f"{wd} (step {card['step']})", preds["val"][i], preds["test"][i])
          for i, (_, _, card, wd) in enumerate(members)]
  runs.append((f"mean of {len(members)}", mean_items(preds["val"]),
               mean_items(preds["test"])))
  budget = config.eval.max_false_alarm
  print(f"rule chosen on val within {budget:.0%} false alarms; val frontier "
        "at " + " / ".join(f"{b:.0%}" for b in BUDGETS))
  print(f"  {'model':44} {'rule (p, peak, px)':>20}  {'val frontier':47} "
        "test Dice   test FA  recall")
  for name, val, test in runs:
    rule, table = decision.calibrate(val, budget,
                                     per_class=config.eval.per_class_rule)
    figures, _, _ = decision.evaluate(rule, test, ds.class_names)
    front = " / ".join(f"{v:.3f}" for v in frontier({"grid": table}).values())
    rule_text = (f"{rule.threshold}, {rule.seed_threshold}, {rule.min_area}"
                 + (" +class" if rule.class_min_areas else ""))
    print(f"  {name[-44:]:44} {rule_text:>20}  {front:47} "
          f"{figures['defect_image_dice']:9.3f} "
          f"{figures['false_alarm_rate']:9.3f} {figures['defect_recall']:7.3f}")


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
