"""The robustness report: JSON with every number, PNG plots, example grids, HTML.

Written to `<workdir>/robustness/`:
  results.json            everything the sweep measured, plus the summary;
  corruptions.png         metric vs severity, one panel per corruption, a line
                          per model (members and ensemble);
  attacks.png             metric vs epsilon per attack (white-box on the
                          ensemble, and transfer from one member);
  examples/<cond>.png     image | perturbed | truth | each model's prediction;
  report.html             one self-contained page (plots inlined as base64).

Summary per corruption c and model (E = 1 - metric, s over severities):
  mean        mean metric over severities;
  ce          corruption error relative to clean, sum_s E_{s,c} / (S * E_clean)
              (1 = no worse than clean; ImageNet-C's CE divides by a baseline
              model instead, which a customer project does not have);
  mce         mean ce over the 15 ImageNet-C corruptions evaluated.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from chameleon_jax import atomic
from chameleon_jax.data import overlays
from chameleon_jax.robustness.corruptions import CORE_GROUPS

HEADLINE = ("defect_image_dice", "false_alarm_rate", "mean_defect_iou")


def summarize(results: dict[str, Any], metric: str = "defect_image_dice"
              ) -> dict[str, Any]:
  """Per corruption and model: mean metric over severities and CE; mCE."""
  out: dict[str, Any] = {"metric": metric, "corruptions": {}, "mce": {}}
  for model in results["models"]:
    clean_error = 1.0 - results["clean"][model][metric]
    core_ce = []
    for name, entry in results["corruptions"].items():
      values = [m[model][metric] for m in entry["severities"].values()]
      errors = [1.0 - v for v in values]
      ce = (float(np.sum(errors) / (len(errors) * clean_error))
            if clean_error > 0 else math.inf)
      row = out["corruptions"].setdefault(name, {})
      row[model] = {"mean": float(np.mean(values)), "ce": ce}
      if entry["group"] in CORE_GROUPS:
        core_ce.append(ce)
    out["mce"][model] = float(np.mean(core_ce)) if core_ce else None
  return out


def run(sweep_run: Callable[[], tuple], workdir: str | Path
        ) -> tuple[Path, dict[str, Any]]:
  """`--mode=robustness`: `sweep_run()` (sweep.run with its arguments), then
  every output under <workdir>/robustness/.

  Returns (path of report.html, headline numbers of the last model: the
  ensemble when there is one).
  """
  results, examples, finished = sweep_run()
  results["summary"] = summarize(results)
  page = write(results, examples, Path(workdir) / "robustness")
  finished.remove()
  model = results["models"][-1]
  return page, {
      "model": model, "images": results["num_images"],
      "clean defect_image_dice": results["clean"][model]["defect_image_dice"],
      "mCE (defect_image_dice)": results["summary"]["mce"][model],
      "conditions": 1 + sum(len(e["severities"])
                            for e in results["corruptions"].values())
                    + sum(len(e["epsilons"]) * len(e["crafted_on"])
                          for e in results["attacks"].values())}


def write(results: dict[str, Any], examples: dict[str, dict], out_dir: Path,
          metric: str = "defect_image_dice") -> Path:
  """Writes every output; returns the path of report.html."""
  import matplotlib
  matplotlib.use("Agg")
  out_dir.mkdir(parents=True, exist_ok=True)
  if results.get("summary", {}).get("metric") != metric:
    results = {**results, "summary": summarize(results, metric)}
  atomic.write_bytes(out_dir / "results.json",
                json.dumps(atomic.json_ready(results), indent=1).encode() + b"\n")
  figures = {}
  if results["corruptions"]:
    figures["corruptions.png"] = _plot_corruptions(results, metric)
  if results["attacks"]:
    figures["attacks.png"] = _plot_attacks(results, metric)
  for name, png in figures.items():
    atomic.write_bytes(out_dir / name, png)
  grids = {}
  (out_dir / "examples").mkdir(exist_ok=True)
  for label, ex in examples.items():
    png = _example_grid(ex, results["models"])
    grids[label] = png
    atomic.write_bytes(out_dir / "examples" / f"{_slug(label)}.png", png)
  page = _html(results, figures, grids, metric)
  atomic.write_bytes(out_dir / "report.html", page.encode())
  return out_dir / "report.html"


# --- plots -----------------------------------------------------------------------

def _plot_corruptions(results, metric) -> bytes:
  import matplotlib.pyplot as plt
  names = list(results["corruptions"])
  cols = 5
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows),
                           squeeze=False, sharey=True)
  for ax, name in zip(axes.flat, names):
    entry = results["corruptions"][name]
    sev = [0] + [int(s) for s in entry["severities"]]
    for model in results["models"]:
      values = [results["clean"][model][metric]] + [
          m[model][metric] for m in entry["severities"].values()]
      ax.plot(sev, values, marker="o", ms=3, label=model,
              lw=2.2 if model == "ensemble" else 1.2)
    ax.set_title(f"{name} ({entry['group']})", fontsize=9)
    ax.set_xticks(sev)
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(names):]:
    ax.axis("off")
  for ax in axes[:, 0]:
    ax.set_ylabel(f"argmax/{metric}", fontsize=8)
  axes.flat[0].legend(fontsize=7)
  fig.suptitle(f"argmax/{metric} vs severity (0 = clean)")
  fig.tight_layout()
  return overlays.figure_png(fig)


def _plot_attacks(results, metric) -> bytes:
  import matplotlib.pyplot as plt
  panels = [(a, t) for a, e in results["attacks"].items()
            for t in e["crafted_on"]]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2),
                           squeeze=False, sharey=True)
  for ax, (attack, target) in zip(axes.flat, panels):
    entry = results["attacks"][attack]
    eps = np.asarray(entry["epsilons"]) * 255
    for model, values in entry["crafted_on"][target]["metrics"].items():
      ax.plot(eps, [v[metric] for v in values], marker="o", ms=3, label=model,
              lw=2.2 if model == "ensemble" else 1.2)
    kind = "white-box" if target == "ensemble" else f"transfer from {target}"
    ax.set_title(f"{attack} ({kind})", fontsize=9)
    ax.set_xlabel("epsilon x 255")
    ax.grid(alpha=0.3)
  axes.flat[0].set_ylabel(metric)
  axes.flat[0].legend(fontsize=7)
  fig.tight_layout()
  return overlays.figure_png(fig)


def _example_grid(ex: dict[str, np.ndarray], models: list[str],
                  tile_side: int = 160) -> bytes:
  """Rows: images; columns: image, perturbed, truth, prediction per model."""
  from PIL import Image
  rows = []
  for i in range(len(ex["image"])):
    rgb = overlays.to_rgb_uint8(ex["image"][i])
    pert = overlays.to_rgb_uint8(ex["perturbed"][i])
    truth = ex["truth"][i]
    tiles = [rgb, pert, overlays.colorize(pert, truth)]
    for m in range(len(models)):
      pred = np.where(truth == 255, 255, ex["predictions"][m, i])
      tiles.append(overlays.colorize(pert, pred))
    gap = np.full((rgb.shape[0], 3, 3), 255, np.uint8)
    row = np.concatenate(sum([[t, gap] for t in tiles], [])[:-1], axis=1)
    rows += [row, np.full((3, row.shape[1], 3), 255, np.uint8)]
  grid = np.concatenate(rows[:-1], axis=0)
  image = Image.fromarray(grid)
  scale = tile_side / max(ex["image"].shape[1:3])  # Tiles of ~tile_side px.
  if abs(scale - 1) > 0.05:
    image = image.resize((round(grid.shape[1] * scale),
                          round(grid.shape[0] * scale)),
                         Image.BILINEAR if scale < 1 else Image.NEAREST)
  buf = io.BytesIO()
  image.save(buf, format="PNG", optimize=True)
  return buf.getvalue()


# --- HTML ------------------------------------------------------------------------

def _html(results, figures, grids, metric) -> str:
  models = results["models"]
  esc = html.escape
  h = ["<!doctype html><html><head><meta charset='utf-8'>",
       "<title>Robustness report</title><style>",
       "body{font-family:sans-serif;margin:2em;max-width:1400px}",
       "table{border-collapse:collapse;margin:1em 0}",
       "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}",
       "th{background:#eee}td:first-child{text-align:left}",
       "img{max-width:100%}</style></head><body>",
       "<h1>Robustness report</h1>"]
  h.append(f"<p>Dataset <code>{esc(results['dataset'])}</code>, split "
           f"<b>{esc(results['split'])}</b>: {results['num_images']} images "
           f"({results['num_defect_images']} with defects). Corruption "
           f"parameters: the {esc(results['corruption_scale'])} px set. "
           f"Models: {', '.join(models)}"
           + (f" (ensemble: {esc(str(results['ensemble_method']))} "
              f"averaging)" if results["ensemble_method"] else "") + ". "
           "Every figure here is of argmax masks (argmax/...; no decision "
           "rule applied), so it compares with --mode=eval's argmax/ "
           "figures, not with the calibrated rule's.</p>")
  h.append("<h2>Members</h2><table><tr><th>member</th><th>workdir</th>"
           "<th>checkpoint</th><th>step</th><th>model</th></tr>")
  for i, m in enumerate(results["members"]):
    h.append(f"<tr><td>{i}</td><td>{esc(m['workdir'])}</td>"
             f"<td>{esc(m['checkpoint'])}</td><td>{m['step']}</td>"
             f"<td>{esc(m['model']['name'])} {esc(str(m['model']['kwargs']))}"
             "</td></tr>")
  h.append("</table><h2>Clean</h2>")
  h.append(_table(["model"] + [f"argmax/{k}" for k in HEADLINE],
                  [[m] + [results["clean"][m][k] for k in HEADLINE]
                   for m in models]))
  summary = results["summary"]
  if results["corruptions"]:
    h.append(f"<h2>Corruptions</h2><p>Mean argmax/{metric} over severities and CE "
             "(error relative to clean; 1 = unaffected). mCE over the 15 "
             "ImageNet-C corruptions: " + ", ".join(
                 f"{m} {_fmt(summary['mce'][m])}" for m in models) + ".</p>")
    header = ["corruption"] + [f"{m} mean" for m in models] + \
        [f"{m} CE" for m in models]
    rows = [[n] + [summary["corruptions"][n][m]["mean"] for m in models] +
            [summary["corruptions"][n][m]["ce"] for m in models]
            for n in results["corruptions"]]
    h.append(_table(header, rows))
    h.append(_img(figures["corruptions.png"]))
    h.append(f"<h3>False-alarm rate by severity ({models[-1]})</h3>")
    sev = list(next(iter(results["corruptions"].values()))["severities"])
    h.append(_table(["corruption", "clean"] + sev, [
        [n, results["clean"][models[-1]]["false_alarm_rate"]] +
        [e["severities"][s][models[-1]]["false_alarm_rate"] for s in sev]
        for n, e in results["corruptions"].items()]))
  if results["attacks"]:
    h.append(f"<h2>Attacks</h2><p>Goal: {esc(results['attack_goal'])}; "
             f"ensemble gradient: {esc(results['attack_gradient'])}.</p>")
    for attack, entry in results["attacks"].items():
      for target, res in entry["crafted_on"].items():
        eps = [f"{e * 255:g}/255" for e in entry["epsilons"]]
        h.append(f"<h3>{esc(attack)} crafted on {esc(target)} "
                 f"{esc(str(entry['kwargs']))}</h3>")
        rows = [[m] + [v[metric] for v in values]
                for m, values in res["metrics"].items()]
        rows.append(["mean L-inf"] + res["norms"]["linf"])
        rows.append(["mean L2"] + res["norms"]["l2"])
        h.append(_table([f"argmax/{metric} at eps"] + eps, rows))
    h.append(_img(figures["attacks.png"]))
  if results["generalisation"]:
    g = results["generalisation"]
    h.append(f"<h2>Generalisation</h2><p><code>{esc(g['dataset'])}</code>, "
             f"split {esc(g['split'])}, {g['num_images']} images.</p>")
    h.append(_table(["model"] + [f"argmax/{k}" for k in HEADLINE],
                    [[m] + [g["metrics"][m][k] for k in HEADLINE]
                     for m in models]))
  if grids:
    h.append("<h2>Examples</h2><p>Columns: image | perturbed | truth | "
             + " | ".join(models) + ".</p>")
    for label, png in grids.items():
      h.append(f"<h4>{esc(label)}</h4>{_img(png)}")
  h.append("</body></html>")
  return "\n".join(h)


def _table(header, rows) -> str:
  out = ["<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>"
                                 for c in header) + "</tr>"]
  for row in rows:
    out.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>")
  return "".join(out) + "</table>"


def _fmt(value) -> str:
  if isinstance(value, float):
    return "n/a" if math.isnan(value) else f"{value:.3f}"
  return html.escape(str(value)) if value is not None else "n/a"


def _img(png: bytes) -> str:
  return ("<img src='data:image/png;base64,"
          + base64.b64encode(png).decode() + "'>")


def _slug(label: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")
