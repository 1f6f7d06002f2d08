#!/usr/bin/env bash
# Policy checks of infra/terraform with checkov, against the reviewed
# baseline (infra/terraform/.checkov.baseline; reasons in infra/README.md).
# checkov gets its own pinned venv (.venv-checkov). Fails on a new finding,
# on a parse error (checkov alone would exit 0) and, as a self-test, unless
# a deliberately broken file is reported.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv-checkov/bin/checkov ]; then
  "$PYTHON" -m venv .venv-checkov
  .venv-checkov/bin/pip install -q -r infra/checks/checkov.lock
fi
scan() {
  .venv-checkov/bin/checkov --skip-download --framework terraform -d "$1" \
      -o json || true
}
gate() { "$PYTHON" infra/checks/checkov_gate.py infra/terraform/.checkov.baseline; }
scan infra/terraform | gate
broken="$(mktemp -d)"
trap 'rm -rf "$broken"' EXIT
cp -r infra/terraform/. "$broken"
printf 'resource "google_storage_bucket" "x" {\n  name = \n' > "$broken/modules/gke/broken.tf"
if scan "$broken" | gate > "$broken/gate.log"; then
  echo "checkov gate self-test: a parse error was NOT reported" >&2
  exit 1
fi
grep -q "could not be parsed" "$broken/gate.log"
echo "checkov gate self-test: parse errors are reported"
