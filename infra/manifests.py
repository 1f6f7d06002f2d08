"""Kubernetes objects for training and serving, as plain dicts.

Training (and every other batch step: ingest, evaluate, export, sweep
members) is one JobSet template: a single replicated Job, `completionMode:
Indexed`, `parallelism` = hosts. JAX's coordinator is pod 0, reached through
the JobSet's headless service as `<jobset>-worker-0-0.<jobset>`; each pod's
process id is its Job completion index, which `sharding.
initialize_distributed` reads from JOB_COMPLETION_INDEX (set by Kubernetes
for Indexed Jobs and, explicitly, from the pod annotation). `backoffLimit: 0`
makes any failed pod fail its Job, and the JobSet then recreates all pods
(`failurePolicy.maxRestarts`); they resume from the last Orbax checkpoint in
the shared workdir.

Storage: on GKE one bucket mounted with the Cloud Storage FUSE CSI driver
(data/, workdirs/, models/); on a plain cluster a ReadWriteMany claim with the
same layout.

Serving: the official TF Serving image (pinned) with the export's server
files (model config with version labels, batching, monitoring) from a
ConfigMap at /etc/tfserving and the models at /models.
"""

from __future__ import annotations

import dataclasses


from export import server_flags
from infra import targets as targets_lib
from infra.targets import Placement, Target

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
WORKER = "worker"  # The replicated Job's name.
COORDINATOR_PORT = 8476
SHARED = "/mnt/shared"  # Bucket or claim: data/, workdirs/, models/.
SERVING_MODELS = "/models"  # Where the server sees models/ (export's default).
SERVING_CONFIG = "/etc/tfserving"
APP = "chameleon"
# TF Serving releases and the newest XlaCallModule version their TF reads
# (../shared/reference/serving.md: TF 2.20 and 2.21 read up to 10). The GPU
# XLA flag exists since 2.18; releases are added here once checked.
SERVING_READS_XLA_CALL_MODULE = {"2.20.0": 10, "2.21.0": 10}
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclasses.dataclass(frozen=True)
class Step:
  """One JobSet: `main.py` with these modes on `hosts` pods."""
  name: str  # JobSet name (DNS label).
  modes: tuple[str, ...]
  args: tuple[str, ...]  # --config=... and --config.x=y, forwarded as given.
  workdir: str
  hosts: int
  placement: Placement
  image: str
  # JobSet restarts after a failed pod; None: deploy.max_restarts. The gate
  # takes 0: its exit status 1 is a verdict, and a restart would decide and
  # log it again.
  max_restarts: int | None = None


def labels(component: str, name: str) -> dict:
  """The app.kubernetes.io labels of one component of the pipeline."""
  return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component":
          component, "app.kubernetes.io/instance": name}


def coordinator_address(jobset_name: str) -> str:
  """Pod 0 of the JobSet through its headless service (subdomain = name)."""
  return f"{jobset_name}-{WORKER}-0-0.{jobset_name}:{COORDINATOR_PORT}"


def shared_volume(target: Target, deploy: targets_lib.Deploy,
                  name: str = "shared", read_only: bool = False,
                  only_dir: str = "") -> dict:
  """The volume holding data, workdirs and models: Cloud Storage FUSE
  (gcs) or a ReadWriteMany claim (pvc).
  """
  if target.storage == "gcs":
    options = "implicit-dirs" + (f",only-dir={only_dir}" if only_dir else "")
    # (A claim has no only-dir: its mount uses subPath instead.)
    return {"name": name, "csi": {
        "driver": "gcsfuse.csi.storage.gke.io", "readOnly": read_only,
        "volumeAttributes": {"bucketName": deploy.bucket,
                             "mountOptions": options}}}
  return {"name": name, "persistentVolumeClaim": {
      "claimName": deploy.volume_claim, "readOnly": read_only}}


def _pod_annotations(target: Target) -> dict:
  # The GKE webhook injects the Cloud Storage FUSE sidecar on this.
  return {"gke-gcsfuse/volumes": "true"} if target.storage == "gcs" else {}


def jobset(step: Step, target: Target, deploy: targets_lib.Deploy,
           service_account: str) -> dict:
  """The JobSet of one pipeline step: indexed pods running main.py with
  the step's modes, jax.distributed wiring, restarts, placement.
  """
  env = []
  if step.hosts > 1:
    env = [{"name": "JAX_COORDINATOR_ADDRESS",
            "value": coordinator_address(step.name)},
           {"name": "JAX_NUM_PROCESSES", "value": str(step.hosts)},
           {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
               "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}]
  container = {
      "name": "main", "image": step.image,
      "command": ["python", "main.py"],
      "args": [*step.args, f"--workdir={step.workdir}",
               f"--mode={','.join(step.modes)}"],
      "env": env,
      "ports": [{"containerPort": COORDINATOR_PORT, "name": "coordinator"}],
      "volumeMounts": [{"name": "shared", "mountPath": SHARED}],
  }
  pod_spec = {"restartPolicy": "Never", "serviceAccountName": service_account,
              "containers": [container],
              "volumes": [shared_volume(target, deploy)]}
  step.placement.apply(pod_spec, container)
  pod = {"metadata": {"labels": labels("train", step.name)}, "spec": pod_spec}
  if _pod_annotations(target):
    pod["metadata"]["annotations"] = _pod_annotations(target)
  job = {"spec": {"parallelism": step.hosts, "completions": step.hosts,
                  "completionMode": "Indexed", "backoffLimit": 0,
                  "template": pod}}
  return {
      "apiVersion": JOBSET_API, "kind": "JobSet",
      "metadata": {"name": step.name, "namespace": deploy.namespace,
                   "labels": labels("train", step.name)},
      "spec": {
          "failurePolicy": {"maxRestarts": deploy.max_restarts
                            if step.max_restarts is None
                            else step.max_restarts},
          "network": {"enableDNSHostnames": True,
                      "publishNotReadyAddresses": True},
          "successPolicy": {"operator": "All"},
          "replicatedJobs": [{"name": WORKER, "replicas": 1,
                              "template": job}],
      },
  }


def serving_image(target: Target, deploy: targets_lib.Deploy) -> str:
  """TF Serving's image for the target's serving device and version."""
  version = deploy.serving_version
  if version not in SERVING_READS_XLA_CALL_MODULE:
    raise ValueError(
        f"deploy.serving_version {version!r} is not a TF Serving release "
        f"checked against this JAX's exports; checked: "
        f"{sorted(SERVING_READS_XLA_CALL_MODULE)}.")
  suffix = "-gpu" if targets_lib.serving_device(target, deploy) == "gpu" else ""
  return f"tensorflow/serving:{version}{suffix}"


def serving(name: str, model_name: str, target: Target,
            deploy: targets_lib.Deploy,
            server_files: dict[str, str]) -> list[dict]:
  """ConfigMap, Deployment, Service, PodDisruptionBudget, HPA."""
  missing = [f for f in server_flags.SERVER_FILES if f not in server_files]
  if missing:
    raise ValueError(f"Server files {missing} missing (written by "
                     "--mode=export next to the models).")
  device = targets_lib.serving_device(target, deploy)
  command = server_flags.serving_command(SERVING_MODELS, device,
                                         config_dir=SERVING_CONFIG)
  meta = {"namespace": deploy.namespace, "labels": labels("serve", name)}
  selector = {"app.kubernetes.io/name": APP,
              "app.kubernetes.io/component": "serve",
              "app.kubernetes.io/instance": name}
  container = {
      "name": "tfserving", "image": serving_image(target, deploy),
      "command": command[:1], "args": command[1:],
      "ports": [{"containerPort": server_flags.GRPC_PORT, "name": "grpc"},
                {"containerPort": server_flags.REST_PORT, "name": "http"}],
      # Loaded (and warmed up) when the model's status answers on REST.
      "readinessProbe": {"httpGet": {"path": f"/v1/models/{model_name}",
                                     "port": "http"},
                         "periodSeconds": 10, "failureThreshold": 3},
      # TF Serving registers no grpc.health.v1 service, so a `grpc:` probe
      # would fail forever; liveness is the gRPC port accepting connections.
      "livenessProbe": {"tcpSocket": {"port": "grpc"},
                        "initialDelaySeconds": 30, "periodSeconds": 15},
      "startupProbe": {"httpGet": {"path": f"/v1/models/{model_name}",
                                   "port": "http"},
                       "periodSeconds": 10, "failureThreshold": 60},
      "volumeMounts": [
          {"name": "server-config", "mountPath": SERVING_CONFIG,
           "readOnly": True},
          {"name": "models", "mountPath": SERVING_MODELS, "readOnly": True}],
  }
  pod_spec = {
      "serviceAccountName": deploy.serve_service_account,
      "containers": [container],
      "volumes": [
          {"name": "server-config", "configMap": {"name": f"{name}-config"}},
          shared_volume(target, deploy, "models", read_only=True,
                        only_dir="models")],
  }
  if target.storage == "pvc":  # The claim's models/ directory.
    container["volumeMounts"][1]["subPath"] = "models"
  targets_lib.serving_placement(target, deploy).apply(pod_spec, container)
  pod_meta = {"labels": selector, "annotations": {
      **_pod_annotations(target), "prometheus.io/scrape": "true",
      "prometheus.io/port": str(server_flags.REST_PORT),
      "prometheus.io/path": server_flags.PROMETHEUS_PATH}}
  low, high = deploy.serving_replicas
  return [
      {"apiVersion": "v1", "kind": "ConfigMap",
       "metadata": {"name": f"{name}-config", **meta},
       "data": {k: server_files[k] for k in server_flags.SERVER_FILES}},
      {"apiVersion": "apps/v1", "kind": "Deployment",
       "metadata": {"name": name, **meta},
       "spec": {"replicas": low, "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                    "maxUnavailable": 0, "maxSurge": 1}},
                "template": {"metadata": pod_meta, "spec": pod_spec}}},
      {"apiVersion": "v1", "kind": "Service",
       "metadata": {"name": name, **meta},
       "spec": {"selector": selector, "ports": [
           {"name": "grpc", "port": server_flags.GRPC_PORT,
            "targetPort": "grpc", "appProtocol": "grpc"},
           {"name": "http", "port": server_flags.REST_PORT,
            "targetPort": "http"}]}},
      {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
       "metadata": {"name": name, **meta},
       "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}},
      {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
       "metadata": {"name": name, **meta},
       "spec": {"scaleTargetRef": {"apiVersion": "apps/v1",
                                   "kind": "Deployment", "name": name},
                "minReplicas": low, "maxReplicas": high,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {
                        "type": "Utilization",
                        "averageUtilization": deploy.serving_cpu_target}}}]}},
  ]


def base(target: Target, deploy: targets_lib.Deploy) -> list[dict]:
  """Namespace and the two service accounts (GKE: bound to Google service
  accounts of the same names through workload identity, see infra/terraform)."""
  objects = [{"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": deploy.namespace,
                           "labels": {"app.kubernetes.io/name": APP}}}]
  for account in (deploy.train_service_account, deploy.serve_service_account):
    meta = {"name": account, "namespace": deploy.namespace}
    if target.storage == "gcs":
      meta["annotations"] = {"iam.gke.io/gcp-service-account":
                             f"{account}@{deploy.project}.iam.gserviceaccount.com"}
    objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": meta})
  return objects
