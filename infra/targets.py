"""Render targets: what changes between GKE GPU pools, GKE TPU pools and a
plain CPU cluster. Everything else in the manifests is shared.

GKE facts used here (../shared/reference/serving.md): GPU nodes carry the
label `cloud.google.com/gke-accelerator` and the taint
`nvidia.com/gpu=present:NoSchedule`, pods ask for `nvidia.com/gpu`; TPU nodes
carry `cloud.google.com/gke-tpu-accelerator` and
`cloud.google.com/gke-tpu-topology`, the taint `google.com/tpu=present:
NoSchedule`, pods ask for `google.com/tpu` (all chips of their host).
"""

from __future__ import annotations

import dataclasses
import math
import re

TARGETS = ("gke-gpu", "gke-tpu", "cpu")
GPU_SELECTOR = "cloud.google.com/gke-accelerator"
TPU_SELECTOR = "cloud.google.com/gke-tpu-accelerator"
TOPOLOGY_SELECTOR = "cloud.google.com/gke-tpu-topology"
GPU_RESOURCE = "nvidia.com/gpu"
TPU_RESOURCE = "google.com/tpu"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Deploy:
  """The cluster (the `deploy.*` config section, documented there).

  Attributes:
    name: JobSet / Deployment name ("" = the dataset's name).
    namespace, project, registry, image_tag, bucket, volume_claim: where
      the workloads, images and data live.
    hosts, max_restarts, cpu, memory_gi: training pods, JobSet restarts,
      CPU and memory requested per training pod.
    gpu_type, gpus_per_host: GKE GPU pools.
    tpu_type, tpu_topology, tpu_chips_per_host: GKE TPU slices.
    train_service_account, serve_service_account: service account names.
    serving_version, serving_replicas, serving_cpu_target, serving_gpus:
      TF Serving's version, (min, max) replicas, HPA CPU target, GPUs per
      replica.
  """
  name: str
  namespace: str
  project: str
  registry: str
  image_tag: str
  bucket: str
  volume_claim: str
  hosts: int
  max_restarts: int
  cpu: int
  memory_gi: int
  gpu_type: str
  gpus_per_host: int
  tpu_type: str
  tpu_topology: str
  tpu_chips_per_host: int
  train_service_account: str
  serve_service_account: str
  serving_version: str
  serving_replicas: tuple[int, int]
  serving_cpu_target: int
  serving_gpus: int

  def __post_init__(self):
    object.__setattr__(self, "serving_replicas",
                       tuple(int(r) for r in self.serving_replicas))


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where and with what a pod runs."""
  resources: dict
  node_selector: dict
  tolerations: list

  def apply(self, pod_spec: dict, container: dict) -> None:
    container["resources"] = self.resources
    if self.node_selector:
      pod_spec["nodeSelector"] = dict(self.node_selector)
    if self.tolerations:
      pod_spec["tolerations"] = [dict(t) for t in self.tolerations]


@dataclasses.dataclass(frozen=True)
class Target:
  """A render target: where training runs and serves, how storage mounts."""
  name: str
  storage: str  # "gcs" (Cloud Storage FUSE) | "pvc" (ReadWriteMany claim)
  device: str  # gpu | tpu | cpu: the accelerator training runs on
  serving_device: str  # gpu | cpu: TF Serving's XLA flag and image


def get(name: str) -> Target:
  """The target `name` (gke-gpu, gke-tpu, cpu).

  Raises:
    ValueError: an unknown name.
  """
  if name == "gke-gpu":
    return Target(name, "gcs", "gpu", "gpu")
  if name == "gke-tpu":  # TF Serving has no TPU build: serve on CPU nodes.
    return Target(name, "gcs", "tpu", "cpu")
  if name == "cpu":
    return Target(name, "pvc", "cpu", "cpu")
  raise ValueError(f"--target={name!r}; expected one of {TARGETS}.")


def dns_label(value: str, what: str) -> str:
  """`value` as a DNS-1035 label (underscores become dashes) or an error."""
  label = value.lower().replace("_", "-")
  if not _DNS_LABEL.match(label) or len(label) > 40:
    raise ValueError(f"{what} {value!r} does not give a valid Kubernetes name "
                     f"({label!r}): expected lowercase letters, digits and "
                     "dashes, starting with a letter, at most 40 characters "
                     "(pod hostnames add a suffix and must stay under 64).")
  return label


def tpu_hosts(deploy: Deploy) -> int:
  """Hosts of the TPU slice: chips of the topology / chips per host."""
  try:
    dims = [int(d) for d in deploy.tpu_topology.split("x")]
  except ValueError:
    raise ValueError(f"deploy.tpu_topology {deploy.tpu_topology!r}: expected "
                     "chips per dimension, e.g. '2x4'.") from None
  chips = math.prod(dims)
  if chips % deploy.tpu_chips_per_host:
    raise ValueError(f"deploy.tpu_topology {deploy.tpu_topology} has {chips} "
                     f"chips, not a multiple of deploy.tpu_chips_per_host="
                     f"{deploy.tpu_chips_per_host}.")
  return chips // deploy.tpu_chips_per_host


def training_hosts(target: Target, deploy: Deploy) -> int:
  """Pods of the training JobSet; on TPU fixed by the slice topology."""
  if target.device == "tpu":
    hosts = tpu_hosts(deploy)
    if deploy.hosts not in (1, hosts):
      raise ValueError(
          f"deploy.hosts={deploy.hosts} but the TPU slice "
          f"{deploy.tpu_topology} with {deploy.tpu_chips_per_host} chips per "
          f"host has {hosts} hosts; every host of a slice must run a process.")
    return hosts
  if deploy.hosts < 1:
    raise ValueError(f"deploy.hosts={deploy.hosts}; expected >= 1.")
  return deploy.hosts


def training_placement(target: Target,
                       deploy: Deploy) -> Placement:
  """Resources, node selector and tolerations of a training pod."""
  requests = {"cpu": str(deploy.cpu), "memory": f"{deploy.memory_gi}Gi"}
  if target.device == "gpu":
    count = str(deploy.gpus_per_host)
    return Placement(
        {"requests": {**requests, GPU_RESOURCE: count},
         "limits": {GPU_RESOURCE: count}},
        {GPU_SELECTOR: deploy.gpu_type},
        [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}])
  if target.device == "tpu":
    count = str(deploy.tpu_chips_per_host)
    return Placement(
        {"requests": {TPU_RESOURCE: count}, "limits": {TPU_RESOURCE: count}},
        {TPU_SELECTOR: deploy.tpu_type,
         TOPOLOGY_SELECTOR: deploy.tpu_topology},
        [{"key": TPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}])
  return Placement({"requests": requests, "limits": {"memory":
                                                     requests["memory"]}},
                   {}, [])


def cpu_placement(cpu: int | str, memory_gi: int) -> Placement:
  """A step without accelerator (ingest, export) on the default pool."""
  memory = f"{memory_gi}Gi"
  return Placement({"requests": {"cpu": str(cpu), "memory": memory},
                    "limits": {"memory": memory}}, {}, [])


def serving_device(target: Target, deploy: Deploy) -> str:
  """gpu when the target serves on GPUs and replicas get some, else cpu."""
  return ("gpu" if target.serving_device == "gpu" and deploy.serving_gpus > 0
          else "cpu")


def serving_placement(target: Target,
                      deploy: Deploy) -> Placement:
  """Resources, node selector and tolerations of a serving replica."""
  base = {"cpu": "2", "memory": "8Gi"}
  if serving_device(target, deploy) == "gpu":
    count = str(deploy.serving_gpus)
    return Placement(
        {"requests": {**base, GPU_RESOURCE: count},
         "limits": {GPU_RESOURCE: count, "memory": base["memory"]}},
        {GPU_SELECTOR: deploy.gpu_type},
        [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}])
  return Placement({"requests": base, "limits": {"memory": base["memory"]}},
                   {}, [])
