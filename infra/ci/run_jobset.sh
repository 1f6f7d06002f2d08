#!/usr/bin/env bash
# Applies a rendered JobSet manifest and waits for it: exit 0 when the
# JobSet is Completed, 1 (with the pods' last logs) when it Failed (its
# restarts exhausted) or the timeout passed.
#   infra/ci/run_jobset.sh out/render/gke-gpu/train.yaml 36000
set -euo pipefail
manifest="$1"; timeout_s="${2:-3600}"
name=$(python3 -c "import sys, yaml; print(next(o for o in yaml.safe_load_all(open(sys.argv[1])) if o)['metadata']['name'])" "$manifest")
namespace=$(python3 -c "import sys, yaml; print(next(o for o in yaml.safe_load_all(open(sys.argv[1])) if o)['metadata']['namespace'])" "$manifest")
kubectl -n "$namespace" delete jobset "$name" --ignore-not-found --wait=true
kubectl apply -f "$manifest"
deadline=$(( $(date +%s) + timeout_s ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  state=$(kubectl -n "$namespace" get jobset "$name" -o jsonpath='{.status.terminalState}')
  case "$state" in
    Completed) echo "$name: Completed"; exit 0 ;;
    Failed)
      echo "$name: Failed" >&2
      kubectl -n "$namespace" logs -l "jobset.sigs.k8s.io/jobset-name=$name" --tail=200 --prefix >&2 || true
      exit 1 ;;
  esac
  sleep 30
done
echo "$name: still running after ${timeout_s}s" >&2
exit 1
