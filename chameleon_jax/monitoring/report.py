"""The monitor's self-contained HTML drift report (plots and images inline).

Rewritten after every window: the windows so far (verdict, the tests that
fired with p-value and level, the statistics that moved most); for the
latest window, and for the latest that drifted when it is another, the top
moved statistics as reference-against-window histograms and the window's
example images (the request log's samples, when it keeps some); the events
skipped, by reason.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from chameleon_jax import atomic
from chameleon_jax.data.overlays import figure_png

MAX_EXAMPLES = 8


def _histograms(reference, rows: list[dict], moved: list) -> bytes | None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  if not moved:
    return None
  known = {**reference.inputs, **reference.outputs}
  fig, axes = plt.subplots(1, len(moved), figsize=(4 * len(moved), 3),
                           squeeze=False)
  for ax, (name, distance, _, _) in zip(axes[0], moved):
    window = np.asarray([{**r["inputs"], **r["outputs"]}.get(name, np.nan)
                         for r in rows], np.float64)
    ref = known[name]
    both = np.concatenate([ref, window[np.isfinite(window)]])
    bins = np.linspace(both.min(), both.max() + 1e-12, 30)
    ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
    ax.hist(window, bins=bins, density=True, alpha=0.5, label="window")
    ax.set_title(f"{name} (KS {distance:.2f})", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return figure_png(fig)


def _img(png: bytes, title: str = "", height: int = 160) -> str:
  return (f"<img title='{html.escape(title)}' style='max-height:{height}px' "
          "src='data:image/png;base64," + base64.b64encode(png).decode() + "'>")


def _window(title: str, verdict: dict, reference, rows: list[dict],
            log_dir: Path) -> list[str]:
  """A window's section: its histograms and example images."""
  parts = [f"<h2>{html.escape(title)}: {html.escape(verdict['model'])}/"
           f"{verdict['version']} {html.escape(verdict['name'])}</h2>"]
  plot = _histograms(reference, rows, verdict["top_moved"])
  if plot:
    parts.append(_img(plot, "reference against window", 300))
  samples = [log_dir / s for s in verdict.get("samples", [])][:MAX_EXAMPLES]
  readable = [p for p in samples if p.is_file()]
  parts.append("<h3>Example images</h3>")
  parts.append("".join(_img(p.read_bytes(), p.name) for p in readable)
               or "<p>none kept (the server's --request_log_sample_rate "
               "is 0)</p>")
  return parts


def _row(v: dict) -> str:
  fired = "; ".join(f"{t['test']} ({t['statistic']}: p={t['p_value']:.2g} "
                    f"&lt; {t['threshold']:.2g})"
                    for t in v["tests"] if t["alarm"]) or "none"
  warned = "; ".join(html.escape(w["test"]) for w in v["warnings"]) or "none"
  moved = ", ".join(f"{html.escape(m[0])} {m[2]:.3g}&rarr;{m[3]:.3g}"
                    for m in v["top_moved"])
  verdict = "<b>drift</b>" if v["drift"] else "no drift"
  return (f"<tr><td>{html.escape(v['model'])}/{v['version']}</td>"
          f"<td>{html.escape(v['name'])}</td><td>{verdict}</td>"
          f"<td>{fired}</td><td>{warned}</td><td>{moved}</td>"
          f"<td>{v['alarm_rate']:.3f} (ref. {v['reference_alarm_rate']:.3f})"
          "</td></tr>")


def write(path: Path, verdicts, latest: tuple, drifted: tuple,
          log_dir: Path, skipped: dict) -> None:
  """Writes the report of `verdicts` (the latest last).

  Args:
    path: the HTML file (written atomically).
    verdicts: the latest windows' verdicts (a sequence, oldest first).
    latest, drifted: (verdict, its version's reference, its rows) of the
      latest window and of the latest that drifted (None: none did).
    log_dir: where the log's sampled images are.
    skipped: reason -> events not tested.
  """
  last = verdicts[-1]
  parts = [
      "<!doctype html><html><head><meta charset='utf-8'>"
      "<title>Drift report</title><style>body{font-family:sans-serif}"
      "td,th{border:1px solid #ccc;padding:3px;font-size:12px}"
      "table{border-collapse:collapse}</style></head><body>",
      "<h1>Drift report</h1>",
      f"<p>The latest {len(verdicts)} windows: "
      f"{sum(v['drift'] for v in verdicts)} drifted; the latest: {html.escape(last['model'])}/{last['version']} "
      f"{html.escape(last['name'])}: "
      f"<b>{'drift' if last['drift'] else 'no drift'}</b>.</p>",
      "<h2>Windows</h2><table><tr><th>model/version</th><th>window</th>"
      "<th>verdict</th><th>tests that fired</th><th>warnings</th>"
      "<th>moved most (reference &rarr; window median)</th>"
      "<th>alarm rate</th></tr>",
      *(_row(v) for v in reversed(verdicts)), "</table>"]
  parts += _window("The latest window", *latest, log_dir)
  if drifted is not None and drifted[0] is not latest[0]:
    parts += _window("The latest window that drifted", *drifted, log_dir)
  parts.append("<h2>Events not tested</h2>" + (
      "<ul>" + "".join(f"<li>{html.escape(k)}: {n}</li>"
                       for k, n in sorted(skipped.items())) + "</ul>"
      if skipped else "<p>none</p>"))
  parts.append("</body></html>")
  atomic.write_text(path, "\n".join(parts))
