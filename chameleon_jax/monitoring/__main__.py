"""`python -m chameleon_jax.monitoring`: the monitor as a sidecar process.

  python -m chameleon_jax.monitoring --model_base_path=BASE --log=LOG \\
      [--window=50 --stride=50 --alpha=0.01 --permutations=1999 --port=9090 \\
       --poll_seconds=10 --report_dir=DIR --once]

Serves its Prometheus gauges (monitor.py) on 0.0.0.0:--port at /metrics
(--port=0: none) and tests each complete window as the log grows; with
--once it reads the log to its end, tests the last partial window when it
holds the tests' minimum, prints one line per window and exits (1 when a
window drifted).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import prometheus_client as prom

from chameleon_jax.monitoring import drift
from chameleon_jax.monitoring.monitor import Monitor


def _line(v: dict) -> str:
  fired = [f"{t['test']}:{t['statistic']} p={t['p_value']:.2g}"
           for t in v["tests"] if t["alarm"]]
  moved = ", ".join(m[0] for m in v["top_moved"])
  return (f"{v['model']}/{v['version']} window {v['name']}: "
          f"{'DRIFT ' + '; '.join(fired) if v['drift'] else 'no drift'} "
          f"(moved most: {moved})")


def main(argv=None) -> int:
  """Runs the monitor (module docstring); returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model_base_path", required=True)
  parser.add_argument("--log", required=True,
                      help="the server's --request_log file")
  parser.add_argument("--window", type=int, default=50,
                      help="images per window")
  parser.add_argument("--stride", type=int, default=0,
                      help="images between window starts (0 = --window: "
                      "tumbling windows)")
  parser.add_argument("--alpha", type=float, default=drift.Settings.alpha,
                      help="no-drift windows alarm at most at this rate")
  parser.add_argument("--permutations", type=int,
                      default=drift.Settings.permutations)
  parser.add_argument("--min_images", type=int,
                      default=drift.Settings.min_images)
  parser.add_argument("--port", type=int, default=9090,
                      help="Prometheus /metrics port (0 = none)")
  parser.add_argument("--poll_seconds", type=float, default=10.0)
  parser.add_argument("--report_dir", default="",
                      help="windows.jsonl and report.html ('' = beside the "
                      "log, monitor/)")
  parser.add_argument("--once", action="store_true",
                      help="read the log to its end, test, exit")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  try:
    settings = drift.Settings(alpha=args.alpha,
                              permutations=args.permutations,
                              min_images=args.min_images)
    monitor = Monitor(args.model_base_path, args.log, args.window,
                      args.stride, settings, args.report_dir or None)
  except ValueError as e:
    print(f"monitor: {e}", file=sys.stderr)
    return 2
  if args.port:
    prom.start_http_server(args.port, registry=monitor.gauges.registry)
  if args.once:
    verdicts = monitor.finish()
    for v in verdicts:
      print(_line(v), flush=True)
    for reason, n in sorted(monitor.skipped.items()):
      print(f"skipped {n} events: {reason}", flush=True)
    return int(any(v["drift"] for v in verdicts))
  while True:
    for v in monitor.poll():
      print(_line(v), flush=True)
    time.sleep(args.poll_seconds)


if __name__ == "__main__":
  sys.exit(main())
