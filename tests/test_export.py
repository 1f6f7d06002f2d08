"""Export: jax2tf SavedModel, verification, TF Serving layout and publishing.

One tiny model is trained per module (through main.py, as a user would) and
exported through `--mode=export`; the SavedModel is then inspected with
TensorFlow directly.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_main

tf = pytest.importorskip("tensorflow")

CONFIG = "--config=tests/tiny_config.py"
BUCKETS = "--config.export.buckets=((32,32),(64,96))"
SIGNED = f"--config.card.human={Path(__file__).parent / 'tiny_card.yaml'}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("export")
  run_main(CONFIG, f"--workdir={workdir}", "--mode=ingest,train",
           f"--config.data.root={workdir / 'data'}",
           "--config.train.steps=5")
  result = run_main(CONFIG, f"--workdir={workdir}", "--mode=export",
                    f"--config.data.root={workdir / 'data'}", BUCKETS, SIGNED)
  return workdir, result.stdout


@pytest.fixture
def two_versions(exported, tmp_path):
  """A copy of the export's serving directory with a second version
  published as "canary" (what a second --mode=export ends with), so tests
  that publish or move labels never change the shared export."""
  import shutil
  from export import publish
  workdir, _ = exported
  base = tmp_path / "serving"
  shutil.copytree(workdir / "serving", base)
  publish.promote(base, "tiny", 1, force_reason="the first deployment")
  meta = json.loads((base / "tiny" / "1" / "assets.extra" /
                     "export_metadata.json").read_text())
  assert publish.publish(base / "tiny" / "1", base, "tiny", [], meta,
                         label="canary") == 2
  return base


def test_export_publishes_a_verified_version(exported):
  workdir, stdout = exported
  assert "== export ==" in stdout and "version: 1" in stdout
  base = workdir / "serving"
  version = base / "tiny" / "1"
  assert (version / "saved_model.pb").is_file()
  assert (version / "variables").is_dir()
  # Parameters are variables, not constants: the variables hold exactly the
  # model's float state (parameters + the input normalisation constants).
  import jax
  from flax import nnx
  from chameleon_jax.models import build_model
  model = build_model("unet", num_classes=4, in_channels=1, widths=(8, 16),
                      norm="group")
  floats = sum(x.size for x in jax.tree.leaves(nnx.state(model))
               if np.issubdtype(x.dtype, np.floating))
  stored = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(
      str(version / "variables" / "variables")) if "model_variables" in name)
  assert stored == floats > 6000
  meta = json.loads((version / "assets.extra" / "export_metadata.json")
                    .read_text())
  assert meta["platforms"] == ["cpu", "cuda"]
  assert meta["xla_call_module_version"] >= 9
  assert meta["verification"]["passed"]
  for check in meta["verification"]["checks"]:
    assert check["max_abs_logit_diff"] <= 1e-5 * check["max_abs_logit"]
    assert check["alarms_equal"]
    assert check["class_agreement"] >= 0.999
  assert meta["input_contract"]["buckets"] == [[32, 32], [64, 96]]
  assert json.loads((base / "tiny" / "labels.json").read_text()) == {
      "canary": 1}  # stable moves only by promotion (test_promotion_...).
  # Trained without --mode=eval: no evaluation stored with the version.
  assert meta["evaluation"] == []


def test_signatures_take_raw_images_of_any_size_within_buckets(exported):
  workdir, _ = exported
  loaded = tf.saved_model.load(str(workdir / "serving" / "tiny" / "1"))
  serve = loaded.signatures["serving_default"]
  for shape in ((1, 20, 30, 1), (3, 50, 90, 1)):
    images = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
    out = serve(images=tf.constant(images))
    assert out["class_map"].shape == shape[:3]
    assert out["class_map"].dtype == tf.int32
    assert out["probabilities"].shape == shape[:3] + (4,)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1,
                               atol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="larger than"):
    serve(images=tf.zeros((1, 65, 20, 1), tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
    serve(images=tf.zeros((1, 20, 20, 1), tf.float32))  # Declared uint8.


def test_warmup_records_cover_every_bucket_and_batch_size(exported):
  from tensorflow_serving.apis import prediction_log_pb2
  workdir, _ = exported
  path = (workdir / "serving" / "tiny" / "1" / "assets.extra" /
          "tf_serving_warmup_requests")
  shapes = []
  for record in tf.data.TFRecordDataset(str(path)):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    assert request.model_spec.name == "tiny"
    shapes.append((request.model_spec.signature_name, tuple(
        d.size for d in request.inputs["images"].tensor_shape.dim)))
  # By default every batch size the server pads to (1, 2, 4, 8, 16).
  from export.server_flags import ALLOWED_BATCH_SIZES
  assert ALLOWED_BATCH_SIZES == (1, 2, 4, 8, 16)
  assert sorted(shapes) == sorted(
      [("serving_default", (b, h, w, 1)) for b in ALLOWED_BATCH_SIZES
       for h, w in ((32, 32), (64, 96))]
      + [("encoded", (b,)) for b in ALLOWED_BATCH_SIZES for _ in range(2)])


def test_second_export_is_a_new_canary_version_and_configs_parse(
    two_versions):
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  base = two_versions
  assert sorted(p.name for p in (base / "tiny").iterdir()) == [
      "1", "2", "blessings.jsonl", "labels.json"]
  assert json.loads((base / "tiny" / "labels.json").read_text()) == {
      "stable": 1, "canary": 2}
  config = text_format.Parse((base / "models.config").read_text(),
                             model_server_config_pb2.ModelServerConfig())
  (entry,) = config.model_config_list.config
  assert entry.name == "tiny" and list(
      entry.model_version_policy.specific.versions) == [1, 2]
  assert dict(entry.version_labels) == {"stable": 1, "canary": 2}
  container = text_format.Parse(
      (base / "models.container.config").read_text(),
      model_server_config_pb2.ModelServerConfig())
  assert container.model_config_list.config[0].base_path == "/models/tiny"
  command = (base / "serving_command.txt").read_text()
  assert "--xla_gpu_compilation_enabled=true" in command
  assert "--enable_model_warmup=true" in command
  # The official image, run on this directory: the same flags, the models
  # mounted where the container config says, the TF release that exported.
  lines = dict(l[2:].split(": ", 1) for l in command.splitlines())
  for device in ("cpu", "gpu"):
    docker = lines[f"docker {device}"].split()
    image = f"tensorflow/serving:{tf.__version__}" + (
        "-gpu" if device == "gpu" else "")
    cut = docker.index(image)
    assert docker[cut + 1:] == lines[device].split()[1:]
    assert docker[docker.index("--entrypoint") + 1] == "tensorflow_model_server"
    assert docker[docker.index("-v") + 1] == f"{base.resolve()}:/models:ro"
  assert "prometheus_config" in (base / "monitoring.config").read_text()


def test_stable_moves_only_with_a_blessing_a_rollback_or_a_reason(
    two_versions):
  from chameleon_jax.governance import ledger
  from export import publish
  base, model = two_versions, two_versions / "tiny"
  path = model / ledger.LEDGER
  assert [r["kind"] for r in ledger.read(path)] == ["force"]
  assert ledger.read(path)[0]["reason"] == "the first deployment"
  with pytest.raises(publish.PromotionError, match="has no blessing"):
    publish.promote(base, "tiny", 2)
  with pytest.raises(publish.PromotionError, match="moves only by promote"):
    publish.set_label(base, "tiny", "stable", 2)
  assert publish.read_labels(model) == {"stable": 1, "canary": 2}
  meta = json.loads((model / "2" / "assets.extra" / "export_metadata.json")
                    .read_text())
  ledger.append(path, "gate", {  # What --mode=gate appends when blessed.
      "blessed": True, "dataset_hash": meta["dataset_hash"],
      "candidate": {"params_sha256": meta["checkpoint"]["params_sha256"]}})
  assert publish.promote(base, "tiny", 2)["kind"] == "promote"
  assert publish.read_labels(model)["stable"] == 2
  assert publish.promote(base, "tiny", 1)["kind"] == "rollback"
  assert publish.read_labels(model)["stable"] == 1
  assert publish.promote(base, "tiny", 1)["kind"] == "unchanged"
  assert len(ledger.read(path)) == 4  # force, gate, promote, rollback
  # Every move is rendered into the version's card.
  card = json.loads((model / "1" / "assets.extra" / "model_card" /
                     "model_card.json").read_text())
  assert [g["kind"] for g in card["gate"]][-1] == "rollback"
  with pytest.raises(ValueError, match="versions that do not exist"):
    publish.set_label(base, "tiny", "canary", 7)
  # A corrupt ledger line: nothing moves, nothing is rewritten.
  with open(path, "a") as f:
    f.write("{not json\n")
  before = path.read_text()
  assert publish.main([f"--model_base_path={base}", "--model=tiny",
                       "--label=stable", "--version=2"]) == 1
  with pytest.raises(ledger.LedgerError, match="blessings.jsonl:5: not JSON"):
    publish.promote(base, "tiny", 2, force_reason="urgent")
  assert path.read_text() == before
  assert publish.read_labels(model)["stable"] == 1
  with pytest.raises(publish.PromotionError, match="cannot be published as"):
    publish.publish(model / "1", base, "tiny", [], meta, label="stable")


def test_stable_needs_a_signed_model_card(two_versions):
  from chameleon_jax.governance import card_render, ledger
  from chameleon_jax.governance import model_card as mc
  from export import publish
  base, model = two_versions, two_versions / "tiny"
  card_dir = model / "2" / "assets.extra" / "model_card"
  card_render.refresh(card_dir, [], human=mc.read_human(None))
  with pytest.raises(publish.PromotionError, match=(
      r"version 2 of 'tiny' is not signed: .* lacks \['owner', "
      r"'intended_use', 'out_of_scope_uses', 'known_limitations'\]")):
    publish.promote(base, "tiny", 2, force_reason="urgent")
  assert publish.read_labels(model)["stable"] == 1
  assert [r["kind"] for r in ledger.read(model / ledger.LEDGER)] == ["force"]
  card_render.refresh(card_dir, [], human=mc.read_human(
      Path(__file__).parent / "tiny_card.yaml"))
  assert publish.promote(base, "tiny", 2, force_reason="urgent")["kind"] \
      == "force"
  (model / "1" / "assets.extra" / "model_card" / "model_card.json").unlink()
  with pytest.raises(publish.PromotionError, match="has no model card"):
    publish.promote(base, "tiny", 1)  # Even a rollback.


def test_card_mode_rebuilds_the_card_of_the_exported_checkpoint(exported,
                                                                 tmp_path):
  import shutil
  from chameleon_jax.governance import model_card as mc
  workdir, stdout = exported
  assert "model_card: " in stdout
  card = mc.read(workdir / "serving" / "tiny" / "1" / "assets.extra" /
                 "model_card" / "model_card.json")
  assert card["human"]["missing"] == [] and card["model"]["version"] == 1
  assert card["training"]["differences"]["train.steps"] == {
      "value": 5, "template": 1000}
  assert card["evaluation"]["figures"] == [] and "--mode=eval" in (
      card["evaluation"]["note"])
  base = tmp_path / "serving"
  shutil.copytree(workdir / "serving", base)
  result = run_main(CONFIG, f"--workdir={workdir}", "--mode=card",
                    f"--config.data.root={workdir / 'data'}",
                    f"--config.export.model_base_path={base}")
  assert "missing human fields: ['owner', 'intended_use'" in result.stdout
  rebuilt = mc.read(base / "tiny" / "1" / "assets.extra" / "model_card" /
                    "model_card.json")
  assert rebuilt["human"]["missing"] == list(mc.HUMAN_FIELDS)
  assert rebuilt["model"]["params_sha256"] == card["model"]["params_sha256"]
  other = tmp_path / "other"
  failed = run_main(CONFIG, f"--workdir={workdir}", "--mode=card",
                    f"--config.data.root={workdir / 'data'}",
                    f"--config.export.model_base_path={other}", check=False)
  assert failed.returncode != 0 and "no version under" in failed.stderr


def _rendered(base: Path, tmp_path: Path, target: str, name: str) -> dict:
  """`--mode=render` over the exports at `base`: the objects of
  <name>.yaml by kind, after checking the file passes offline validation."""
  import yaml
  from infra import validate
  workdir = tmp_path / "render_workdir"
  run_main(CONFIG, f"--workdir={workdir}", "--mode=render",
           f"--target={target}", f"--config.export.model_base_path={base}")
  manifest = workdir / "render" / target / f"{name}.yaml"
  assert validate.validate_file(manifest) == []
  return {o["kind"]: o for o in yaml.safe_load_all(manifest.read_text())}


def test_serving_manifest_names_exactly_what_the_export_produced(two_versions,
                                                                 tmp_path):
  """The rendered Deployment's command line, resolved through its mounts
  (ConfigMap at /etc/tfserving, the bucket's models/ at /models) on a copy
  of the container's filesystem, finds the export's model, versions, warmup
  records and server files."""
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  from export import publish
  base = two_versions
  objects = _rendered(base, tmp_path, "gke-gpu", "serving")
  pod = objects["Deployment"]["spec"]["template"]["spec"]
  (container,) = pod["containers"]
  assert container["image"] == "tensorflow/serving:2.21.0-gpu"
  # Build the container's view: every mount of the pod spec.
  root = tmp_path / "container"
  volumes = {v["name"]: v for v in pod["volumes"]}
  for mount in container["volumeMounts"]:
    volume = volumes[mount["name"]]
    target = root / mount["mountPath"].lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if "configMap" in volume:
      assert volume["configMap"]["name"] == objects["ConfigMap"]["metadata"][
          "name"]
      target.mkdir()
      for key, text in objects["ConfigMap"]["data"].items():
        (target / key).write_text(text)
    else:  # The bucket's models/ directory: export.model_base_path.
      assert "only-dir=models" in volume["csi"]["volumeAttributes"][
          "mountOptions"] and mount["readOnly"]
      target.symlink_to(base, target_is_directory=True)
  flags = dict(a.split("=", 1) for a in container["args"])
  files = {k: root / v.lstrip("/") for k, v in flags.items()
           if k.endswith("_file")}
  assert set(files) == {"--model_config_file", "--batching_parameters_file",
                        "--monitoring_config_file"}
  for flag, path in files.items():  # The export's files, byte for byte.
    assert path.read_text() == (base / path.name).read_text(), flag
  config = text_format.Parse(files["--model_config_file"].read_text(),
                             model_server_config_pb2.ModelServerConfig())
  (entry,) = config.model_config_list.config
  assert entry.name == "tiny"
  model_dir = root / entry.base_path.lstrip("/")
  assert model_dir.resolve() == (base / "tiny").resolve()
  served = list(entry.model_version_policy.specific.versions)
  assert served == publish.versions(base / "tiny") == [1, 2]
  assert dict(entry.version_labels) == publish.read_labels(base / "tiny")
  for version in served:
    assert (model_dir / str(version) / "saved_model.pb").is_file()
    assert (model_dir / str(version) / "assets.extra" /
            publish.WARMUP_FILE).is_file()
  # The same command line as the export's, with the files in /etc/tfserving.
  (gpu_line,) = [l for l in (base / "serving_command.txt").read_text()
                 .splitlines() if l.startswith("# gpu: ")]
  exported_flags = gpu_line.removeprefix("# gpu: ").split()
  assert container["command"] == exported_flags[:1]
  assert [a.replace("/etc/tfserving/", "/models/") for a in
          container["args"]] == exported_flags[1:]
  assert "--xla_gpu_compilation_enabled=true" in container["args"]
  probe = container["readinessProbe"]["httpGet"]
  assert probe["path"] == "/v1/models/tiny" and probe["port"] == "http"
  service_ports = {p["name"]: p["port"] for p in
                   objects["Service"]["spec"]["ports"]}
  assert service_ports == {"grpc": 8500, "http": 8501}
  assert objects["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"


def _module(task: str, tmp_path: Path):
  from chameleon_jax.models import build_model
  from chameleon_jax.model_io.state import model_variables
  from flax import nnx
  from export import savedmodel
  if task == "classification":
    model = build_model("classifier", num_classes=3, in_channels=3,
                        encoder="resnet18")
  else:
    model = build_model("unet", num_classes=3, in_channels=3, widths=(8, 16),
                        norm="batch")
  graphdef = nnx.graphdef(model)
  params, model_state = model_variables(model)
  contract = savedmodel.Contract(
      task=task, class_names=("ok", "scratch", "dent"), channels=3,
      input_dtype="float32", buckets=((32, 32),),
      stride=getattr(model, "stride", 1),
      scale=1.0, image_size=(32, 32) if task == "classification" else None,
      top_k=2, platforms=("cpu",))
  module = savedmodel.ServingModule(graphdef, params, model_state, contract)
  directory = str(tmp_path / task)
  savedmodel.save(module, directory)
  return directory, graphdef, params, model_state, contract


def test_classification_signature_returns_top_k_labels(tmp_path):
  from export import verify
  directory, graphdef, params, state, contract = _module("classification",
                                                         tmp_path)
  report = verify.verify(directory, graphdef, params, state, contract)
  assert report["passed"]
  out = tf.saved_model.load(directory).signatures["serving_default"](
      images=tf.random.uniform((2, 50, 40, 3)))
  assert out["top_k_classes"].shape == (2, 2)
  labels = out["top_k_labels"].numpy()
  names = np.array([b"ok", b"scratch", b"dent"])
  np.testing.assert_array_equal(labels, names[out["top_k_classes"].numpy()])


def test_verification_refuses_a_model_that_disagrees(tmp_path):
  import jax
  from export import verify
  directory, graphdef, params, state, contract = _module("segmentation",
                                                         tmp_path)
  assert verify.verify(directory, graphdef, params, state, contract)[
      "passed"]  # BatchNorm statistics are variables too.
  drifted = jax.tree.map(lambda p: p * 1.01, params)
  with pytest.raises(verify.VerificationError, match="max \\|logit"):
    verify.verify(directory, graphdef, drifted, state, contract)


def test_killed_publisher_leaves_no_visible_version(exported, tmp_path):
  """SIGKILL in the middle of publishing (after the copy, while writing the
  warmup file): the server's view of versions is unchanged, and the next
  publish removes the leftover and continues the numbering."""
  import shutil
  import subprocess
  import sys
  from export import publish
  from export.models import ModelManager
  workdir, _ = exported
  base = tmp_path / "serving"
  shutil.copytree(workdir / "serving", base)
  source = base / "tiny" / "1"
  before = publish.versions(base / "tiny")
  script = (
      "import os, signal, sys\n"
      "from pathlib import Path\n"
      "from export import publish\n"
      "def die(path, requests):\n"
      "  Path(path).write_bytes(b'partial')\n"
      "  os.kill(os.getpid(), signal.SIGKILL)\n"
      "publish.write_warmup = die\n"
      f"publish.publish(Path({str(source)!r}), Path({str(base)!r}), 'tiny',"
      " [], {})\n")
  result = subprocess.run([sys.executable, "-c", script],
                          cwd=Path(__file__).resolve().parents[1])
  assert result.returncode == -9
  leftovers = list((base / "tiny").glob(".tmp-*"))
  assert len(leftovers) == 1  # Half-written, under a name no server loads.
  assert publish.versions(base / "tiny") == before
  manager = ModelManager(base)
  manager.refresh()
  assert [v.version for v in manager.status("tiny")] == sorted(
      set(publish.read_labels(base / "tiny").values()))
  version = publish.publish(source, base, "tiny", [], {"again": True})
  assert version == before[-1] + 1
  assert not list((base / "tiny").glob(".tmp-*"))


def test_the_version_carries_a_monitoring_reference_that_the_log_reproduces(
    exported, tmp_path):
  """The reference (export: the val split through the SavedModel) and the
  stand-in server's request log measure the same image identically,
  whichever signature served it: a window differs from the reference only
  by its images."""
  import io
  import portpicker
  from PIL import Image
  from chameleon_jax.data import dataset, records
  from chameleon_jax.monitoring import events, reference
  from export.client import GrpcClient
  from export.server import Server
  workdir, _ = exported
  version = workdir / "serving" / "tiny" / "1"
  profile = reference.load(version)
  meta = json.loads((version / "assets.extra" / "export_metadata.json")
                    .read_text())
  ds = dataset.latest(workdir / "data", "tiny")
  val = [records.decode_record(r) for p in ds.shard_paths("val")
         for r in records.read(Path(p))]
  assert profile.images == len(val) == meta["monitoring_reference"]["images"]
  assert profile.defect.tolist() == [bool(((v["mask"] > 0) & (v["mask"] < 255))
                                          .any()) for v in val]
  assert profile.false_alarm_budget is None  # argmax masks, no budget
  log = tmp_path / "requests.jsonl"
  server = Server(str(workdir / "serving"), portpicker.pick_unused_port(),
                  portpicker.pick_unused_port(), warmup=False,
                  request_log=str(log), request_log_sample_rate=1.0).start()
  try:
    plain = GrpcClient(f"127.0.0.1:{server.port}", "tiny")
    encoded = GrpcClient(f"127.0.0.1:{server.port}", "tiny")
    for v in val[:4]:
      plain.predict(v["image"][None])
      buffer = io.BytesIO()
      Image.fromarray(v["image"][..., 0]).save(buffer, format="PNG")
      encoded.predict_encoded([buffer.getvalue()])
    server.request_log.flush()
  finally:
    server.stop()
  logged = events.Reader(log).read()
  assert [e["signature"] for e in logged] == ["serving_default",
                                              "encoded"] * 4
  for i, event in enumerate(logged):
    assert (event["model"], event["version"]) == ("tiny", 1)
    for name, value in event["inputs"].items():
      assert value == pytest.approx(profile.inputs[name][i // 2], abs=1e-6)
    for name, value in event["outputs"].items():  # 16-bit PNG p(defect)
      assert value == pytest.approx(profile.outputs[name][i // 2], abs=1e-4)
    np.testing.assert_allclose(event["embedding"], profile.embeddings[i // 2],
                               atol=1e-5)
    assert (log.parent / event["sample"]).is_file()


def test_monitoring_manifests_and_alert_rules(two_versions, tmp_path,
                                              prometheus_bin):
  """With serving, --mode=render writes the monitor's Deployment, Service
  and PrometheusRule: valid offline (strict schemas), reading the models
  the serving Deployment serves, with rules Prometheus's own promtool
  loads."""
  import subprocess
  import yaml
  from infra import monitoring, validate
  objects = _rendered(two_versions, tmp_path, "cpu", "monitoring")
  assert set(objects) == {"Deployment", "Service", "PrometheusRule"}
  (container,) = objects["Deployment"]["spec"]["template"]["spec"][
      "containers"]
  assert container["command"] == ["python", "-m", "chameleon_jax.monitoring"]
  flags = dict(a.split("=", 1) for a in container["args"])
  assert flags["--model_base_path"] == "/mnt/shared/models"  # serving's too
  assert flags["--log"].startswith("/mnt/shared/logs/")
  assert container["image"].endswith("/chameleon-train:0.1.0")
  groups = objects["PrometheusRule"]["spec"]["groups"]
  assert groups == monitoring.rule_groups("tiny")
  rules = tmp_path / "rules.yaml"
  rules.write_text(yaml.safe_dump({"groups": groups}))
  check = subprocess.run([str(prometheus_bin / "promtool"), "check", "rules",
                          str(rules)], capture_output=True, text=True)
  assert check.returncode == 0 and "SUCCESS: 4 rules found" in check.stdout, \
      check.stdout + check.stderr
  # A malformed rule is refused by both checks.
  broken = json.loads(json.dumps(objects["PrometheusRule"]))
  broken["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
  assert any("does not match" in p for p in validate.validate_object(
      broken, "1.30"))
  rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
      {"alert": "A", "expr": "chameleon_monitor_drift_alarm{"}]}]}))
  assert subprocess.run([str(prometheus_bin / "promtool"), "check", "rules",
                         str(rules)], capture_output=True).returncode != 0
