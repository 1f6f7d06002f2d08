"""Reads checkov's JSON report (stdin) and decides: exit 1 on any failed
check not in the reviewed baseline, on any parse error, or when nothing was
scanned (checkov itself exits 0 on files it cannot parse).

  checkov --skip-download -d infra/terraform --framework terraform -o json | \
      python infra/checks/checkov_gate.py infra/terraform/.checkov.baseline

The baseline is checkov's own format (`--create-baseline`), applied here
rather than with checkov's --baseline, which reports an empty summary (no
resources, no parse errors) whenever every finding is baselined.
"""

from __future__ import annotations

import json
import sys


def accepted(baseline: dict) -> set[tuple[str, str, str]]:
  """(file, resource, check id) findings reviewed and accepted."""
  return {(f["file"], finding["resource"], check)
          for f in baseline.get("failed_checks", [])
          for finding in f["findings"] for check in finding["check_ids"]}


def problems(report, baseline: dict) -> list[str]:
  """What fails the gate: parse errors, and findings not in the baseline."""
  reports = report if isinstance(report, list) else [report]
  known = accepted(baseline)
  found = []
  scanned = 0
  for r in reports:
    summary = r.get("summary", {})
    scanned += summary.get("resource_count", 0)
    if summary.get("parsing_errors"):
      found.append(f"{summary['parsing_errors']} file(s) could not be parsed: "
                   f"{r.get('results', {}).get('parsing_errors', [])}")
    for check in r.get("results", {}).get("failed_checks", []):
      if (check["file_path"], check["resource"], check["check_id"]) in known:
        continue
      found.append(f"{check['check_id']} {check['check_name']}: "
                   f"{check['resource']} ({check['file_path']})")
  if not scanned:
    found.append("checkov scanned no resources (wrong directory or nothing "
                 "parsed).")
  return found


def main(argv: list[str]) -> int:
  """`checkov_gate.py BASELINE < report.json`: exit 1 on any problem."""
  if len(argv) != 1:
    print("usage: checkov ... -o json | checkov_gate.py BASELINE")
    return 2
  with open(argv[0]) as f:
    baseline = json.load(f)
  text = sys.stdin.read()
  try:
    report = json.loads(text)
  except json.JSONDecodeError:
    print(f"checkov did not produce a JSON report:\n{text[-2000:]}")
    return 1
  found = problems(report, baseline)
  for line in found:
    print(f"checkov: {line}")
  print(f"checkov gate: {'FAILED' if found else 'passed'}")
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
