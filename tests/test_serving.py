"""Contract tests: the official TF Serving stubs against the local server.

A tiny UNet is exported (random weights: the contract does not depend on
training) and published twice (v1 stable, v2 canary); the server serves the
directory on free ports in this process.
"""

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import grpc  # noqa: E402
import portpicker  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2,  # noqa: E402
                                     get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

NAME = "parts"


def _saved_model(directory: Path, seed: int) -> None:
  from flax import nnx
  from chameleon_jax.models import build_model
  from chameleon_jax.model_io.state import model_variables
  from export import savedmodel
  model = build_model("unet", num_classes=3, in_channels=1, widths=(8, 16),
                      norm="group", seed=seed)
  params, state = model_variables(model)
  contract = savedmodel.Contract(
      task="segmentation", class_names=("ok", "scratch", "dent"), channels=1,
      input_dtype="uint8", buckets=((32, 32), (64, 64)), stride=model.stride,
      scale=1.0, image_size=None, top_k=1, platforms=("cpu",))
  savedmodel.save(savedmodel.ServingModule(nnx.graphdef(model), params,
                                           state, contract), str(directory))
  return contract


def _publish(base: Path, tmp: Path, seed: int, label: str) -> int:
  from export import publish
  contract = _saved_model(tmp / f"sm{seed}", seed)
  requests = publish.warmup_requests(NAME, contract, (1,))
  return publish.publish(tmp / f"sm{seed}", base, NAME, requests,
                         {"seed": seed}, label=label)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  from export.server import Server
  tmp = tmp_path_factory.mktemp("serving")
  base = tmp / "models"
  from export import publish
  assert _publish(base, tmp, 0, "canary") == 1
  # The serving layout as a promotion leaves it (governance, which needs a
  # blessing and a signed model card, is tested in test_export/test_gate).
  publish.write_labels(base / NAME, {"stable": 1, "canary": 1})
  assert _publish(base, tmp, 1, "canary") == 2
  _saved_model(tmp / "other", 5)  # A second model beside the first.
  publish.publish(tmp / "other", base, "other", [], {}, label="")
  publish.write_labels(base / "other", {"stable": 1})
  publish.write_server_files(base)
  srv = Server(str(base), portpicker.pick_unused_port(),
               portpicker.pick_unused_port(), poll_seconds=0.3,
               max_batch_size=8, batch_timeout_s=0.05).start()
  channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
  yield {"server": srv, "base": base, "tmp": tmp, "channel": channel,
         "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
         "models": model_service_pb2_grpc.ModelServiceStub(channel),
         "rest": f"http://127.0.0.1:{srv.rest_api_port}"}
  channel.close()
  srv.stop()


def _request(images, name=NAME, **spec) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  for key, value in spec.items():
    if key == "version":
      request.model_spec.version.value = value
    else:
      setattr(request.model_spec, key, value)
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
  return request


def _image(h=20, w=30, batch=1, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 1),
                                              np.uint8)


def test_predict_latest_and_by_label(server):
  stub = server["predict"]
  response = stub.Predict(_request(_image()), timeout=30)
  assert response.model_spec.version.value == 2  # Latest served version.
  class_map = tf.make_ndarray(response.outputs["class_map"])
  assert class_map.shape == (1, 20, 30) and class_map.dtype == np.int32
  probs = tf.make_ndarray(response.outputs["probabilities"])
  np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
  assert stub.Predict(_request(_image(), version_label="stable"),
                      timeout=30).model_spec.version.value == 1
  assert stub.Predict(_request(_image(), version_label="canary"),
                      timeout=30).model_spec.version.value == 2
  only = stub.Predict(_with_filter(_request(_image()), "class_map"),
                      timeout=30)
  assert list(only.outputs) == ["class_map"]


def _with_filter(request, *names):
  request.output_filter.extend(names)
  return request


def test_metadata_and_status(server):
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  request.model_spec.name = NAME
  request.metadata_field.append("signature_def")
  response = server["predict"].GetModelMetadata(request, timeout=30)
  signatures = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signatures)
  assert {"serving_default", "logits"} <= set(signatures.signature_def)
  images = signatures.signature_def["serving_default"].inputs["images"]
  assert images.dtype == tf.uint8.as_datatype_enum
  assert [d.size for d in images.tensor_shape.dim] == [-1, -1, -1, 1]
  status = get_model_status_pb2.GetModelStatusRequest()
  status.model_spec.name = NAME
  versions = server["models"].GetModelStatus(status, timeout=30)
  assert [(v.version, v.state) for v in versions.model_version_status] == [
      (1, 30), (2, 30)]  # 30 = AVAILABLE


@pytest.mark.parametrize("request_fn, code, text", [
    (lambda: _request(_image(), name="nope"), "NOT_FOUND", "nope"),
    (lambda: _request(_image(), version=9), "NOT_FOUND", "9"),
    (lambda: _request(_image(), version_label="beta"), "NOT_FOUND", "beta"),
    (lambda: _request(_image(), signature_name="classify"),
     "FAILED_PRECONDITION", "Serving signature key \"classify\" not found"),
    (lambda: _alias(_request(_image())), "INVALID_ARGUMENT",
     "input size does not match signature"),
    (lambda: _with_filter(_request(_image()), "mask"), "INVALID_ARGUMENT",
     "output tensor alias not found"),
    (lambda: _request(_image().astype(np.float32)), "INVALID_ARGUMENT",
     "uint8"),
    (lambda: _request(_image(h=70)), "INVALID_ARGUMENT", "larger than every"),
    (lambda: _request(np.zeros((1, 20, 20, 3), np.uint8)), "INVALID_ARGUMENT",
     "1"),  # Three channels into a grey model.
    (lambda: _request(np.zeros((20, 20, 1), np.uint8)), "INVALID_ARGUMENT",
     "shape"),  # No batch axis.
    (lambda: _request(np.zeros((0, 20, 20, 1), np.uint8)), "INVALID_ARGUMENT",
     "'b'"),  # Batch 0: the dimension variable must be >= 1.
])
def test_errors_carry_tf_serving_status_codes(server, request_fn, code, text):
  with pytest.raises(grpc.RpcError) as info:
    server["predict"].Predict(request_fn(), timeout=30)
  assert info.value.code().name == code
  assert text in info.value.details()
  # The server survives every bad request.
  assert server["predict"].Predict(_request(_image()), timeout=30).outputs


def _alias(request):
  request.inputs["pixels"].CopyFrom(request.inputs["images"])
  del request.inputs["images"]
  return request


def test_rest_status_metadata_predict_and_metrics(server):
  rest = server["rest"]

  def get(path):
    with urllib.request.urlopen(rest + path, timeout=30) as reply:
      return json.loads(reply.read())

  def post(path, body):
    request = urllib.request.Request(rest + path, json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as reply:
      return json.loads(reply.read())

  status = get(f"/v1/models/{NAME}")
  assert [v["state"] for v in status["model_version_status"]] == [
      "AVAILABLE", "AVAILABLE"]
  assert get(f"/v1/models/{NAME}/labels/stable")["model_version_status"][0][
      "version"] == "1"
  meta = get(f"/v1/models/{NAME}/versions/2/metadata")
  assert "serving_default" in meta["metadata"]["signature_def"]["signatureDef"]
  image = _image(8, 8)[0].tolist()
  rows = post(f"/v1/models/{NAME}:predict", {"instances": [image, image]})
  assert len(rows["predictions"]) == 2
  assert np.asarray(rows["predictions"][0]["class_map"]).shape == (8, 8)
  cols = post(f"/v1/models/{NAME}/labels/canary:predict",
              {"inputs": {"images": [image]}})
  assert np.asarray(cols["outputs"]["probabilities"]).shape == (1, 8, 8, 3)
  for path, body, status_code in [
      ("/v1/models/nope:predict", {"instances": [image]}, 404),
      (f"/v1/models/{NAME}:predict", {"instances": [[[300]]]}, 400),
      (f"/v1/models/{NAME}:predict", {"signature_name": "x",
                                      "instances": [image]}, 400)]:
    with pytest.raises(urllib.error.HTTPError) as info:
      post(path, body)
    assert info.value.code == status_code
    assert "error" in json.loads(info.value.read())
  with urllib.request.urlopen(rest + "/monitoring/prometheus/metrics",
                              timeout=30) as reply:
    text = reply.read().decode()
  lines = text.splitlines()
  # TF Serving's names and labels (test_metrics_count_as_tf_serving_does
  # holds the figures): REST requests counted with entrypoint "REST".
  rest_latency = [l for l in lines if l.startswith(
      ":tensorflow:serving:request_latency_count{") and
                  'entrypoint="REST"' in l]
  assert rest_latency and 'API="Predict"' in rest_latency[0]
  assert "# TYPE :tensorflow:serving:runtime_latency histogram" in lines
  assert "chameleon_standin_batch_size_count" in text


def test_concurrent_requests_are_batched_and_unchanged(server):
  images = [_image(seed=k) for k in range(8)]
  alone = [tf.make_ndarray(server["predict"].Predict(
      _request(x), timeout=30).outputs["probabilities"]) for x in images]
  histogram = server["server"].service.own_metrics.batch_size

  def totals():  # (examples, model calls) so far.
    samples = {s.name: s.value for metric in histogram.collect()
               for s in metric.samples}
    return (samples["chameleon_standin_batch_size_sum"],
            samples["chameleon_standin_batch_size_count"])

  before = totals()
  results = [None] * 8

  def call(k):
    results[k] = tf.make_ndarray(server["predict"].Predict(
        _request(images[k]), timeout=30).outputs["probabilities"])

  threads = [threading.Thread(target=call, args=(k,)) for k in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for got, want in zip(results, alone):
    np.testing.assert_allclose(got, want, atol=1e-5)
  after = totals()
  assert after[0] - before[0] == 8  # Every example went through the model...
  assert after[1] - before[1] < 8  # ...in fewer calls than requests.


def test_new_version_is_served_without_restart(server):
  version = _publish(server["base"], server["tmp"], 2, "canary")
  assert version == 3
  deadline = time.time() + 60
  while time.time() < deadline:
    try:
      reply = server["predict"].Predict(
          _request(_image(), version_label="canary"), timeout=30)
      if reply.model_spec.version.value == 3:
        break
    except grpc.RpcError:
      pass
    time.sleep(0.2)
  else:
    pytest.fail("version 3 was not picked up")
  assert server["predict"].Predict(_request(_image(), version_label="stable"),
                                   timeout=30).model_spec.version.value == 1


def test_clients_validate_cast_and_retry(server, tmp_path):
  from export.client import GrpcClient, RequestError, RestClient
  client = GrpcClient(f"127.0.0.1:{server['server'].port}", NAME,
                      label="stable")
  whole = _image().astype(np.float64)  # Whole values in 0..255: cast.
  out = client.predict(whole)
  assert out["class_map"].shape == (1, 20, 30)
  with pytest.raises(RequestError, match="cannot be cast losslessly"):
    client.predict(whole + 0.5)
  with pytest.raises(RequestError, match="rank 4"):
    client.predict(_image()[0])
  with pytest.raises(RequestError, match="channels|expects"):
    client.predict(np.zeros((1, 8, 8, 3), np.uint8))
  assert [s.version for s in client.status()] == [1]
  client.close()
  rest = RestClient(server["rest"], NAME, label="stable")
  assert np.asarray(rest.predict(_image(8, 8))["class_map"]).shape == (1, 8, 8)
  # Nothing listens here: UNAVAILABLE is retried with backoff, then raised.
  dead = GrpcClient(f"127.0.0.1:{portpicker.pick_unused_port()}", NAME,
                    retries=2, backoff_s=0.1, timeout_s=2)
  start = time.time()
  with pytest.raises(grpc.RpcError) as info:
    dead.status()
  assert info.value.code() == grpc.StatusCode.UNAVAILABLE
  assert time.time() - start >= 0.3  # Slept 0.1 + 0.2 between attempts.
  dead.close()


def _png(array: np.ndarray) -> bytes:
  return tf.io.encode_png(array).numpy()


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_cli_sends_encoded_files_and_writes_the_served_decisions(
    server, tmp_path, protocol):
  """PNG, JPEG and TIFF files through the CLI (TIFF re-encoded as PNG):
  masks and alarms equal serving_default's on the decoded arrays."""
  import subprocess
  import sys
  from PIL import Image
  from chameleon_jax.data import images as imio
  folder = tmp_path / "in"
  folder.mkdir()
  Image.fromarray(_image(24, 40, seed=0)[0, :, :, 0]).save(folder / "a.png")
  Image.fromarray(_image(31, 17, seed=1)[0, :, :, 0]).save(folder / "b.jpg",
                                                           quality=95)
  Image.fromarray(_image(20, 33, seed=2)[0, :, :, 0]).save(folder / "c.tif")
  target = (f"127.0.0.1:{server['server'].port}" if protocol == "grpc"
            else server["rest"])
  subprocess.run([sys.executable, "-m", "export.client",
                  f"--protocol={protocol}", f"--target={target}",
                  f"--model={NAME}", "--label=stable", f"--input_dir={folder}",
                  f"--output_dir={tmp_path / 'out'}"], check=True,
                 cwd=Path(__file__).resolve().parents[1], timeout=300)
  summary = {Path(r["file"]).name: r for r in json.loads(
      (tmp_path / "out" / "predictions.json").read_text())}
  assert sorted(summary) == ["a.png", "b.jpg", "c.tif"]
  for name, row in summary.items():
    image = imio.load_image(folder / name)
    want = server["predict"].Predict(_request(image[None],
                                              version_label="stable"),
                                     timeout=30).outputs
    mask = np.asarray(Image.open(tmp_path / "out" /
                                 f"{Path(name).stem}_mask.png"))
    np.testing.assert_array_equal(mask, tf.make_ndarray(want["class_map"])[0])
    assert row["alarm"] == bool(tf.make_ndarray(want["alarm"])[0])


def test_encoded_signature_errors_keep_status_codes(server):
  """Corrupt bytes, an empty string, an RGB JPEG into the grey model and an
  image above the largest bucket: INVALID_ARGUMENT over gRPC, 400 over
  REST, and the server answers the next request."""
  import io
  import urllib.error
  from PIL import Image
  from export.client import GrpcClient, RequestError, RestClient
  rgb = io.BytesIO()
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(rgb, "JPEG")
  grpc_client = GrpcClient(f"127.0.0.1:{server['server'].port}", NAME)
  rest_client = RestClient(server["rest"], NAME)
  for data, text in [(b"\x89PNG broken", "Unknown image|decode|Invalid"),
                     (b"", "empty|Empty"),
                     (rgb.getvalue(), "channel count"),
                     (_png(np.zeros((70, 20, 1), np.uint8)), "larger than")]:
    with pytest.raises(grpc.RpcError) as info:
      grpc_client.predict_encoded([data])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(t in info.value.details() for t in text.split("|")), (
        info.value.details())
    with pytest.raises(RequestError, match="HTTP 400"):
      rest_client.predict_encoded([data])
  good = grpc_client.predict_encoded([_png(_image()[0])])
  assert good["class_map"].shape == (1, 20, 30)
  grpc_client.close()
  request = urllib.request.Request(
      server["rest"] + f"/v1/models/{NAME}:predict", json.dumps(
          {"signature_name": "encoded",
           "instances": [{"b64": "not base64!"}]}).encode())
  with pytest.raises(urllib.error.HTTPError) as info:
    urllib.request.urlopen(request, timeout=30)
  assert info.value.code == 400 and b"base64" in info.value.read()


def test_eight_clients_times_200_requests(server):
  """No errors, and server memory stays bounded under sustained load."""
  import resource
  image = _image(32, 32)
  errors = []

  def client(k):
    channel = grpc.insecure_channel(f"127.0.0.1:{server['server'].port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(200):
      try:
        stub.Predict(_request(image), timeout=60)
      except grpc.RpcError as e:
        errors.append(e.code())
    channel.close()

  def run():
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()

  run()  # Warm: allocator pools, gRPC buffers, compiled shapes.
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  run()
  growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss -
               before) / 1024
  assert not errors
  assert growth_mb < 100, f"peak RSS grew by {growth_mb:.0f} MB"


def test_several_models_and_version_policies(server, tmp_path):
  reply = server["predict"].Predict(_request(_image(), name="other"),
                                    timeout=30)
  assert reply.model_spec.version.value == 1
  import shutil
  from export.models import ModelManager
  base = tmp_path / "policies"
  shutil.copytree(server["base"] / NAME, base / NAME)
  from export import publish
  available = publish.versions(base / NAME)
  for policy, expected in (("all {}", available),
                           ("latest { num_versions: 2 }", available[-2:]),
                           ("specific { versions: 1 }", [1])):
    (base / "models.config").write_text(
        "model_config_list { config { name: '%s' base_path: '%s' "
        "model_platform: 'tensorflow' model_version_policy { %s } } }"
        % (NAME, base / NAME, policy))
    manager = ModelManager(base, warmup=False)
    manager.refresh()
    assert [v.version for v in manager.status(NAME)] == expected, policy


def _page(server) -> dict[str, float]:
  """The metrics page as {sample line without value: value}."""
  with urllib.request.urlopen(server["rest"] + "/monitoring/prometheus/"
                              "metrics", timeout=30) as reply:
    text = reply.read().decode()
  return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
          for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_count_as_tf_serving_does(server):
  """One good and two bad gRPC Predicts move TF Serving's counters by
  exactly that much; latency is recorded, in microseconds, for the good
  one only (export/serving_metrics.py has the facts and sources)."""
  ok = f':tensorflow:serving:request_count{{model_name="{NAME}",status="OK"}}'
  bad = (f':tensorflow:serving:request_count{{model_name="{NAME}",'
         f'status="INVALID_ARGUMENT"}}')
  grpc_labels = f'model_name="{NAME}",API="Predict",entrypoint="GRPC"'
  count = f":tensorflow:serving:request_latency_count{{{grpc_labels}}}"
  total = f":tensorflow:serving:request_latency_sum{{{grpc_labels}}}"
  runtime = (f':tensorflow:serving:runtime_latency_count{{model_name='
             f'"{NAME}",API="Predict",runtime="TF1"}}')
  server["predict"].Predict(_request(_image()), timeout=30)  # Cells exist.
  before = _page(server)
  start = time.perf_counter()
  server["predict"].Predict(_request(_image()), timeout=30)
  wall_us = (time.perf_counter() - start) * 1e6
  for bad_request in (_request(_image(h=70)),
                      _request(_image().astype(np.float32))):
    with pytest.raises(grpc.RpcError):
      server["predict"].Predict(bad_request, timeout=30)
  after = _page(server)
  assert after[ok] - before[ok] == 1
  assert after.get(bad, 0) - before.get(bad, 0) == 2
  assert after[count] - before[count] == 1
  assert after[runtime] - before[runtime] >= 1
  # Microseconds: one request of a few milliseconds adds hundreds to
  # thousands, never more than the client waited.
  assert 100 <= after[total] - before[total] <= wall_us * 1.01 + 1
  buckets = [k for k in after if k.startswith(
      f":tensorflow:serving:request_latency_bucket{{{grpc_labels}")]
  assert [k.split('le="')[1][:-2] for k in buckets[:4]] == [
      "10", "18", "32.4", "58.32"] and buckets[-1].endswith('le="+Inf"}')
  assert len(buckets) == 34


# --- Limits (issue 37, item 7) -------------------------------------------

def _count(server, status) -> float:
  return _page(server).get(f':tensorflow:serving:request_count{{model_name='
                           f'"{NAME}",status="{status}"}}', 0)


def test_a_request_larger_than_a_batch_is_refused_before_decoding(server):
  before = _count(server, "INVALID_ARGUMENT")
  with pytest.raises(grpc.RpcError) as info:  # max_batch_size=8 here.
    server["predict"].Predict(_request(_image(batch=9)), timeout=30)
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert info.value.details() == ("Task size 9 is larger than maximum input "
                                  "batch size 8")
  bad = _request(_image())  # A tensor proto claiming a negative dimension.
  bad.inputs["images"].tensor_shape.dim[1].size = -20
  with pytest.raises(grpc.RpcError, match="negative dimension"):
    server["predict"].Predict(bad, timeout=30)
  assert _count(server, "INVALID_ARGUMENT") - before == 2


def test_batches_are_padded_to_the_allowed_sizes():
  from export.batching import Batcher
  seen = []

  def function(images):
    seen.append(int(images.shape[0]))
    return {"out": images * 2, "scalar": tf.constant(1.0)}

  batcher = Batcher(8, 0.0, allowed_batch_sizes=(1, 4, 8))
  for rows in (1, 3, 5, 8):
    x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    out = batcher.run(("m", 1, "s"), function, {"images": x})
    np.testing.assert_array_equal(out["out"], x * 2)  # Own rows only.
  assert seen == [1, 4, 8, 8]


def test_a_failed_or_oversized_send_is_not_counted_ok(server):
  from export.server import Service
  service = Service(server["server"].manager, max_batch_size=8,
                    max_response_bytes=2000)
  with pytest.raises(Exception, match="exceeds the limit of 2000"):
    service.predict(_request(_image()))
  service.max_response_bytes = 1 << 20

  def broken(_):
    raise BrokenPipeError("client went away")

  with pytest.raises(Exception, match="send failed"):
    service.predict(_request(_image()), deliver=broken)
  page = service.metrics.page()
  assert 'status="RESOURCE_EXHAUSTED"} 1' in page
  assert 'status="CANCELLED"} 1' in page
  assert 'status="OK"' not in page


def _raw_http(port: int, head: bytes, body: bytes = b"",
              timeout: float = 30) -> tuple[int, bytes, float]:
  """Sends a raw request; returns (status, reply, seconds to the reply)."""
  import socket
  start = time.perf_counter()
  with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
    s.sendall(head + body)
    reply = b""
    while chunk := s.recv(65536):
      reply += chunk
      if b"\r\n\r\n" in reply and b"}" in reply:
        break
  return int(reply.split()[1]), reply, time.perf_counter() - start


def test_rest_refuses_bad_lengths_and_drops_stalled_clients(server):
  from http.server import ThreadingHTTPServer
  from export import rest
  port = server["server"].rest_api_port
  path = f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\n"
  status, reply, _ = _raw_http(port, (path + "Content-Length: abc\r\n\r\n")
                               .encode())
  assert status == 400 and b"not a byte count" in reply
  status, reply, seconds = _raw_http(
      port, (path + "Content-Length: 1000000000\r\n\r\n").encode())
  assert status == 413 and b"exceeds the limit of 67108864" in reply
  assert seconds < 5  # Refused from the header, nothing read.
  # A client that stops sending is dropped after the read timeout.
  http = ThreadingHTTPServer(("127.0.0.1", 0), rest.handler(
      server["server"].service, read_timeout_s=0.5))
  threading.Thread(target=http.serve_forever, daemon=True).start()
  try:
    status, reply, seconds = _raw_http(
        http.server_address[1], (path + "Content-Length: 100\r\n\r\n")
        .encode(), b'{"instances": [')
    assert status == 408 and 0.4 < seconds < 10
  finally:
    http.shutdown()
    http.server_close()


@pytest.mark.parametrize("value,match", [
    (0.5, "0.5 is not of the expected type uint8"),
    (300, "outside uint8's range"), (-1, "outside uint8's range"),
    ("7", "'7' is not of the expected type uint8")])
def test_rest_casts_nothing_silently(server, value, match):
  image = np.zeros((20, 30, 1), int).tolist()
  image[3][4][0] = value
  request = urllib.request.Request(
      server["rest"] + f"/v1/models/{NAME}:predict",
      data=json.dumps({"instances": [image]}).encode(), method="POST")
  with pytest.raises(urllib.error.HTTPError) as info:
    urllib.request.urlopen(request, timeout=30)
  assert info.value.code == 400
  assert match in json.loads(info.value.read())["error"]
