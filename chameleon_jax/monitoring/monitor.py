"""The monitor: the request log's windows tested against each version's
reference, as Prometheus gauges, a window ledger and an HTML report.

  python -m chameleon_jax.monitoring --model_base_path=BASE --log=LOG \\
      [--window=50 --stride=50 --alpha=0.01 --port=9090 --poll_seconds=10
       --once]

Events are grouped by (model, version); `window` events of a version form
a window, a new one every `stride` events (tumbling by default), tested
against that version's reference (read from
`BASE/<model>/<version>/assets.extra/monitoring/reference.json`) by
`drift.evaluate`. Events that cannot be tested are skipped with a counted
reason (`chameleon_monitor_skipped_events_total{reason}`), never taken as
"no drift": an unreadable line, another event type, a version without a
reference, and, at the end of `--once`, a last window under
`min_images`. Each window's verdict is appended to
`<report_dir>/windows.jsonl` and the HTML report rewritten.

Gauges (labels model, version; `test` is a drift.FAMILIES member):

  chameleon_monitor_drift                      1 when the last window drifted
  chameleon_monitor_test_p_value{test}         the last window's p-values
  chameleon_monitor_test_statistic{test}       ... statistics (KS D, MMD²,
                                               alarm rate)
  chameleon_monitor_test_threshold{test}       ... and the levels they met
  chameleon_monitor_drift_alarm{test, statistic, threshold, window,
      top_moved}                               present while the last window's
                                               test alarms; value = p-value
                                               (what an alert says why with)
  chameleon_monitor_warning{test, statistic, threshold, window}
                                               confidence drift, false alarms
                                               estimated above the budget
  chameleon_monitor_alarm_rate, _reference_alarm_rate,
  _estimated_false_alarm_rate, _false_alarm_budget
  chameleon_monitor_window_images, _last_window_timestamp_seconds
  chameleon_monitor_windows_total{verdict}     windows tested
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter, deque
from pathlib import Path

import prometheus_client as prom

from chameleon_jax.monitoring import drift, events
from chameleon_jax.monitoring import reference as reference_lib
from chameleon_jax.monitoring import report as report_lib

LABELS = ("model", "version")
REPORTED = 200  # windows listed in the HTML report


class Gauges:
  """The monitor's Prometheus metrics (their own registry)."""

  def __init__(self):
    self.registry = r = prom.CollectorRegistry()
    g = lambda name, doc, extra=(): prom.Gauge(  # noqa: E731
        f"chameleon_monitor_{name}", doc, LABELS + tuple(extra), registry=r)
    self.drift = g("drift", "1 when the last window drifted (any test).")
    self.p_value = g("test_p_value", "The last window's p-value.", ["test"])
    self.statistic = g("test_statistic", "The last window's test statistic "
                       "(KS distance, MMD², alarm rate).", ["test"])
    self.threshold = g("test_threshold", "The level the p-value is held to "
                       "(Bonferroni-divided for KS families).", ["test"])
    self.alarm = g("drift_alarm", "Present while the last window's test "
                   "alarms; the value is its p-value.",
                   ["test", "statistic", "threshold", "window", "top_moved"])
    self.warning = g("warning", "Present while the last window warns "
                     "(confidence drift, estimated false alarms over budget); "
                     "the value is the statistic.",
                     ["test", "statistic", "threshold", "window"])
    self.alarm_rate = g("alarm_rate", "The last window's alarm rate.")
    self.reference_alarm_rate = g("reference_alarm_rate", "The reference's "
                                  "alarm rate.")
    self.false_alarms = g("estimated_false_alarm_rate", "False alarms among "
                          "defect-free images, estimated without labels.")
    self.budget = g("false_alarm_budget", "The calibrated rule's "
                    "false-alarm budget.")
    self.images = g("window_images", "Images in the last window.")
    self.last = g("last_window_timestamp_seconds", "When the last window "
                  "was tested (Unix time).")
    self.windows = prom.Counter("chameleon_monitor_windows", "Windows "
                                "tested.", LABELS + ("verdict",), registry=r)
    self.skipped = prom.Counter("chameleon_monitor_skipped_events", "Events "
                                "not tested, by reason.", ["reason"],
                                registry=r)
    self._shown: dict[tuple, list] = {}

  def show(self, model: str, version: int, name: str, verdict: dict) -> None:
    labels = (model, str(version))
    for gauge, key in self._shown.pop(labels, ()):  # this window's only
      gauge.remove(*key)
    shown = self._shown[labels] = []
    self.drift.labels(*labels).set(float(verdict["drift"]))
    moved = ", ".join(f"{m[0]} {m[2]:.4g}->{m[3]:.4g}"
                      for m in verdict["top_moved"])
    for t in verdict["tests"]:
      self.p_value.labels(*labels, t["test"]).set(t["p_value"])
      self.statistic.labels(*labels, t["test"]).set(t["value"])
      self.threshold.labels(*labels, t["test"]).set(t["threshold"])
      if t["alarm"]:
        key = (*labels, t["test"], t["statistic"], f"{t['threshold']:.3g}",
               name, moved)
        self.alarm.labels(*key).set(t["p_value"])
        shown.append((self.alarm, key))
    for w in verdict["warnings"]:
      key = (*labels, w["test"], w["statistic"], f"{w['threshold']:.3g}",
             name)
      self.warning.labels(*key).set(w["value"])
      shown.append((self.warning, key))
    self.alarm_rate.labels(*labels).set(verdict["alarm_rate"])
    self.reference_alarm_rate.labels(*labels).set(
        verdict["reference_alarm_rate"])
    if verdict["estimated_false_alarm_rate"] is not None:
      self.false_alarms.labels(*labels).set(
          verdict["estimated_false_alarm_rate"])
    if verdict["false_alarm_budget"] is not None:
      self.budget.labels(*labels).set(verdict["false_alarm_budget"])
    self.images.labels(*labels).set(verdict["images"])
    self.last.labels(*labels).set(time.time())
    self.windows.labels(*labels, "drift" if verdict["drift"]
                        else "no drift").inc()


@dataclasses.dataclass
class Monitor:
  """Reads the log, tests complete windows, shows and records verdicts.

  Attributes:
    model_base_path: the served base path (references per version).
    log: the request log (events.py).
    window: images per window.
    stride: images between the starts of two windows (= window: tumbling
      windows; smaller: sliding windows that overlap, tested more often).
    settings: the tests' levels (drift.Settings).
    report_dir: windows.jsonl and report.html ("" = <log dir>/monitor).
  """
  model_base_path: Path
  log: Path
  window: int = 50
  stride: int = 0  # 0 = window
  settings: drift.Settings = drift.Settings()
  report_dir: Path | None = None

  def __post_init__(self):
    self.model_base_path, self.log = Path(self.model_base_path), Path(self.log)
    if self.window < self.settings.min_images:
      raise ValueError(f"window={self.window} is smaller than the tests' "
                       f"min_images={self.settings.min_images}")
    self.stride = self.stride or self.window
    if not 0 < self.stride <= self.window:
      raise ValueError(f"stride={self.stride}: expected 1 to the window "
                       f"({self.window})")
    self.report_dir = Path(self.report_dir or self.log.parent / "monitor")
    self.fresh: Counter = Counter()  # pending events not yet in a window
    self.reader = events.Reader(self.log)
    self.gauges = Gauges()
    self.skipped: Counter = Counter()
    self.pending: dict[tuple[str, int], list[dict]] = {}
    self.counts: Counter = Counter()
    self._references: dict[tuple[str, int], object] = {}
    # The report's table: the latest windows (all are in windows.jsonl).
    self.verdicts: deque = deque(maxlen=REPORTED)
    self._drifted = None  # (verdict, reference, rows) of the last drift

  def reference(self, model: str, version: int):
    """The version's reference, or the ProfileError met reading it."""
    key = (model, version)
    if key not in self._references:
      try:
        self._references[key] = reference_lib.load(
            self.model_base_path / model / str(version))
      except reference_lib.ProfileError as e:
        logging.warning("%s/%s: events skipped: %s", model, version, e)
        self._references[key] = e
    return self._references[key]

  def _skip(self, reason: str, n: int = 1) -> None:
    self.skipped[reason] += n
    self.gauges.skipped.labels(reason).inc(n)

  def poll(self) -> list[dict]:
    """Reads new events and tests every complete window; returns the new
    verdicts."""
    before = Counter(self.reader.skipped)
    for event in self.reader.read():
      key = (event["model"], event["version"])
      if isinstance(self.reference(*key), Exception):
        self._skip("no reference profile for the version")
        continue
      self.pending.setdefault(key, []).append(event)
      self.fresh[key] += 1
    for reason, n in (self.reader.skipped - before).items():
      self._skip(reason, n)
    new = []
    for key, rows in self.pending.items():
      while len(rows) >= self.window:
        new.append(self._test(key, rows[:self.window]))
        self.fresh[key] = len(rows) - self.window
        del rows[:self.stride]
    return new

  def finish(self) -> list[dict]:
    """At the end of the log: the last, partial windows are tested when
    they hold `min_images`, else skipped with a counted reason."""
    new = self.poll()
    for key, rows in self.pending.items():
      if self.fresh[key] and len(rows) >= self.settings.min_images:
        new.append(self._test(key, rows))
      elif self.fresh[key]:
        self._skip("window smaller than min_images", self.fresh[key])
      rows.clear()
      self.fresh[key] = 0
    return new

  def _test(self, key: tuple[str, int], rows: list[dict]) -> dict:
    model, version = key
    index = self.counts[key]
    self.counts[key] += 1
    name = (f"#{index} ({len(rows)} images, {rows[0].get('time')} to "
            f"{rows[-1].get('time')})")
    verdict = drift.evaluate(self.reference(*key), rows,
                             dataclasses.replace(self.settings,
                                                 seed=self.settings.seed + index))
    verdict.update({"model": model, "version": version, "window": index,
                    "name": name, "first": rows[0].get("time"),
                    "last": rows[-1].get("time"),
                    "samples": [r["sample"] for r in rows if r.get("sample")]})
    self.gauges.show(model, version, name, verdict)
    self.report_dir.mkdir(parents=True, exist_ok=True)
    with open(self.report_dir / "windows.jsonl", "a", encoding="utf-8") as f:
      f.write(json.dumps(verdict) + "\n")
    self.verdicts.append(verdict)
    latest = (verdict, self.reference(*key), list(rows))
    if verdict["drift"]:
      self._drifted = latest
    report_lib.write(self.report_dir / "report.html", self.verdicts, latest,
                     self._drifted, self.log.parent, dict(self.skipped))
    return verdict
