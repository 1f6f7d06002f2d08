"""The development stand-in for TF Serving: same protocols, same directories.

  python -m export.server --model_base_path=workdirs/x/serving \\
      [--port=8500 --rest_api_port=8501 --poll_seconds=2 --max_batch_size=16
       --max_request_bytes=67108864 --read_timeout_s=30
       --request_log=LOG.jsonl --request_log_sample_rate=0.0]

Binds to 127.0.0.1 only. Speaks TF Serving's gRPC API (PredictionService:
Predict, GetModelMetadata; ModelService: GetModelStatus) through the official
`tensorflow-serving-api` stubs, and its REST API (`GET /v1/models/NAME
[/versions/N | /labels/L][/metadata]`, `POST ...:predict` with "instances" or
"inputs"), serves `model_base_path` as publish.py lays it out (several
models, version policies and labels from models.config), picks up new
versions without a restart, batches concurrent requests, and exposes
TF Serving's Prometheus metrics, under its names, labels and units
(serving_metrics.py), at /monitoring/prometheus/metrics. Errors carry TF
Serving's status codes; no request can crash it. Limits: a request of more
examples than `max_batch_size` or more bytes than `max_request_bytes` is
refused before it is decoded, a REST client that stops sending is dropped
after `read_timeout_s`, and batches are padded to the allowed batch sizes
(server_flags.py) that the warmup requests compile. With --request_log,
every served image's statistics are logged for the monitor
(request_log.py; chameleon_jax/monitoring/).

This is not TF Serving: it runs the SavedModels with TensorFlow's Python
runtime. Production uses the official image with the command line in
<model_base_path>/serving_command.txt.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from concurrent import futures
from http.server import ThreadingHTTPServer

import grpc
import prometheus_client as prom
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from export import rest, server_flags
from export.batching import Batcher
from export.models import ModelManager, ServingError
from export.request_log import RequestLog
from export.serving_metrics import ServingMetrics

MAX_MESSAGE_BYTES = 256 << 20


class StandInMetrics:
  """The stand-in's own metrics (not TF Serving's, so not under its names),
  printed by prometheus_client after TF Serving's page."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    self.batch_size = prom.Histogram(
        "chameleon_standin_batch_size", "Examples per model call (the "
        "stand-in's batcher).", buckets=(1, 2, 4, 8, 16, 32, 64),
        registry=self.registry)


class Service:
  """Protocol-independent request handling (gRPC and REST share it).

  Args:
    manager: the served models.
    max_batch_size: the largest batch the batcher forms; a request of more
      examples is refused (TF Serving's words) before it is decoded.
    batch_timeout_s: how long the first request of a batch waits for more.
    max_response_bytes: a response larger than this (gRPC's send limit) is
      refused as RESOURCE_EXHAUSTED, not counted as sent.
    request_log: where answered requests' images are logged for the monitor
      (request_log.py); None = not logged.
  """

  def __init__(self, manager: ModelManager,
               max_batch_size: int = server_flags.MAX_BATCH_SIZE,
               batch_timeout_s: float = server_flags.BATCH_TIMEOUT_MICROS / 1e6,
               max_response_bytes: int = MAX_MESSAGE_BYTES,
               request_log: "RequestLog | None" = None):
    self.manager = manager
    self.request_log = request_log
    self.max_batch_size = max_batch_size
    self.max_response_bytes = max_response_bytes
    self.metrics = ServingMetrics()
    self.own_metrics = StandInMetrics()
    self.batcher = Batcher(
        max_batch_size, batch_timeout_s, self.own_metrics.batch_size,
        server_flags.allowed_batch_sizes(max_batch_size))

  def metrics_page(self) -> bytes:
    """/monitoring/prometheus/metrics: TF Serving's metrics as TF Serving
    prints them, then the stand-in's own."""
    return (self.metrics.page().encode()
            + prom.generate_latest(self.own_metrics.registry))

  def resolve(self, spec):
    """The served version a ModelSpec names (NOT_FOUND if none)."""
    version = spec.version.value if spec.HasField("version") else None
    return self.manager.resolve(spec.name, version, spec.version_label)

  def _check_shapes(self, request: predict_pb2.PredictRequest,
                    signature) -> None:
    """Refuses negative dimensions and more examples than a batch holds,
    from the tensors' shapes (nothing decoded yet; a tensor of another rank
    than the signature's is left to the signature's own error)."""
    for key, tensor in request.inputs.items():
      dims = [d.size for d in tensor.tensor_shape.dim]
      rank = len(signature.inputs[key].tensor_shape.dim)
      if any(d < 0 for d in dims):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{key}' has a negative dimension in its "
                           f"shape {dims}.")
      if len(dims) == rank and dims and dims[0] > self.max_batch_size:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Task size {dims[0]} is larger than maximum "
                           f"input batch size {self.max_batch_size}")

  def predict(self, request: predict_pb2.PredictRequest,
              entrypoint: str = "GRPC", deliver=None
              ) -> predict_pb2.PredictResponse:
    """One Predict (gRPC, or REST with entrypoint "REST"), counted in TF
    Serving's metrics (serving_metrics.py) once `deliver(response)` (the
    protocol's send) returned: a send that fails counts as CANCELLED, a
    response over the send limit as RESOURCE_EXHAUSTED."""
    start = time.perf_counter()
    name = request.model_spec.name
    try:
      version = self.resolve(request.model_spec)
      signature_name = request.model_spec.signature_name or "serving_default"
      function = version.signature(signature_name)
      signature = version.signature_defs[signature_name]
      expected = set(signature.inputs)
      if set(request.inputs) != expected:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(request.inputs)}!="
            f"{len(expected)} len({{{', '.join(sorted(request.inputs))}}}) != "
            f"len({{{', '.join(sorted(expected))}}}). Sent extra: "
            f"{{{', '.join(sorted(set(request.inputs) - expected))}}}. "
            f"Missing but required: "
            f"{{{', '.join(sorted(expected - set(request.inputs)))}}}.")
      unknown = [o for o in request.output_filter if o not in signature.outputs]
      if unknown:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output tensor alias not found in signature: "
                           f"{unknown[0]} Outputs expected to be in the set "
                           f"{{{','.join(sorted(signature.outputs))}}}.")
      self._check_shapes(request, signature)
      try:
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      except Exception as e:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"cannot parse input tensor: {e}") from e
      run_start = time.perf_counter()
      outputs = self.batcher.run((name, version.version, signature_name),
                                 function, inputs)
      self.metrics.runtime(name, time.perf_counter() - run_start)
      response = predict_pb2.PredictResponse()
      response.model_spec.name = name
      response.model_spec.version.value = version.version
      response.model_spec.signature_name = signature_name
      wanted = list(request.output_filter) or list(outputs)
      for key in wanted:
        response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
      if response.ByteSize() > self.max_response_bytes:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"response of {response.ByteSize()} bytes exceeds "
                           f"the limit of {self.max_response_bytes}; send "
                           "fewer images per request or filter outputs.")
      if deliver is not None:
        try:
          deliver(response)
        except OSError as e:  # The client went away: not a success.
          raise ServingError(grpc.StatusCode.CANCELLED,
                             f"send failed: {e}") from e
      self.metrics.request(name, "OK", entrypoint,
                           time.perf_counter() - start)
      if self.request_log is not None:  # Queued; measured off this thread.
        self.request_log.submit(name, version, signature_name, inputs,
                                outputs)
      return response
    except ServingError as e:
      self.metrics.request(name, e.code.name, entrypoint, 0.0)
      raise
    except tf.errors.OpError as e:  # The graph's own errors (shape, dtype).
      self.metrics.request(name, "INVALID_ARGUMENT", entrypoint, 0.0)
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, e.message) from e
    except (TypeError, ValueError) as e:  # Rejected by the signature (rank).
      self.metrics.request(name, "INVALID_ARGUMENT", entrypoint, 0.0)
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
    except Exception as e:  # Never crash on a request.
      logging.exception("predict failed")
      self.metrics.request(name, "INTERNAL", entrypoint, 0.0)
      raise ServingError(grpc.StatusCode.INTERNAL,
                         f"{type(e).__name__}: {e}") from e

  def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
               ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         "Metadata field(s) must be exactly ['signature_def'], "
                         f"got {fields}.")
    version = self.resolve(request.model_spec)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in version.signature_defs.items():
      signature_map.signature_def[key].CopyFrom(value)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version.version
    response.metadata["signature_def"].CopyFrom(packed)
    return response

  def status(self, request: get_model_status_pb2.GetModelStatusRequest
             ) -> get_model_status_pb2.GetModelStatusResponse:
    spec = request.model_spec
    if spec.version_label:
      numbers = [self.resolve(spec).version]
    else:
      numbers = [spec.version.value] if spec.HasField("version") else [None]
    response = get_model_status_pb2.GetModelStatusResponse()
    for number in numbers:
      for version in self.manager.status(spec.name, number):
        entry = response.model_version_status.add()
        entry.version = version.version
        entry.state = version.state
        entry.status.error_code = (grpc.StatusCode.INTERNAL.value[0]
                                   if version.error else 0)
        entry.status.error_message = version.error
    return response


def _grpc(method):
  def handler(self, request, context):
    try:
      return method(self.service, request)
    except ServingError as e:
      context.abort(e.code, e.message)
  return handler


def _grpc_predict(self, request, context):
  def deliver(_):  # gRPC sends after the handler; a gone client shows here.
    if not context.is_active():
      raise ConnectionAbortedError("the client cancelled the call")
  try:
    return self.service.predict(request, "GRPC", deliver)
  except ServingError as e:
    context.abort(e.code, e.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """gRPC PredictionService: Predict on the managed models."""

  def __init__(self, service: Service):
    self.service = service

  Predict = _grpc_predict
  GetModelMetadata = _grpc(Service.metadata)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """gRPC ModelService: GetModelStatus and HandleReloadConfigRequest."""

  def __init__(self, service: Service):
    self.service = service

  GetModelStatus = _grpc(Service.status)


class Server:
  """gRPC + REST on 127.0.0.1, and the thread that polls for new versions."""

  def __init__(self, model_base_path: str, port: int, rest_api_port: int,
               poll_seconds: float = 2.0,
               max_batch_size: int = server_flags.MAX_BATCH_SIZE,
               batch_timeout_s: float = server_flags.BATCH_TIMEOUT_MICROS / 1e6,
               warmup: bool = True,
               max_request_bytes: int = rest.MAX_REQUEST_BYTES,
               read_timeout_s: float = rest.READ_TIMEOUT_S,
               request_log: str = "", request_log_sample_rate: float = 0.0):
    self.manager = ModelManager(model_base_path, warmup)
    self.manager.refresh()
    self.service = Service(self.manager, max_batch_size, batch_timeout_s)
    self.request_log = self.service.request_log = (RequestLog(
        request_log, self.service.own_metrics.registry,
        request_log_sample_rate) if request_log else None)
    # A larger request is refused by gRPC itself (RESOURCE_EXHAUSTED).
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", max_request_bytes)]
    self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                            options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.service), self.grpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(self.service), self.grpc)
    self.port = self.grpc.add_insecure_port(f"127.0.0.1:{port}")
    self.http = ThreadingHTTPServer(
        ("127.0.0.1", rest_api_port),
        rest.handler(self.service, max_request_bytes, read_timeout_s))
    self.rest_api_port = self.http.server_address[1]
    self._stop = threading.Event()
    self._threads = [
        threading.Thread(target=self.http.serve_forever, daemon=True),
        threading.Thread(target=self._poll, args=(poll_seconds,),
                         daemon=True)]

  def _poll(self, seconds: float) -> None:
    while not self._stop.wait(seconds):
      try:
        self.manager.refresh()
      except Exception:  # A half-written config must not stop polling.
        logging.exception("model refresh failed")

  def start(self) -> "Server":
    self.grpc.start()
    for thread in self._threads:
      thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    self.http.shutdown()
    self.http.server_close()
    self.grpc.stop(grace=None)
    if self.request_log is not None:
      self.request_log.close()


def main():
  """Command line: serve a model base path (TF Serving's flags)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model_base_path", required=True)
  parser.add_argument("--port", type=int, default=8500)
  parser.add_argument("--rest_api_port", type=int, default=8501)
  parser.add_argument("--poll_seconds", type=float, default=2.0)
  parser.add_argument("--max_batch_size", type=int,
                      default=server_flags.MAX_BATCH_SIZE,
                      help="largest batch; larger requests are refused")
  parser.add_argument("--batch_timeout_micros", type=int,
                      default=server_flags.BATCH_TIMEOUT_MICROS)
  parser.add_argument("--enable_model_warmup", type=int, default=1,
                      help="replay assets.extra warmup requests on load")
  parser.add_argument("--max_request_bytes", type=int,
                      default=rest.MAX_REQUEST_BYTES,
                      help="largest gRPC message / REST body accepted")
  parser.add_argument("--read_timeout_s", type=float,
                      default=rest.READ_TIMEOUT_S,
                      help="REST: drop a client that stops sending")
  parser.add_argument("--request_log", default="",
                      help="log every served image's statistics here "
                      "(JSONL, rotated) for the monitor; '' = no log")
  parser.add_argument("--request_log_sample_rate", type=float, default=0.0,
                      help="share of images also kept as PNG beside the log")
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO)
  server = Server(args.model_base_path, args.port, args.rest_api_port,
                  args.poll_seconds, args.max_batch_size,
                  args.batch_timeout_micros / 1e6,
                  bool(args.enable_model_warmup), args.max_request_bytes,
                  args.read_timeout_s, args.request_log,
                  args.request_log_sample_rate).start()
  print(f"serving {args.model_base_path} on 127.0.0.1: gRPC {server.port}, "
        f"REST {server.rest_api_port} (development stand-in)", flush=True)
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    server.stop()


if __name__ == "__main__":
  main()
