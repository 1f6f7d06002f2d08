"""infra/terraform parsed with python-hcl2: what must hold, and that the
example agrees with the manifests the renderer writes for the same config."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_main

hcl2 = pytest.importorskip("hcl2")
TF = REPO / "infra" / "terraform"


def _unquote(value):
  """python-hcl2 keeps the quotes of string literals and block labels."""
  if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
    return value[1:-1]
  if isinstance(value, dict):
    return {_unquote(k): _unquote(v) for k, v in value.items()
            if k not in ("__is_block__", "__comments__")}
  if isinstance(value, list):
    return [_unquote(v) for v in value]
  return value


def _load(path: Path) -> dict:
  with open(path) as f:
    return _unquote(hcl2.load(f))


def _resources(parsed: dict) -> dict[tuple[str, str], dict]:
  return {(kind, name): body for block in parsed.get("resource", [])
          for kind, named in block.items() for name, body in named.items()}


@pytest.fixture(scope="module")
def module():
  files = sorted((TF / "modules" / "gke").glob("*.tf"))
  assert {f.name for f in files} == {"main.tf", "variables.tf", "outputs.tf",
                                     "versions.tf"}
  parsed = {f.name: _load(f) for f in files}
  variables = {name: body for block in parsed["variables.tf"]["variable"]
               for name, body in block.items()}
  return _resources(parsed["main.tf"]), variables


@pytest.fixture(scope="module")
def example():
  (block,) = _load(TF / "examples" / "gke" / "main.tf")["module"]
  return block["chameleon"]


def test_every_file_parses():
  for path in TF.rglob("*.tf"):
    assert _load(path), path


def test_gpu_pools_carry_accelerators_driver_and_taint(module):
  resources, _ = module
  pool = resources[("google_container_node_pool", "gpu")]
  assert pool["for_each"] == "${var.gpu_pools}"
  (node,) = pool["node_config"]
  (accel,) = node["guest_accelerator"]
  assert accel["type"] == "${each.value.accelerator}"
  assert accel["count"] == "${each.value.count}"
  (driver,) = accel["gpu_driver_installation_config"]
  assert driver["gpu_driver_version"] == "LATEST"
  assert node["taint"] == [{"key": "nvidia.com/gpu", "value": "present",
                            "effect": "NO_SCHEDULE"}]
  for kind in ("cpu", "gpu", "tpu"):  # Workload identity on every pool.
    (cfg,) = resources[("google_container_node_pool", kind)]["node_config"]
    assert cfg["workload_metadata_config"] == [{"mode": "GKE_METADATA"}]


def test_tpu_pool_is_a_compact_slice_matching_the_jobset(module, example,
                                                         tmp_path):
  resources, _ = module
  pool = resources[("google_container_node_pool", "tpu")]
  assert pool["placement_policy"] == [{"type": "COMPACT",
                                       "tpu_topology": "${each.value.topology}"}]
  assert pool["node_count"] == "${each.value.node_count}"
  ((name, slice_),) = example["tpu_pools"].items()
  run_main("--config=experiments/magnetic_tile.py", f"--workdir={tmp_path}",
           "--mode=render", "--target=gke-tpu")
  (jobset,) = yaml.safe_load_all(
      (tmp_path / "render" / "gke-tpu" / "train.yaml").read_text())
  job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
  pod = job["template"]["spec"]
  assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == (
      slice_["topology"])
  # Every host of the slice runs one pod holding all of its chips.
  assert job["parallelism"] == slice_["node_count"] == 2
  chips = int(pod["containers"][0]["resources"]["limits"]["google.com/tpu"])
  assert slice_["machine_type"] == f"ct5lp-hightpu-{chips}t"
  assert pod["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == (
      "tpu-v5-lite-podslice")  # The GKE name of v5e (ct5lp) slices.


def test_example_matches_the_rendered_gpu_manifests(example, tmp_path):
  from configs import segmentation
  deploy = segmentation.get_config().deploy
  run_main("--config=experiments/magnetic_tile.py", f"--workdir={tmp_path}",
           "--mode=render", "--target=gke-gpu")
  out = tmp_path / "render" / "gke-gpu"
  (jobset,) = yaml.safe_load_all((out / "train.yaml").read_text())
  pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"][
      "spec"]
  ((_, gpu),) = example["gpu_pools"].items()
  assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == (
      gpu["accelerator"])
  assert int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) \
      <= gpu["count"]
  volume = pod["volumes"][0]["csi"]["volumeAttributes"]
  assert volume["bucketName"] == example["bucket_name"].replace(
      "${var.project}", deploy.project)
  image = pod["containers"][0]["image"]
  assert image.startswith(f"{example['registry_location']}-docker.pkg.dev/"
                          f"{deploy.project}/{example['registry_id']}/")
  base = list(yaml.safe_load_all((out / "base.yaml").read_text()))
  accounts = {o["metadata"]["name"]: o for o in base
              if o["kind"] == "ServiceAccount"}
  assert set(accounts) == {example["train_service_account"],
                           example["serve_service_account"]}
  for name, account in accounts.items():
    assert account["metadata"]["namespace"] == example["namespace"]
    assert account["metadata"]["annotations"][
        "iam.gke.io/gcp-service-account"] == (
            f"{name}@{deploy.project}.iam.gserviceaccount.com")
  assert pod["serviceAccountName"] == example["train_service_account"]


def test_workload_identity_binds_the_kubernetes_accounts(module):
  resources, variables = module
  binding = resources[("google_service_account_iam_member",
                       "workload_identity")]
  assert binding["role"] == "roles/iam.workloadIdentityUser"
  assert binding["member"] == (
      "serviceAccount:${var.project}.svc.id.goog[${var.namespace}/"
      "${each.value}]")
  cluster = resources[("google_container_cluster", "main")]
  assert cluster["workload_identity_config"] == [
      {"workload_pool": "${var.project}.svc.id.goog"}]
  (addons,) = cluster["addons_config"]
  assert addons["gcs_fuse_csi_driver_config"] == [{"enabled": True}]
  bucket = resources[("google_storage_bucket", "main")]
  assert bucket["public_access_prevention"] == "enforced"
  assert bucket["uniform_bucket_level_access"] is True


def test_no_public_node_ips_unless_asked(module, example):
  resources, variables = module
  (private,) = resources[("google_container_cluster", "main")][
      "private_cluster_config"]
  assert private["enable_private_nodes"] == "${var.enable_private_nodes}"
  assert variables["enable_private_nodes"]["default"] is True
  assert "enable_private_nodes" not in example  # The example keeps it.
  for (kind, _), body in resources.items():  # No pool opts out by itself.
    if kind == "google_container_node_pool":
      for cfg in body.get("network_config", []):
        assert cfg.get("enable_private_nodes") in (
            None, "${var.enable_private_nodes}")


def test_checkov_gate_fails_on_new_findings_and_parse_errors():
  from infra.checks import checkov_gate
  baseline = json.loads((TF / ".checkov.baseline").read_text())
  accepted = next(iter(checkov_gate.accepted(baseline)))
  finding = {"check_id": accepted[2], "check_name": "x",
             "resource": accepted[1], "file_path": accepted[0]}
  clean = {"summary": {"resource_count": 17, "parsing_errors": 0},
           "results": {"failed_checks": [finding]}}
  assert checkov_gate.problems(clean, baseline) == []
  new = {**finding, "check_id": "CKV_GCP_999"}
  assert checkov_gate.problems(
      {**clean, "results": {"failed_checks": [new]}}, baseline)
  assert checkov_gate.problems(
      {"summary": {"resource_count": 17, "parsing_errors": 1},
       "results": {"parsing_errors": ["x.tf"]}}, baseline)
  assert checkov_gate.problems({"summary": {"resource_count": 0}}, baseline)
  result = subprocess.run([sys.executable, str(REPO / "infra" / "checks" /
                                               "checkov_gate.py"),
                           str(TF / ".checkov.baseline")], input="not json",
                          capture_output=True, text=True)
  assert result.returncode == 1
