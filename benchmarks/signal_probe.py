"""Where a trained segmentation model's defect signal is, per class.

  python benchmarks/signal_probe.py --config=experiments/magnetic_tile.py \
      --workdir=workdirs/mt [--splits=train,val,test --checkpoint=best|latest]

Decides whether a missed defect class is a decision-rule problem or a model
problem. For every image of each split, on the (flip-averaged, as in eval)
probabilities, p(defect) = 1 - p(background):
  - defect images: the mean p(defect) inside the true mask, the share of
    mask pixels at p(defect) >= 0.5, and the 99th percentile of p(defect)
    outside the mask on the same image;
  - defect-free images: the peak p(defect) and the largest 8-connected
    component at p(defect) >= 0.5 (what a decision rule must reject).
Printed as medians per source folder (the id prefix before "/", the true
class for class-by-folder data). A class whose masks sit at the background's
level on the *training* split is not fit at all: no threshold, minimum
area or checkpoint choice can recover it.
"""

from __future__ import annotations

import collections

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from scipy import ndimage

from chameleon_jax.data.labels import IGNORE_INDEX

config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "The trained run's workdir.")
flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to probe.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which step.")
FLAGS = flags.FLAGS

DEFECT_KEYS = ("mask_mean_p", "mask_share_p50", "outside_p99")
CLEAN_KEYS = ("peak_p", "largest_component_p50")


def image_signal(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Signal figures of one image: (H, W, K) probabilities, (H, W) labels."""
  valid = labels != IGNORE_INDEX
  gt = valid & (labels > 0)
  p_defect = 1.0 - probs[..., 0].astype(np.float32)
  if gt.any():
    outside = p_defect[valid & ~gt]
    return {"mask_mean_p": float(p_defect[gt].mean()),
            "mask_share_p50": float((p_defect[gt] >= 0.5).mean()),
            "outside_p99": (float(np.quantile(outside, 0.99)) if outside.size
                            else float("nan"))}
  components, n = ndimage.label((p_defect >= 0.5) & valid,
                                structure=np.ones((3, 3), bool))
  return {"peak_p": float(p_defect[valid].max()) if valid.any() else 0.0,
          "largest_component_p50": float(
              np.bincount(components.ravel())[1:].max() if n else 0)}


def summarize(rows: list[tuple[str, dict]]) -> list[str]:
  """Medians per folder: one line for its defect images, one for its
  defect-free ones (a defect folder can hold an image whose mask is empty)."""
  groups = collections.defaultdict(list)
  for folder, signal in rows:
    groups[folder].append(signal)
  lines = []
  for folder in sorted(groups):
    for keys in (DEFECT_KEYS, CLEAN_KEYS):
      signals = [s for s in groups[folder] if keys[0] in s]
      if signals:
        figures = "  ".join(
            f"{k} {np.nanmedian([s[k] for s in signals]):.3g}" for k in keys)
        lines.append(f"  {folder:24} n={len(signals):<4d} {figures}")
  return lines


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  from chameleon_jax import components  # pylint: disable=import-outside-toplevel
  from chameleon_jax.evaluation import decision  # pylint: disable=import-outside-toplevel
  from chameleon_jax.train import steps  # pylint: disable=import-outside-toplevel
  config = FLAGS.config
  graphdef, state, mesh, card = components.restore(config, FLAGS.workdir, FLAGS.checkpoint)
  ds = components.open_dataset(config, FLAGS.workdir)
  predict = jax.jit(steps.make_predict_fn(graphdef, config.eval.flip_tta))
  print(f"{FLAGS.workdir}: {card['checkpoint']} checkpoint, step {card['step']}; "
        "medians per folder")
  for split in FLAGS.splits:
    ids = [item["id"] for item in ds.items(split)]
    rows = [(ids[i].split("/")[0] if "/" in ids[i] else "-",
             image_signal(probs, labels))
            for i, probs, labels in decision.predictions(
                predict, state, ds, split, components.eval_input(config),
                mesh)]
    print(f"{split}:")
    print("\n".join(summarize(rows)))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
