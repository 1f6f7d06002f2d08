"""`--mode=eval`: metrics JSON for a split, and overlays of the worst images."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np

from chameleon_jax import atomic
from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import images as imio
from chameleon_jax.data import pipeline
from chameleon_jax.data import overlays
from chameleon_jax.evaluation import decision
from chameleon_jax.evaluation.evaluate import evaluate_split
from chameleon_jax.evaluation.settings import EvalSettings
from chameleon_jax.metrics.images import image_result
from chameleon_jax.model_io.restore import Restored
from chameleon_jax.train import steps

# How figures are named, in eval's files and printout, the robustness report
# and the model card: unprefixed = the configured decision's (eval.decision);
# argmax/... = the argmax masks' where the decision is the calibrated rule;
# calibrated/... = the rule's in training's validation metrics (whose
# unprefixed figures are argmax masks'). Counts and the checkpoint are no
# figures of either.
UNNAMED = ("num_", "checkpoint")
# Worst-image panels are enlarged to at least this height (pixels).
PANEL_HEIGHT = 192


def figure_names(decision: str, where: str) -> str:
  """One line that says what the figures printed for `where` ("eval",
  "validation", "robustness") are."""
  if where == "validation":
    return ("figures of argmax masks" + ("; calibrated/*: the decision rule "
                                         "chosen on val"
                                         if decision == "calibrated" else ""))
  if where == "robustness" or decision != "calibrated":
    return "figures of argmax masks (no decision rule applied)"
  return ("figures of the calibrated decision rule (what is served); "
          "argmax/*: argmax masks")



def run_eval(workdir: str | Path, restored: Restored,
             ds: dataset_lib.Dataset, settings: EvalSettings,
             inp: pipeline.EvalInput, task: str) -> dict:
  """Evaluates a restored model on `settings.split` of `ds`.

  Writes <workdir>/eval/<split>_metrics.json, <split>_per_image.json and, in
  eval/<split>_worst/, panels (image | truth | prediction) of the missed
  defects with the lowest Dice and the false alarms with the largest
  predicted area; with the calibrated decision also eval/decision.json.
  Classification: the metrics, predictions and the confusion-matrix plot
  (the decision rule is for segmentation; classification uses argmax).
  """
  split = settings.split
  graphdef, state, mesh, card = restored
  if ds.dataset_hash != card["dataset_hash"]:
    logging.warning("Evaluating on dataset %s, the model was trained on %s.",
                    ds.dataset_hash[:16], card["dataset_hash"][:16])
  eval_step = jax.jit(steps.make_eval_step(graphdef, settings.min_defect_area,
                                           task))
  metrics, per_image = evaluate_split(eval_step, state, ds, split, inp, mesh,
                                      task)
  metrics["checkpoint_step"] = card["step"]
  metrics["checkpoint"] = card["checkpoint"]
  out = Path(workdir) / "eval"
  ids = [a["id"] for a in ds.items(split)]
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
  if task == "classification":
    if jax.process_index() == 0:
      _write_classification(out, split, metrics, per_image, ids,
                            ds.class_names)
    return metrics
  maps = None
  if settings.calibrated:
    metrics, per_image, maps = _calibrated(settings, graphdef, state, ds,
                                           inp, mesh, metrics, out)
  else:
    per_image["evidence"] = _argmax_evidence(graphdef, state, ds, split, inp,
                                             mesh, per_image["index"])
  if jax.process_index() == 0:
    rows = [{"id": ids[int(i)], "dice": float(d), "defect": bool(t),
             "false_alarm": bool(f), "predicted_defect_pixels": int(a)}
            for i, d, t, f, a in zip(per_image["index"], per_image["dice"],
                                     per_image["defect"],
                                     per_image["false_alarm"],
                                     per_image["pred_area"])]
    for row, extra in zip(rows, per_image.get("evidence", ())):
      row.update(extra)
    atomic.write_json(out / f"{split}_metrics.json",
                      atomic.json_ready(metrics))
    atomic.write_json(out / f"{split}_per_image.json", rows)
    _write_worst(settings.num_worst, inp, graphdef, state, ds, split, ids,
                 per_image, out / f"{split}_worst", maps)
  return metrics


def _calibrated(settings: EvalSettings, graphdef, state, ds, inp, mesh,
                metrics, out):
  """Chooses the decision rule on "val", applies it to the split; the
  unprefixed figures become the rule's and every figure of the argmax masks
  is named argmax/... (figure_names: one scheme for eval, robustness and
  the model card)."""
  split = settings.split
  predict = jax.jit(steps.make_predict_fn(graphdef, settings.flip_tta))
  if split == "val":
    logging.warning("Calibrating and evaluating on the validation split: "
                    "its figures are optimistic.")
  rule, table = decision.calibrate(
      decision.predictions(predict, state, ds, "val", inp, mesh),
      settings.max_false_alarm, per_class=settings.per_class_rule)
  if jax.process_index() == 0:
    decision.save_rule(out / "decision.json", rule, table,
                       settings.max_false_alarm, "val")
  logging.info("Decision rule chosen on val: %s", rule)
  ruled, results, maps = decision.evaluate(
      rule, decision.predictions(predict, state, ds, split, inp, mesh),
      ds.class_names)
  merged = {(k if k.startswith(UNNAMED) else f"argmax/{k}"): v
            for k, v in metrics.items()}
  merged.update(ruled)
  merged["decision_threshold"] = rule.threshold
  merged["decision_min_area"] = rule.min_area
  merged["decision_seed_threshold"] = rule.seed_threshold
  items = ds.items(split)
  per_image = {"index": np.array([r["index"] for r in results]),
               "dice": np.array([r["dice"] for r in results]),
               "defect": np.array([r["defect"] for r in results]),
               "false_alarm": np.array([r["alarm"] and not r["defect"]
                                        for r in results]),
               "pred_area": np.array([r["pred_area"] for r in results]),
               "gt_area": np.array([r["gt_area"] for r in results]),
               "evidence": [_evidence(r, _pixel_area(items[r["index"]], inp))
                            for r in results]}
  return merged, per_image, maps


def _argmax_evidence(graphdef, state, ds, split, inp, mesh, order):
  """`_evidence` of the argmax class maps, in the order of `order`."""
  predict = jax.jit(steps.make_predict_fn(graphdef))
  items = ds.items(split)
  found = {}
  for index, probs, labels in decision.predictions(
      predict, state, ds, split, inp, mesh, dtype=np.float32):
    result = image_result(probs.argmax(-1), labels)
    found[index] = _evidence(result, _pixel_area(items[index], inp))
  return [found[int(i)] for i in order]


def _pixel_area(item: dict, inp: pipeline.EvalInput) -> float:
  """Native pixels per evaluated pixel of a manifest item."""
  if inp.size_policy == "resize":
    return item["height"] * item["width"] / (inp.size[0] * inp.size[1])
  return 1.0 / inp.scale ** 2


def _evidence(result: dict, pixel_area: float) -> dict:
  """What a regression gate compares besides Dice: the true class and every
  ground-truth component, its area in native pixels (so models evaluated at
  different scales share size buckets) and whether the rule found it."""
  return {"true_class": result["true_class"],
          "components": [[k, round(area * pixel_area), found]
                         for k, area, found in result["components"]]}


def worst(per_image: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions of the `n` worst missed defects and false alarms.

  Misses: lowest Dice first; among equal Dice (many misses sit at 0), the
  largest true defect first. False alarms: the largest predicted area first.
  """
  defect = np.flatnonzero(per_image["defect"])
  missed = defect[np.lexsort((-per_image["gt_area"][defect],
                              per_image["dice"][defect]))][:n]
  alarms = np.flatnonzero(per_image["false_alarm"])
  alarms = alarms[np.argsort(-per_image["pred_area"][alarms], kind="stable")]
  return missed, alarms[:n]


def _write_worst(num_worst: int, inp: pipeline.EvalInput, graphdef, state,
                 ds, split, ids, per_image, folder: Path,
                 maps: dict | None = None):
  """Panels of the worst missed/partial defects and the worst false alarms
  (with `maps`, {index: class map}, the decision rule's masks are shown)."""
  folder.mkdir(parents=True, exist_ok=True)
  missed, alarms = worst(per_image, num_worst)
  predict = jax.jit(steps.make_predict_fn(graphdef))
  examples = pipeline.eval_examples(ds, split, inp.size, inp.size_policy,
                                    inp.scale)
  for kind, chosen in (("missed", missed), ("false_alarm", alarms)):
    for rank, pos in enumerate(chosen):
      index = int(per_image["index"][pos])
      example = examples[index]
      pred = (maps[index] if maps is not None else
              np.asarray(predict(state, example["image"][None]))[0].argmax(-1))
      name = ids[index].replace("/", "_")
      imio.save_png(folder / f"{kind}_{rank:02d}_{name}.png", overlays.panel(
          example["image"], example["mask"], pred, titles=(
              name, "truth", "decision rule" if maps is not None
              else "argmax"), class_names=ds.class_names,
          min_height=PANEL_HEIGHT))


def _write_classification(out: Path, split: str, metrics: dict, per_image,
                          ids, class_names) -> None:
  """Metrics, per-image predictions (most confident mistakes first) and the
  confusion matrix plot (rows: true class, columns: predicted)."""
  rows = [{"id": ids[int(i)], "label": class_names[int(t)],
           "pred": class_names[int(p)], "confidence": float(c)}
          for i, t, p, c in zip(per_image["index"], per_image["label"],
                                per_image["pred"], per_image["confidence"])]
  rows.sort(key=lambda r: (r["label"] == r["pred"], -r["confidence"]))
  atomic.write_json(out / f"{split}_metrics.json",
                      atomic.json_ready(metrics))
  atomic.write_json(out / f"{split}_per_image.json", rows)
  confusion_plot(np.asarray(metrics["confusion"]), class_names,
                          out / f"{split}_confusion.png",
                          title=f"{split}: accuracy {metrics['accuracy']:.3f}, "
                          f"balanced {metrics['balanced_accuracy']:.3f}")


def confusion_plot(confusion: np.ndarray, class_names, path: Path,
                   title: str = "") -> Path:
  """A confusion-matrix PNG: counts, and colour by row-normalised recall."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  confusion = np.asarray(confusion)
  k = len(class_names)
  rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * k + 2))
  ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
  for i in range(k):
    for j in range(k):
      ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
              color="white" if rates[i, j] > 0.5 else "black")
  ax.set_xticks(range(k), class_names, rotation=45, ha="right")
  ax.set_yticks(range(k), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  path = Path(path)
  with atomic.replacing(path) as tmp:
    fig.savefig(tmp, dpi=100, format="png")
  plt.close(fig)
  return path
