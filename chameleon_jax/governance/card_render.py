"""A model card (model_card.py) for people: Markdown, one HTML page, plots.

  markdown(card)      MODEL_CARD.md: YAML front matter in Hugging Face's
                      model-index form (task, dataset with its hash as the
                      revision, metrics), then the card's sections
  metrics_plot(card)  PNG: every figure with its interval (primary, classes,
                      size buckets, false-alarm rate against its budget)
  data_plot(card)     PNG: images per split and class
  html(card, plots)   one self-contained page (plots inlined as base64)
  write(directory, card)  all of them, atomically
  refresh(directory, records)  the same card with the ledger's records now
"""

from __future__ import annotations

import base64
import html as html_lib
import json
from pathlib import Path

import yaml

from chameleon_jax import atomic
from chameleon_jax.data import overlays
from chameleon_jax.governance import model_card
from chameleon_jax.governance.model_card import HUMAN_FIELDS

FILES = ("model_card.json", "MODEL_CARD.md", "model_card.html",
         "metrics.png")
LABELS = {"primary": "defect-image Dice (all defect images)"}


def _fmt(value, digits: int = 3) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _interval(entry: dict | None) -> str:
  if not entry or entry.get("value") is None:
    return "n/a"
  return (f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"
          f" (n = {entry['n']})")


def front_matter(card: dict) -> dict:
  """Hugging Face model-index metadata of the card."""
  model, ev, data = card["model"], card["evaluation"], card["data"]
  task = ("image-segmentation" if model["task"] == "segmentation"
          else "image-classification")
  metrics = []
  for f in ev["figures"]:
    if f["value"] is not None:
      metrics.append({"type": "dice" if not f["name"].startswith("size")
                      else "recall", "value": round(f["value"], 4),
                      "name": LABELS.get(f["name"], f["name"]),
                      "verified": False})
  fa = ev.get("false_alarm") or {}
  if fa.get("value") is not None:
    metrics.append({"type": "false_alarm_rate", "value": round(fa["value"], 4),
                    "name": "false-alarm rate (defect-free images)",
                    "verified": False})
  return {
      "library_name": "chameleon_jax",
      "tags": ["jax", "flax", "chameleon_jax", task, "defect-detection"],
      "model-index": [{
          "name": f"{model['name']} version {model['version']}",
          "results": [{
              "task": {"type": task, "name": model["task"]},
              "dataset": {"type": data["name"], "name": data["name"],
                          "split": ev["split"],
                          "revision": data["dataset_hash"]},
              "metrics": metrics}]}]}


def markdown(card: dict) -> str:
  """MODEL_CARD.md (module docstring)."""
  m, h, d = card["model"], card["human"], card["data"]
  lines = ["---", yaml.safe_dump(front_matter(card), sort_keys=False).strip(),
           "---", "", f"# {m['name']}, version {m['version']}", "",
           f"{m['task']} model `{m['architecture']['name']}`, classes "
           f"{', '.join(m['class_names'])}; parameters `{m['params_sha256']}`"
           f", checkpoint step {m['checkpoint_step']} ({m['checkpoint']}).",
           f"Card schema {card['schema_version']}, generated "
           f"{card['generated']}.", ""]
  if h["missing"]:
    lines += [f"**Not signed:** {', '.join(h['missing'])} missing "
              f"(write them in {h['source'] or 'the YAML named by card.human'}"
              "); `stable` cannot be assigned to this version.", ""]
  lines += ["## Use (written by a person)", ""]
  for field in HUMAN_FIELDS:
    value = h.get(field)
    label = f"- **{field.replace('_', ' ')}**:"
    if isinstance(value, list):
      lines += [label] + [f"  - {item}" for item in value]
    else:
      lines.append(f"{label} {value or '**missing**'}")
  lines += ["", "## Data", "",
            f"Dataset `{d['name']}` hash `{d['dataset_hash']}`, source "
            f"`{d['source']}`; quarantined {d['quarantined']['count']} "
            f"({_reasons(d)}); exact-duplicate groups "
            f"{d['duplicates']['exact_groups']}, near-duplicate pairs "
            f"{d['duplicates']['near_pairs']}, leakage across splits "
            f"{_pairs(d['duplicates']['leakage'])}.", "",
            "| split | images | defect-free | " +
            " | ".join(d["class_names"][1:]) + " |",
            "|---" * (3 + len(d["class_names"]) - 1) + "|"]
  for split, s in d["splits"].items():
    lines.append(f"| {split} | {s['images']} | {s['defect_free']} | " +
                 " | ".join(str(s["per_class"].get(c, 0))
                            for c in d["class_names"][1:]) + " |")
  fp = d["fingerprint"]
  area = fp.get("component_area") or {}
  lines += ["", f"Fingerprint (schema {fp['schema_version']}): height "
            f"{_range(fp['height'])}, width {_range(fp['width'])} px; "
            f"channels {_pairs(fp['channels'])}; bit depth "
            f"{_pairs(fp['bit_depth'])} (images); defect-free share "
            f"{_fmt(fp['empty_fraction'])}; defect component area (native "
            "px) p5 / p50 / p95 "
            f"{' / '.join(_fmt(area.get(k), 1) for k in ('p5', 'p50', 'p95'))}"
            ".", ""]
  lines += _training(card) + _evaluation(card) + _decision(card)
  lines += _robustness(card) + _gate(card) + _export(card)
  return "\n".join(lines) + "\n"


def _pairs(mapping: dict | None) -> str:
  if not mapping:
    return "n/a"
  return ", ".join(f"{k}: {v}" for k, v in mapping.items())


def _range(entry: dict | None) -> str:
  if not entry:
    return "n/a"
  return (f"{_fmt(entry.get('min'), 0)}-{_fmt(entry.get('max'), 0)} "
          f"(median {_fmt(entry.get('median'), 0)})")


def _reasons(d: dict) -> str:
  reasons = d["quarantined"]["reasons"]
  return ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "none"


def _training(card) -> list[str]:
  t = card["training"]
  lines = ["## Training config", "",
           f"{t.get('config', 'The config')}: its differences from the "
           f"template `{t['template']}` (the export's config digest "
           f"`{card['model']['config_sha256']}`):", "",
           "| key | value | template |", "|---|---|---|"]
  for key, entry in t["differences"].items():
    was = (f"`{entry['template']!r}`" if "template" in entry
           else "(not in the template)")
    lines.append(f"| `{key}` | `{entry['value']!r}` | {was} |")
  return lines + [""]


def _evaluation(card) -> list[str]:
  ev = card["evaluation"]
  lines = ["## Evaluation", "",
           f"Split `{ev['split']}`, {_fmt(ev['images'], 0)} images "
           f"({ev['defect_images']} with defects), checkpoint step "
           f"{ev['checkpoint_step']}; {ev['confidence']:.0%} percentile "
           f"bootstrap intervals over images ({ev['resamples']} resamples, "
           f"seed {ev['seed']}).", ""]
  if ev.get("note"):
    lines += [ev["note"], ""]
  if ev["figures"]:
    lines += ["| figure | value [interval] (n) |", "|---|---|"]
    for f in ev["figures"]:
      lines.append(f"| {LABELS.get(f['name'], f['name'])} | "
                   f"{_interval(f)} |")
    lines.append(f"| false-alarm rate | {_interval(ev['false_alarm'])} |")
    lines += ["", f"Size buckets (native px): tiny <= {ev['size_bounds'][0]}"
              f", large > {ev['size_bounds'][1]}; a bucket's figure is the "
              "share of true defect components found.", ""]
  return lines


def _decision(card) -> list[str]:
  dec = card["decision"]
  if not dec:
    return ["## Decision rule", "", "Argmax masks; no calibrated rule.", ""]
  return ["## Decision rule", "",
          f"`{json.dumps(dec['rule'])}`, calibrated on `{dec['chosen_on']}` "
          f"within a false-alarm budget of {_fmt(dec['false_alarm_budget'])}"
          f" (there: defect-image Dice "
          f"{_fmt(dec['on_chosen_split']['defect_image_dice'])}, false-alarm "
          f"rate {_fmt(dec['on_chosen_split']['false_alarm_rate'])}).", ""]


def _robustness(card) -> list[str]:
  r = card["robustness"]
  if not r:
    return ["## Robustness", "", "No robustness report of this checkpoint "
            "(--mode=robustness before --mode=export writes one).", ""]
  ensemble = (f" An ensemble with {len(r['members']) - 1} other member(s) "
              f"(" + ", ".join(f"{m['workdir']} step {m['step']}"
                               for m in r["members"][1:]) +
              f"): clean {_fmt(r['ensemble_clean'])}, "
              f"{_fmt(r['ensemble_gain'])} over its best member."
              if r["ensemble_gain"] is not None else "")
  lines = ["## Robustness", "",
           f"This checkpoint on {r['images']} {card['evaluation']['split']} "
           f"images: clean {r['metric']} {_fmt(r['clean'])}, mCE "
           f"{_fmt(r['mce'])} (corruption error relative to clean; 1 = no "
           f"worse).{ensemble}", ""]
  for c in r["worst_corruptions"]:
    lines.append(f"- corruption {c['name']} ({c['group']}): mean "
                 f"{_fmt(c['mean'])}, CE {_fmt(c['ce'])}")
  for a in r["worst_attacks"]:
    lines.append(f"- attack {a['name']} crafted on {a['crafted_on']}, "
                 f"epsilon {a['epsilon'] * 255:.1f}/255: {_fmt(a['value'])}")
  return lines + [""]


def _gate(card) -> list[str]:
  lines = ["## Regression gate and promotions", ""]
  if not card["gate"]:
    return lines + ["No gate has judged these parameters yet.", ""]
  for g in card["gate"]:
    if g["kind"] == "gate":
      p = g["primary"]
      vs = ("first deployment" if g["first_deploy"]
            else f"against {g['champion']}")
      delta = (f"; primary delta {p['delta']:+.4f} [{p['low']:+.4f}, "
               f"{p['high']:+.4f}]" if p and p.get("delta") is not None
               else "")
      lines.append(f"- {g['time']} gate {vs}: blessed {g['blessed']}"
                   f"{delta}")
      lines += [f"  - reason: {r}" for r in g["reasons"]]
      lines += [f"  - warning: {w}" for w in g["warnings"]]
    else:
      previous = "(none)" if g["previous"] is None else g["previous"]
      lines.append(f"- {g['time']} {g['kind']}: stable {previous} -> "
                   f"{g['version']}" + (f" (reason: {g['reason']})"
                                        if g.get("reason") else ""))
  return lines + [""]


def _export(card) -> list[str]:
  e, s = card["export"], card["stack"]
  diff = e["max_abs_logit_diff"]
  return ["## Export and stack", "",
          f"Verified SavedModel (max |logit difference| to JAX "
          f"{'n/a' if diff is None else f'{diff:.2e}'}"
          f" over {len(e['checks'])} checks), platforms {e['platforms']}, "
          f"XlaCallModule version {e['xla_call_module_version']}, buckets "
          f"{e['buckets']}, input {e['input_dtype']} x {e['channels']}.",
          "", f"Python {s['python']} on {s['platform']}; " +
          ", ".join(f"{k} {v}" for k, v in s["packages"].items() if v), ""]


def metrics_plot(card: dict) -> bytes:
  """The main plot: every figure with its interval."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  ev = card["evaluation"]
  rows = [(_plot_label(f["name"], ev.get("size_bounds")), f)
          for f in ev["figures"]]
  if ev.get("false_alarm"):
    rows.append(("false-alarm rate", ev["false_alarm"]))
  fig, ax = plt.subplots(figsize=(7.5, 0.42 * max(len(rows), 3) + 1.2))
  for y, (label, f) in enumerate(rows):
    if f.get("value") is None:
      ax.text(0.01, y, "n/a", va="center", fontsize=8)
      continue
    color = "tab:red" if label == "false-alarm rate" else "tab:blue"
    ax.errorbar(f["value"], y, xerr=[[f["value"] - f["low"]],
                                     [f["high"] - f["value"]]],
                fmt="o", color=color, capsize=3)
    ax.text(1.01, y, f"n={f['n']}", va="center", fontsize=7,
            transform=ax.get_yaxis_transform())
  budget = (card.get("decision") or {}).get("false_alarm_budget")
  if budget is not None and ev.get("false_alarm"):
    ax.plot([budget] * 2, [len(rows) - 1.4, len(rows) - 0.6], "r--", lw=1,
            label=f"false-alarm budget {budget:g} (calibration)")
    ax.legend(fontsize=7, loc="lower right")
  ax.set_xlabel("Dice (primary, classes); share of components found (size); "
                "rate (false alarms)", fontsize=8)
  ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
  ax.invert_yaxis()
  ax.set_xlim(0, 1)
  ax.grid(axis="x", alpha=0.3)
  m = card["model"]
  ax.set_title(f"{m['name']} v{m['version']} on {ev['split']}: "
               f"{ev['confidence']:.0%} bootstrap intervals", fontsize=9)
  fig.tight_layout()
  return overlays.figure_png(fig, dpi=100)


def _plot_label(name: str, bounds) -> str:
  if name.startswith("size ") and bounds:
    bucket = name[5:]
    limit = {"tiny": f"<= {bounds[0]:g} px", "large": f"> {bounds[1]:g} px",
             "small": f"{bounds[0]:g}-{bounds[1]:g} px"}[bucket]
    return f"size {bucket} ({limit})"
  return LABELS.get(name, name)


def data_plot(card: dict) -> bytes:
  """Images per split: defect-free and per defect class."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  d = card["data"]
  splits = list(d["splits"])  # train, val, test (model_card.data_section)
  names = ["defect-free"] + d["class_names"][1:]
  fig, ax = plt.subplots(figsize=(8.5, 2.8))
  width = 0.8 / len(names)
  for j, name in enumerate(names):
    values = [d["splits"][s]["defect_free"] if j == 0 else
              d["splits"][s]["per_class"].get(name, 0) for s in splits]
    ax.bar([i + j * width for i in range(len(splits))], values, width,
           label=name)
  ax.set_xticks([i + 0.4 - width / 2 for i in range(len(splits))], splits)
  ax.set_yscale("symlog")
  ax.set_ylabel("images")
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
  ax.set_title(f"{d['name']} ({d['dataset_hash'][:12]})", fontsize=9)
  fig.tight_layout()
  return overlays.figure_png(fig, dpi=100)


def html(card: dict, plots: dict[str, bytes]) -> str:
  """One self-contained page: the Markdown's content as HTML with the
  plots inlined (no external resources; every text escaped)."""
  body, open_block = [], None  # open_block: "table", "ul" or None.

  def close():
    nonlocal open_block
    if open_block:
      body.append(f"</{open_block}>")
    open_block = None

  def start(block):
    nonlocal open_block
    if open_block != block:
      close()
      body.append(f"<{block}>")
      open_block = block

  for line in markdown(card).split("---\n", 2)[2].splitlines():
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      if set("".join(cells)) <= set("-"):
        continue
      start("table")
      body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells)
                  + "</tr>")
    elif line.lstrip().startswith("- "):
      start("ul")
      sub = ' class="sub"' if line.startswith(" ") else ""
      body.append(f"<li{sub}>{_inline(line.lstrip()[2:])}</li>")
    else:
      close()
      if line.startswith("## "):
        title = line[3:]
        body.append(f"<h2>{html_lib.escape(title)}</h2>")
        figure = {"Data": "data.png", "Evaluation": "metrics.png"}.get(title)
        if figure in plots:
          data = base64.b64encode(plots[figure]).decode()
          body.append(f'<img alt="{figure}" src="data:image/png;base64,'
                      f'{data}">')
      elif line.startswith("# "):
        body.append(f"<h1>{html_lib.escape(line[2:])}</h1>")
      elif line:
        body.append(f"<p>{_inline(line)}</p>")
  close()
  title = html_lib.escape(f"{card['model']['name']} v"
                          f"{card['model']['version']}: model card")
  return ("<!doctype html><html><head><meta charset='utf-8'>"
          f"<title>{title}</title><style>body{{font-family:sans-serif;"
          "max-width:60em;margin:auto}td{border:1px solid #ccc;padding:2px "
          "6px;font-size:90%}table{border-collapse:collapse}img{max-width:"
          "100%}li.sub{margin-left:2em;list-style:circle}</style></head>"
          "<body>" + "\n".join(body) + "</body></html>\n")


def _inline(text: str) -> str:
  """Escaped text with Markdown's `code` and **bold**."""
  out = html_lib.escape(text)
  parts = out.split("`")
  out = "".join(f"<code>{p}</code>" if i % 2 else p
                for i, p in enumerate(parts))
  parts = out.split("**")
  return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def write(directory: str | Path, card: dict) -> Path:
  """Writes FILES (and data.png) into `directory`; returns the HTML path."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  plots = {"metrics.png": metrics_plot(card), "data.png": data_plot(card)}
  atomic.write_json(directory / "model_card.json", card)
  atomic.write_bytes(directory / "MODEL_CARD.md", markdown(card).encode())
  for name, png in plots.items():
    atomic.write_bytes(directory / name, png)
  page = directory / "model_card.html"
  atomic.write_bytes(page, html(card, plots).encode())
  return page


def refresh(directory: str | Path, records: list[dict],
            human: dict | None = None) -> Path:
  """Re-renders the card in `directory` with the ledger's current records
  about its parameters (and `human`, when given); nothing else changes.

  Raises:
    model_card.CardError: no card there, or of another schema.
  """
  directory = Path(directory)
  card = model_card.read(directory / "model_card.json")
  card["gate"] = model_card.gate_section(records,
                                         card["model"]["params_sha256"])
  if human is not None:
    card["human"] = human
  return write(directory, card)
