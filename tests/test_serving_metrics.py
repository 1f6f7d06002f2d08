"""The stand-in's metrics page against TF Serving's definitions.

The names, labels, units and buckets come from ../shared/reference/
serving.md where it states them; the facts it does not state are written
here with the TF Serving source they were read from.
"""

import re
from pathlib import Path

import pytest

from export import serving_metrics
from export.serving_metrics import Histogram, ServingMetrics

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/serving.md"

# Facts beyond serving.md, from TF Serving's sources:
# model_servers/prediction_service_impl.cc: RecordRequestLatency(name,
#   /*api=*/"Predict", /*entrypoint=*/"GRPC", ...) on success only;
#   RecordModelRequestCount(name, status) always, status = Code_Name.
# servables/tensorflow/predict_util.cc: RecordRuntimeLatency(name,
#   /*api=*/"Predict", /*runtime=*/"TF1", ...).
# servables/tensorflow/util.cc: request_example_counts has the label "model"
#   and Buckets::Exponential(1, 2, 15).
# util/prometheus_exporter.cc: "# TYPE <name> <type>" (no HELP), counters
#   "<name>{labels} <int>", histograms cumulative _bucket{...,le="<limit>"}
#   with the last as "+Inf", then _sum and _count; names with "/" -> ":".
EXTRA = {
    ":tensorflow:serving:request_example_counts": (("model",), (1, 2, 15)),
}


def _reference_metrics() -> dict[str, tuple[tuple[str, ...], str]]:
  """{prometheus name: (labels, bucket text)} as serving.md states them."""
  if not REFERENCE.is_file():
    pytest.skip(f"{REFERENCE} is not here (../shared is absent)")
  items, found = [], {}
  for line in REFERENCE.read_text().splitlines():  # Bullets, continued.
    if re.match(r"\s*- ", line):
      items.append(line.strip())
    elif items and line.startswith("    "):
      items[-1] += " " + line.strip()
  for item in items:
    match = re.match(r"- `(/tensorflow/serving/\w+)`,? (.*)", item)
    if match:
      stated = re.search(r"labels ((?:`\w+`(?:, )?)+)", match[2])
      labels = re.findall(r"`(\w+)`", stated[1]) if stated else []
      found[match[1].replace("/", ":")] = (tuple(labels), match[2])
  return found


def test_names_labels_and_units_are_tf_servings():
  reference = _reference_metrics()
  metrics = ServingMetrics()
  ours = {m.name: m for m in (metrics.request_count, metrics.request_latency,
                              metrics.runtime_latency,
                              metrics.request_example_counts)}
  assert set(ours) == set(reference)
  for name, (labels, _) in reference.items():
    if name in EXTRA:  # serving.md names it without its label.
      labels = EXTRA[name][0]
    assert ours[name].labelnames == labels, name
  # Both latencies: microseconds, Exponential(10, 1.8, 33), as stated.
  latency = reference[":tensorflow:serving:request_latency"][1]
  assert "microseconds" in latency
  assert "Exponential(scale 10, growth 1.8, count 33)" in latency
  assert "same unit and buckets" in reference[
      ":tensorflow:serving:runtime_latency"][1]
  for metric in (metrics.request_latency, metrics.runtime_latency):
    assert metric.limits == tuple(10 * 1.8 ** i for i in range(33))
  scale, growth, count = EXTRA[":tensorflow:serving:request_example_counts"][1]
  assert metrics.request_example_counts.limits == tuple(
      scale * growth ** i for i in range(count))


def test_page_is_printed_as_tf_serving_prints_it():
  metrics = ServingMetrics()
  metrics.request("m", "OK", "GRPC", 0.000_010)  # 10 us: the second bucket.
  metrics.request("m", "OK", "GRPC", 0.002_5)
  metrics.request("m", "INVALID_ARGUMENT", "GRPC", 0.5)  # Not a latency.
  metrics.runtime("m", 0.002)
  lines = metrics.page().splitlines()
  assert [l for l in lines if l.startswith("# TYPE")] == [
      "# TYPE :tensorflow:serving:request_count counter",
      "# TYPE :tensorflow:serving:request_example_counts histogram",
      "# TYPE :tensorflow:serving:request_latency histogram",
      "# TYPE :tensorflow:serving:runtime_latency histogram"]
  assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 2' \
      in lines
  assert (':tensorflow:serving:request_count{model_name="m",'
          'status="INVALID_ARGUMENT"} 1') in lines
  assert not any("_total" in l or "HELP" in l for l in lines)
  prefix = (':tensorflow:serving:request_latency_bucket{model_name="m",'
            'API="Predict",entrypoint="GRPC",')
  buckets = [l for l in lines if l.startswith(prefix)]
  assert len(buckets) == 34 and buckets[-1] == prefix + 'le="+Inf"} 2'
  # 10 us is not below the limit 10: it counts from the "18" bucket on.
  assert buckets[0] == prefix + 'le="10"} 0'
  assert buckets[1] == prefix + 'le="18"} 1'
  assert prefix + 'le="1983.59"} 1' in buckets  # 10 * 1.8^9, 6 digits.
  assert prefix + 'le="3570.47"} 2' in buckets  # 2,500 us below 1.8^10.
  assert (':tensorflow:serving:request_latency_sum{model_name="m",'
          'API="Predict",entrypoint="GRPC"} 2510') in lines
  assert (':tensorflow:serving:request_latency_count{model_name="m",'
          'API="Predict",entrypoint="GRPC"} 2') in lines
  assert (':tensorflow:serving:runtime_latency_count{model_name="m",'
          'API="Predict",runtime="TF1"} 1') in lines
  # Predict records no example counts: the TYPE line alone.
  assert not any(l.startswith(":tensorflow:serving:request_example_counts_")
                 for l in lines)


def test_label_values_are_escaped_and_sums_printed_with_six_digits():
  histogram = Histogram("h", ("model",), (1.0,))
  histogram.observe(1234567.0, 'a"b\\c')
  lines = histogram.lines()
  assert lines[1] == 'h_bucket{model="a\\"b\\\\c",le="1"} 0'
  assert lines[-2] == 'h_sum{model="a\\"b\\\\c"} 1.23457e+06'
  assert serving_metrics._number(58.32) == "58.32"
