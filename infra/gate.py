"""Thresholds on an evaluation's metrics: the pipeline's stop signal.

  python -m infra.gate eval/test_metrics.json --min defect_image_dice=0.5 \
      --max false_alarm_rate=0.2

Exit status 1, naming each metric, its value and its bound, when any bound
fails or a metric is missing or not finite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def _bounds(pairs: list[str], flag: str) -> dict[str, float]:
  out = {}
  for pair in pairs:
    name, sep, value = pair.partition("=")
    try:
      out[name] = float(value)
    except ValueError:
      sep = ""
    if not sep or not name:
      raise SystemExit(f"{flag} {pair!r}: expected METRIC=NUMBER.")
  return out


def check(metrics: dict, minimum: dict[str, float],
          maximum: dict[str, float]) -> list[str]:
  """Bound violations of `metrics` (each named with its value and bound)."""
  failures = []
  bounds = ([(n, ">=", b) for n, b in minimum.items()] +
            [(n, "<=", b) for n, b in maximum.items()])
  for name, side, bound in bounds:
    value = metrics.get(name)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
      failures.append(f"{name}: {value!r} is not a finite number "
                      f"(needs {side} {bound}).")
    elif (value < bound) if side == ">=" else (value > bound):
      failures.append(f"{name} = {value:.4f}, needs {side} {bound}.")
  return failures


def main(argv: list[str]) -> int:
  """`python -m infra.gate METRICS.json --min k=v --max k=v`: exit 1 on a
  violation or a missing metric.
  """
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("metrics", help="A metrics JSON written by --mode=eval.")
  parser.add_argument("--min", action="append", default=[])
  parser.add_argument("--max", action="append", default=[])
  args = parser.parse_args(argv)
  with open(args.metrics) as f:
    metrics = json.load(f)
  failures = check(metrics, _bounds(args.min, "--min"),
                   _bounds(args.max, "--max"))
  for line in failures:
    print(f"gate: {args.metrics}: {line}")
  print(f"gate: {'FAILED' if failures else 'passed'}")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
