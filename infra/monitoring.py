"""The monitor in the cluster: its Deployment and Service, and the alerts.

  monitor Deployment   one pod of the training image running
                       `python -m chameleon_jax.monitoring` over the shared
                       volume: the models (references per version) and the
                       request log at LOG_DIR/<deployment>/requests.jsonl,
                       its report and window ledger beside the log
  Service              the monitor's /metrics port, annotated for scraping
  PrometheusRule       (monitoring.coreos.com/v1, the Prometheus Operator's
                       kind) the alert rules of `rule_groups`; a Prometheus
                       without the operator loads `rule_groups` as a plain
                       rules file (`promtool check rules` passes it)

The official TF Serving image writes no request log; in the cluster the
log is written by whatever logs the requests (a CloudEvents sink behind
KServe's payload logger, a proxy; chameleon_jax/monitoring/events.py says
the format). The stand-in server writes it itself (`--request_log`).

Alerts (each names the test, the statistic, its threshold, the window, the
model version and the statistics that moved most, from the gauges' labels):

  ChameleonDrift                a window's test alarmed (page)
  ChameleonFalseAlarmsOverBudget  the label-free estimate of false alarms
                                is above the calibrated budget (ticket)
  ChameleonConfidenceDrift      the model's confidence moved (ticket)
  ChameleonMonitorSilent        no window tested for SILENT_SECONDS (ticket):
                                no traffic, or a log nobody writes
"""

from __future__ import annotations

from infra import manifests
from infra import targets as targets_lib
from infra.targets import Target

PORT = 9090
LOG_DIR = f"{manifests.SHARED}/logs"
RULE_API = "monitoring.coreos.com/v1"
SILENT_SECONDS = 6 * 3600  # a line with traffic tests a window far sooner

_WHY = ("Window {{ $labels.window }} of {{ $labels.model }} version "
        "{{ $labels.version }}: ")


def rule_groups(model_name: str) -> list[dict]:
  """The Prometheus alerting rules of one served model (a rules file's
  `groups`)."""
  model = f'model="{model_name}"'
  return [{"name": f"chameleon-monitoring-{model_name}", "rules": [
      {"alert": "ChameleonDrift",
       "expr": f"chameleon_monitor_drift_alarm{{{model}}}",
       "labels": {"severity": "page"},
       "annotations": {
           "summary": ("{{ $labels.model }} version {{ $labels.version }}: "
                       "{{ $labels.test }} drift on {{ $labels.statistic }}"),
           "description": (
               _WHY + "the {{ $labels.test }} test on {{ $labels.statistic }}"
               " gave p = {{ $value | printf \"%.3g\" }}, below its threshold "
               "{{ $labels.threshold }}. Moved most (reference median -> "
               "window median): {{ $labels.top_moved }}.")}},
      {"alert": "ChameleonFalseAlarmsOverBudget",
       "expr": (f'chameleon_monitor_warning{{{model}, '
                f'test="false_alarm_estimate"}}'),
       "labels": {"severity": "ticket"},
       "annotations": {
           "summary": ("{{ $labels.model }} version {{ $labels.version }}: "
                       "false alarms above budget"),
           "description": (
               _WHY + "an estimated {{ $value | printf \"%.3f\" }} of "
               "defect-free images raise an alarm (estimated from the "
               "calibrated p(defect), no labels), above the budget "
               "{{ $labels.threshold }}.")}},
      {"alert": "ChameleonConfidenceDrift",
       "expr": f'chameleon_monitor_warning{{{model}, test="confidence"}}',
       "labels": {"severity": "ticket"},
       "annotations": {
           "summary": ("{{ $labels.model }} version {{ $labels.version }}: "
                       "the model's confidence moved"),
           "description": (
               _WHY + "the per-image entropy of p(defect) moved (KS distance "
               "{{ $value | printf \"%.2f\" }}, threshold "
               "{{ $labels.threshold }}).")}},
      {"alert": "ChameleonMonitorSilent",
       "expr": (f"time() - chameleon_monitor_last_window_timestamp_seconds"
                f"{{{model}}} > {SILENT_SECONDS}"),
       "labels": {"severity": "ticket"},
       "annotations": {
           "summary": ("{{ $labels.model }} version {{ $labels.version }}: "
                       "no window tested"),
           "description": (
               f"No window of {{{{ $labels.model }}}} version "
               f"{{{{ $labels.version }}}} tested for {SILENT_SECONDS} s: "
               "no traffic, or nothing writes the request log.")}},
  ]}]


def objects(name: str, model_name: str, target: Target,
            deploy: targets_lib.Deploy, image: str,
            window: int = 50) -> list[dict]:
  """The monitor's Deployment and Service and the PrometheusRule."""
  meta = {"namespace": deploy.namespace, "labels": manifests.labels(
      "monitor", name)}
  selector = {"app.kubernetes.io/name": manifests.APP,
              "app.kubernetes.io/component": "monitor",
              "app.kubernetes.io/instance": name}
  logs = f"{LOG_DIR}/{name}"
  container = {
      "name": "monitor", "image": image,
      "command": ["python", "-m", "chameleon_jax.monitoring"],
      "args": [f"--model_base_path={manifests.SHARED}/models",
               f"--log={logs}/requests.jsonl", f"--window={window}",
               f"--port={PORT}", f"--report_dir={logs}/monitor"],
      "ports": [{"containerPort": PORT, "name": "metrics"}],
      "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"},
                         "periodSeconds": 15},
      "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"memory": "2Gi"}},
      "volumeMounts": [{"name": "shared", "mountPath": manifests.SHARED}]}
  pod_meta = {"labels": selector, "annotations": {
      **({"gke-gcsfuse/volumes": "true"} if target.storage == "gcs" else {}),
      "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
      "prometheus.io/path": "/metrics"}}
  return [
      {"apiVersion": "apps/v1", "kind": "Deployment",
       "metadata": {"name": f"{name}-monitor", **meta},
       "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                # One reader of the log: the old pod stops first.
                "strategy": {"type": "Recreate"},
                "template": {"metadata": pod_meta, "spec": {
                    "serviceAccountName": deploy.serve_service_account,
                    "containers": [container],
                    "volumes": [manifests.shared_volume(target, deploy)]}}}},
      {"apiVersion": "v1", "kind": "Service",
       "metadata": {"name": f"{name}-monitor", **meta},
       "spec": {"selector": selector, "ports": [
           {"name": "metrics", "port": PORT, "targetPort": "metrics"}]}},
      {"apiVersion": RULE_API, "kind": "PrometheusRule",
       "metadata": {"name": f"{name}-monitor", **meta},
       "spec": {"groups": rule_groups(model_name)}},
  ]
