"""infra/: manifests rendered from the config, validated offline, and the
JobSet's pods reproduced locally (2 processes, one killed, JobSet restart,
exact resume). The serving manifest is checked against a real export in
tests/test_export.py; Terraform in tests/test_terraform.py."""

import copy
import json
import shutil
import signal
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, checkpoint_digest, run_main, xla_flags

TINY = "--config=tests/tiny_config.py"
MT = "--config=experiments/magnetic_tile.py"


def _render(tmp_path: Path, target: str, *args: str, config: str = TINY
            ) -> dict[str, list[dict]]:
  run_main(config, f"--workdir={tmp_path}", "--mode=render",
           f"--target={target}", *args)
  out = tmp_path / "render" / target
  return {p.stem: [o for o in yaml.safe_load_all(p.read_text()) if o]
          for p in sorted(out.glob("*.yaml"))}


def _pod(jobset: dict) -> tuple[dict, dict]:
  (rjob,) = jobset["spec"]["replicatedJobs"]
  pod = rjob["template"]["spec"]["template"]["spec"]
  return rjob["template"]["spec"], pod


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
  root = tmp_path_factory.mktemp("render")
  for target in ("gke-gpu", "gke-tpu", "cpu"):
    run_main(MT, f"--workdir={root}", "--mode=render", f"--target={target}",
             "--config.deploy.hosts=2", "--config.train.steps=700",
             "--config.data.root=/local/data")  # A local path: not forwarded.
  return {t: root / "render" / t for t in ("gke-gpu", "gke-tpu", "cpu")}


def test_every_rendered_manifest_passes_offline_validation(rendered):
  from infra import validate
  files = sorted(p for d in rendered.values() for p in d.glob("*.yaml"))
  assert len(files) == 18  # base, ingest, train, evaluate, export, gate x 3
  problems = [q for f in files for q in validate.validate_file(f)]
  assert problems == []
  # The tools' own command lines, as CI or a user would run them.
  lint = subprocess.run([sys.executable, "-m", "yamllint", "-c",
                         str(REPO / "infra" / "yamllint.yaml"),
                         *map(str, files)], capture_output=True, text=True)
  assert lint.returncode == 0, lint.stdout
  kv = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                       "-k", "1.30.0", "-k", "1.37.0", *map(str, files)],
                      capture_output=True, text=True)
  assert kv.returncode == 0, kv.stdout
  passed = [l for l in kv.stdout.splitlines() if l.startswith("INFO")]
  warned = [l for l in kv.stdout.splitlines() if l.startswith("WARN")]
  assert len(passed) == 2 * 3 * 3  # Namespace + 2 ServiceAccounts, 2 versions.
  # kubernetes-validate has no JobSet schema: exactly those are only warned
  # about, and validate.py checks them against the CRD schema instead.
  assert warned and all("kind JobSet" in l for l in warned)


def test_jobset_is_indexed_with_coordinator_pod_zero_and_restarts(rendered):
  (jobset,) = yaml.safe_load_all((rendered["gke-gpu"] / "train.yaml")
                                 .read_text())
  name = jobset["metadata"]["name"]
  assert name == "magnetic-tile-multiclass-train"
  job, pod = _pod(jobset)
  assert job["completionMode"] == "Indexed"
  assert job["parallelism"] == job["completions"] == 2
  assert job["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
  assert jobset["spec"]["failurePolicy"]["maxRestarts"] >= 1
  assert jobset["spec"]["network"]["enableDNSHostnames"] is True
  (container,) = pod["containers"]
  env = {e["name"]: e for e in container["env"]}
  assert env["JAX_COORDINATOR_ADDRESS"]["value"] == (
      f"{name}-worker-0-0.{name}:8476")
  assert env["JAX_NUM_PROCESSES"]["value"] == "2"
  assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
      "metadata.annotations['batch.kubernetes.io/job-completion-index']")
  # The config stays the single source: the same file, the renderer's
  # overrides (deploy.* dropped), the cluster paths.
  assert container["args"] == [
      "--config=experiments/magnetic_tile.py", "--config.train.steps=700",
      "--config.data.root=/mnt/shared/data",
      "--workdir=/mnt/shared/workdirs/magnetic-tile-multiclass", "--mode=train"]
  assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
  assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator":
                                 "nvidia-l4"}
  assert {"key": "nvidia.com/gpu", "operator": "Exists",
          "effect": "NoSchedule"} in pod["tolerations"]
  (volume,) = pod["volumes"]
  assert volume["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
  assert volume["csi"]["volumeAttributes"]["bucketName"] == (
      "my-project-chameleon")


def test_the_gate_runs_on_the_models_the_export_published(rendered):
  """The gate pod reads the stable version and writes the ledger where the
  export pod published (promotion reads it there)."""
  pods = {}
  for step in ("export", "gate"):
    (jobset,) = yaml.safe_load_all((rendered["gke-gpu"] / f"{step}.yaml")
                                   .read_text())
    (container,) = _pod(jobset)[1]["containers"]
    pods[step] = container
  args = pods["gate"]["args"]
  assert args[-1] == "--mode=gate"
  assert "--config.export.model_base_path=/mnt/shared/models" in args
  assert [a for a in pods["export"]["args"] if "model_base_path" in a] == [
      a for a in args if "model_base_path" in a]
  assert "chameleon-train" in pods["gate"]["image"]  # JAX, no TensorFlow.
  # A verdict is final: a restart would decide (and log) it again.
  jobsets = {step: yaml.safe_load((rendered["gke-gpu"] / f"{step}.yaml")
                                  .read_text()) for step in ("gate", "train")}
  assert jobsets["gate"]["spec"]["failurePolicy"]["maxRestarts"] == 0
  assert jobsets["train"]["spec"]["failurePolicy"]["maxRestarts"] > 0


def test_tpu_jobset_matches_the_slice(rendered):
  (jobset,) = yaml.safe_load_all((rendered["gke-tpu"] / "train.yaml")
                                 .read_text())
  job, pod = _pod(jobset)
  assert job["parallelism"] == 2  # 2x4 = 8 chips, 4 per host.
  assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": "4"}
  assert pod["nodeSelector"] == {
      "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
      "cloud.google.com/gke-tpu-topology": "2x4"}
  (cpu_jobset,) = yaml.safe_load_all((rendered["cpu"] / "train.yaml")
                                     .read_text())
  _, cpu_pod = _pod(cpu_jobset)
  assert cpu_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == (
      "chameleon-shared")
  assert "nodeSelector" not in cpu_pod


def test_sweep_members_share_the_template(tmp_path):
  files = _render(tmp_path, "gke-gpu", "--sweep", config=MT)
  names = [j["metadata"]["name"] for j in files["train"]]
  assert names == [f"magnetic-tile-multiclass-{i:02d}-train" for i in range(3)]
  args = [_pod(j)[1]["containers"][0]["args"] for j in files["train"]]
  for i, a in enumerate(args):
    assert f"--config.seed={i}" in a
    assert (f"--workdir=/mnt/shared/workdirs/magnetic-tile-multiclass-{i:02d}"
            in a)
  stripped = [copy.deepcopy(j) for j in files["train"]]
  for j in stripped:  # Apart from names, seed and workdir: identical.
    j["metadata"] = j["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"]["metadata"] = None
    j["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"][0]["args"] = None
    j["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"][0]["env"] = None
  assert stripped[0] == stripped[1] == stripped[2]


def test_validation_reports_what_is_wrong(rendered):
  from infra import validate
  (jobset,) = yaml.safe_load_all((rendered["cpu"] / "train.yaml").read_text())
  bad = copy.deepcopy(jobset)
  bad["spec"]["failurePolicy"]["maxRestart"] = 2
  assert "'maxRestart' was unexpected" in validate.validate_object(
      bad, "1.30")[0]
  bad = copy.deepcopy(jobset)
  bad["spec"]["failurePolicy"]["restartStrategy"] = "Sometimes"
  assert "is not one of" in validate.validate_object(bad, "1.37")[0]
  bad = copy.deepcopy(jobset)
  _pod(bad)[1]["containers"][0]["envv"] = []
  (problem,) = validate.validate_object(bad, "1.37")
  assert "containers.0" in problem and "'envv' was unexpected" in problem
  bad = copy.deepcopy(jobset)
  _pod(bad)[0]["completionMode"] = 1
  assert validate.validate_object(bad, "1.30")
  deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "x"},
                "spec": {"selector": {}, "template": {}, "replica": 2}}
  assert "'replica' was unexpected" in validate.validate_object(
      deployment, "1.30")[0]
  assert validate.validate_object({"apiVersion": "x.io/v1", "kind": "Foo",
                                   "metadata": {"name": "x"}},
                                  "1.30")[0].startswith("no schema")
  lint_me = rendered["cpu"].parent / "bad.yaml"
  lint_me.write_text("a: 1\nb:   [1,2]\n")
  assert any("yamllint" in p for p in validate.validate_file(lint_me))


@pytest.mark.parametrize("override, message", [
    ("--config.deploy.hosts=3", "the TPU slice 2x4"),
    ("--config.deploy.tpu_topology=2x3", "not a multiple"),
    ("--config.deploy.name=Bad_Name!", "not give a valid Kubernetes name"),
])
def test_bad_deploy_settings_are_refused(tmp_path, override, message):
  result = run_main(MT, f"--workdir={tmp_path}", "--mode=render",
                    "--target=gke-tpu", override, check=False)
  assert result.returncode != 0 and message in result.stderr


def test_process_id_comes_from_the_completion_index(monkeypatch):
  import jax
  from chameleon_jax import sharding
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda **kw: calls.append(kw))
  monkeypatch.setattr(jax.config, "update", lambda *a: None)
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "job-worker-0-0.job:8476")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
  sharding.initialize_distributed(None, None, None)
  assert calls[-1] == {"coordinator_address": "job-worker-0-0.job:8476",
                       "num_processes": 4, "process_id": 3}
  monkeypatch.setenv("JAX_PROCESS_ID", "1")  # An explicit id wins.
  sharding.initialize_distributed(None, None, None)
  assert calls[-1]["process_id"] == 1
  monkeypatch.setenv("JAX_PROCESS_ID", "4")
  with pytest.raises(ValueError, match="JAX_PROCESS_ID='4'"):
    sharding.initialize_distributed(None, None, None)


@pytest.mark.e2e
def test_jobset_pods_reproduced_locally_restart_and_resume_exactly(tmp_path):
  """The JobSet's exact pod environment on 127.0.0.1 with 2 processes: pod 1
  is SIGKILLed after a checkpoint, the JobSet restarts both pods, and the
  result equals an uninterrupted run's bit for bit."""
  import portpicker
  from infra.podenv import LocalJobSet
  files = _render(tmp_path / "r", "cpu", "--config.deploy.hosts=2",
                  "--config.train.steps=24", "--config.train.checkpoint_every=8",
                  "--config.train.keep_checkpoints=5")
  # One CPU device per pod, as one host each.
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags()}
  shared = tmp_path / "shared"
  (ingest,) = files["ingest"]
  LocalJobSet(ingest, shared, portpicker.pick_unused_port, env).run(600)
  (train,) = files["train"]
  workdir = shared / "workdirs" / "tiny"
  reference = LocalJobSet(train, shared, portpicker.pick_unused_port, env,
                          log_dir=tmp_path / "logs-straight")
  assert reference.run(900) == 0
  straight = checkpoint_digest(workdir)
  assert straight[0] == 24
  shutil.move(workdir, tmp_path / "straight")

  killed = []

  def kill_pod_1_after_a_checkpoint(jobset):
    if not killed and (workdir / "checkpoints" / "8").is_dir():
      os.killpg(jobset.pods[1].pid, signal.SIGKILL)
      killed.append(True)

  restarted = LocalJobSet(train, shared, portpicker.pick_unused_port, env,
                          log_dir=tmp_path / "logs-killed")
  assert restarted.run(900, poll=kill_pod_1_after_a_checkpoint) == 1
  assert killed
  logs = (tmp_path / "logs-killed" / "attempt1-pod0.log").read_text()
  assert "Resumed from step" in logs
  assert checkpoint_digest(workdir) == straight
  losses = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text()
            .splitlines()]
  assert max(l["step"] for l in losses) == 24


def test_pipeline_template_runs_every_stage_in_order_and_gates():
  from infra import validate
  path = REPO / "infra" / "ci" / "pipeline.github-actions.yaml"
  assert validate.lint(path) == []
  pipeline = yaml.safe_load(path.read_text())
  steps = [s.get("name", "") for s in pipeline["jobs"]["pipeline"]["steps"]]
  order = ["Build", "Render", "ETL", "Train", "Evaluate", "Export", "Gate",
           "Publish", "Canary"]
  positions = [next(i for i, s in enumerate(steps) if s.startswith(w))
               for w in order]
  assert positions == sorted(positions)
  runs = {s.get("name", ""): s.get("run", "") for s in
          pipeline["jobs"]["pipeline"]["steps"]}
  assert "python -m infra.gate" in runs["Evaluate and robustness report"]
  for stage, manifest in (("ETL", "ingest"), ("Train", "train"),
                          ("Evaluate", "evaluate"), ("Export", "export"),
                          ("Gate", "gate")):
    (run,) = [r for n, r in runs.items() if n.startswith(stage)]
    assert f"{manifest}.yaml" in run and "run_jobset.sh" in run
  assert pipeline["jobs"]["promote"]["needs"] == "pipeline"
  assert pipeline["jobs"]["promote"]["environment"] == "production"
  # No input is spliced into a script (expression injection): inputs reach
  # the shell as environment variables, and the target is a fixed choice.
  for job in pipeline["jobs"].values():
    for step in job["steps"]:
      assert "${{ inputs." not in step.get("run", ""), step.get("name")
  target = pipeline["on"]["workflow_dispatch"]["inputs"]["target"]
  assert target["type"] == "choice" and target["options"] == ["gke-gpu",
                                                              "gke-tpu"]
  assert pipeline["env"]["CONFIG"] == "${{ inputs.config }}"


def test_gate_names_each_failed_bound(tmp_path):
  from infra import gate
  assert gate.check({"dice": 0.6, "fa": 0.1}, {"dice": 0.5}, {"fa": 0.2}) == []
  failures = gate.check({"dice": 0.4, "fa": float("nan")}, {"dice": 0.5},
                        {"fa": 0.2, "missing": 1.0})
  assert failures == ["dice = 0.4000, needs >= 0.5.",
                      "fa: nan is not a finite number (needs <= 0.2).",
                      "missing: None is not a finite number (needs <= 1.0)."]
  metrics = tmp_path / "m.json"
  metrics.write_text(json.dumps({"defect_image_dice": 0.55}))
  ok = subprocess.run([sys.executable, "-m", "infra.gate", str(metrics),
                       "--min", "defect_image_dice=0.5"], cwd=REPO,
                      capture_output=True, text=True)
  bad = subprocess.run([sys.executable, "-m", "infra.gate", str(metrics),
                        "--min", "defect_image_dice=0.6"], cwd=REPO,
                       capture_output=True, text=True)
  assert ok.returncode == 0 and bad.returncode == 1
  assert "defect_image_dice = 0.5500, needs >= 0.6." in bad.stdout


def test_sweep_workers_share_one_postgresql_study(tmp_path):
  url = "postgresql://chameleon@sweeps-db.chameleon.svc:5432/sweeps"
  files = _render(tmp_path, "gke-gpu", "--sweep", f"--config.sweep.storage={url}",
                  "--config.sweep.parallel=3", config=MT)
  names = [j["metadata"]["name"] for j in files["train"]]
  assert names == [f"magnetic-tile-multiclass-sweep-{i:02d}" for i in range(3)]
  for jobset in files["train"]:
    args = _pod(jobset)[1]["containers"][0]["args"]
    assert f"--config.sweep.storage={url}" in args
    assert "--config.sweep.parallel=1" in args
    assert "--config.sweep.parallel=3" not in args
    assert "--mode=sweep" in args
    assert ("--workdir=/mnt/shared/workdirs/magnetic-tile-multiclass-sweep"
            in args)


def test_a_sampled_sweep_needs_a_shared_study(tmp_path):
  from infra import render
  path = tmp_path / "exp.py"
  path.write_text("from chameleon_jax.sweeps import space as s\n"
                  "def get_sweep():\n  return s.Space(ranges={'train.lr': "
                  "s.Range(1e-4, 1e-2, log=True)}, trials=4)\n")
  with pytest.raises(ValueError, match="need one shared study"):
    render.load_sweep(str(path))
  path.write_text("from chameleon_jax.sweeps import space as s\n"
                  "def get_sweep():\n  return s.Space(grid=s.sweep('a', [1, 2]),"
                  " replicates=s.seeds(0, 1))\n")
  assert render.load_sweep(str(path)) == [
      {"a": 1, "seed": 0}, {"a": 1, "seed": 1}, {"a": 2, "seed": 0},
      {"a": 2, "seed": 1}]
