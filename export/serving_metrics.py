"""TF Serving's own metrics, counted and printed as TF Serving prints them.

Dashboards and alerts written against the stand-in server must work
unchanged on the official TF Serving image, so the stand-in keeps TF
Serving's metric names, labels, units and bucket layout, and prints its
Prometheus page the way TF Serving's exporter does. The facts, from TF
Serving's sources (tensorflow_serving/servables/tensorflow/util.cc,
model_servers/prediction_service_impl.cc, servables/tensorflow/
predict_util.cc, util/prometheus_exporter.cc; ../shared/reference/
serving.md):

  :tensorflow:serving:request_count{model_name, status}  counter; every
      Predict, status the gRPC code's name ("OK", "INVALID_ARGUMENT", ...).
  :tensorflow:serving:request_latency{model_name, API, entrypoint}
      histogram of wall time in microseconds, successful requests only;
      API "Predict", entrypoint "GRPC".
  :tensorflow:serving:runtime_latency{model_name, API, runtime}
      histogram, microseconds, of the model run alone; API "Predict",
      runtime "TF1" (the SavedModel session runtime; "TFRT" is the other).
  both latency histograms: limits 10 * 1.8^i, i < 33 (~20 minutes), then
      +Inf; a bucket counts values below its limit.
  :tensorflow:serving:request_example_counts{model}  histogram of
      tf.Examples per request, limits 2^i, i < 15; recorded by Classify,
      Regress and MultiInference only, so a Predict-only server prints its
      TYPE line and no samples.
  The page: per metric, in name order, "# TYPE <name> <counter|histogram>"
  (no HELP line), then one line per label set in label order; counters as
  "<name>{labels} <int>" (no "_total" suffix), histograms as cumulative
  "<name>_bucket{labels,le="<limit>"}", then "_sum" and "_count"; numbers
  as C++ absl::StrCat prints doubles (6 significant digits).

Not a fact but the stand-in's choice: a REST predict is counted like a
gRPC one with entrypoint "REST" (the TF Serving sources read here record
REST requests in runtime_latency only).

prometheus_client is not used for this page: its text format appends
`_total` and `_created` to counters and adds HELP lines, so
`:tensorflow:serving:request_count` would be renamed. It still serves the
stand-in's own metrics (server.py), appended after TF Serving's.
"""

from __future__ import annotations

import bisect
import threading

LATENCY_LIMITS_US = tuple(10 * 1.8 ** i for i in range(33))
EXAMPLE_COUNT_LIMITS = tuple(2.0 ** i for i in range(15))


def _number(value: float) -> str:
  """A double as absl::StrCat prints it (6 significant digits)."""
  return f"{value:.6g}"


def _labels(names, values) -> list[str]:
  """name="value" pairs, backslash and double quote escaped."""
  return ['{}="{}"'.format(n, str(v).replace("\\", "\\\\").replace('"', '\\"'))
          for n, v in zip(names, values)]


class Counter:
  """A counter with label names, as a TF monitoring::Counter."""

  def __init__(self, name: str, labelnames: tuple[str, ...]):
    self.name, self.labelnames = name, labelnames
    self._values: dict[tuple[str, ...], int] = {}
    self._lock = threading.Lock()

  def inc(self, *labels: str, by: int = 1) -> None:
    with self._lock:
      self._values[labels] = self._values.get(labels, 0) + by

  def lines(self) -> list[str]:
    out = [f"# TYPE {self.name} counter"]
    with self._lock:
      for labels, value in sorted(self._values.items()):
        out.append(f"{self.name}{{{','.join(_labels(self.labelnames, labels))}}}"
                   f" {value:d}")
    return out


class Histogram:
  """A histogram with label names and explicit limits, as a TF monitoring::
  Sampler: bucket i counts values in [limit[i-1], limit[i]); the last
  bucket, past the limits, prints as +Inf."""

  def __init__(self, name: str, labelnames: tuple[str, ...],
               limits: tuple[float, ...]):
    self.name, self.labelnames, self.limits = name, labelnames, limits
    self._cells: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
    self._lock = threading.Lock()

  def observe(self, value: float, *labels: str) -> None:
    with self._lock:
      counts, total = self._cells.setdefault(
          labels, ([0] * (len(self.limits) + 1), [0.0]))
      counts[bisect.bisect_right(self.limits, value)] += 1
      total[0] += value

  def lines(self) -> list[str]:
    out = [f"# TYPE {self.name} histogram"]
    with self._lock:
      for labels, (counts, total) in sorted(self._cells.items()):
        names = _labels(self.labelnames, labels)
        prefix = f"{self.name}_bucket{{" + "".join(n + "," for n in names)
        cumulative = 0
        for i, count in enumerate(counts):
          cumulative += count
          limit = (_number(self.limits[i]) if i < len(self.limits)
                   else "+Inf")
          out.append(f'{prefix}le="{limit}"}} {cumulative}')
        out.append(f"{self.name}_sum{{{','.join(names)}}} {_number(total[0])}")
        out.append(f"{self.name}_count{{{','.join(names)}}} {cumulative}")
    return out


class ServingMetrics:
  """The metrics TF Serving keeps for Predict (module docstring)."""

  def __init__(self):
    self.request_count = Counter(":tensorflow:serving:request_count",
                                 ("model_name", "status"))
    self.request_example_counts = Histogram(
        ":tensorflow:serving:request_example_counts", ("model",),
        EXAMPLE_COUNT_LIMITS)
    self.request_latency = Histogram(
        ":tensorflow:serving:request_latency",
        ("model_name", "API", "entrypoint"), LATENCY_LIMITS_US)
    self.runtime_latency = Histogram(
        ":tensorflow:serving:runtime_latency", ("model_name", "API", "runtime"),
        LATENCY_LIMITS_US)

  def request(self, model_name: str, status: str, entrypoint: str,
              seconds: float) -> None:
    """One Predict request ended with `status` after `seconds`."""
    self.request_count.inc(model_name, status)
    if status == "OK":
      self.request_latency.observe(round(seconds * 1e6), model_name,
                                   "Predict", entrypoint)

  def runtime(self, model_name: str, seconds: float) -> None:
    """One model run (batched or not) took `seconds`."""
    self.runtime_latency.observe(round(seconds * 1e6), model_name, "Predict",
                                 "TF1")

  def page(self) -> str:
    """The Prometheus text TF Serving's exporter prints (name order)."""
    metrics = sorted((self.request_count, self.request_example_counts,
                      self.request_latency, self.runtime_latency),
                     key=lambda m: m.name)
    return "\n".join(line for m in metrics for line in m.lines()) + "\n"
