"""TF Serving's REST API on the local server (development stand-in).

  GET  /v1/models/NAME[/versions/N | /labels/L]           model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata  signature defs
  POST /v1/models/NAME[/versions/N | /labels/L]:predict   {"instances": rows}
                                                          or {"inputs": cols}
  GET  /monitoring/prometheus/metrics                     Prometheus text

Tensors travel as nested JSON lists and are cast to the signature's dtypes;
string tensors (the `encoded` signature's images) as {"b64": "<base64>"};
errors come back as {"error": message} with the HTTP status TF Serving uses.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

import grpc
import numpy as np
import prometheus_client as prom
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2)

from export.models import ServingError, State

PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                  r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                  r"(?P<rest>/metadata|:predict)?$")
HTTP = {grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
        grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
        grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
        grpc.StatusCode.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR}
# Request bodies above this are refused from their Content-Length (413), and
# a client that stops sending mid-request is dropped after READ_TIMEOUT_S.
MAX_REQUEST_BYTES = 64 << 20
READ_TIMEOUT_S = 30.0


class _TooLarge(Exception):
  """Internal: a body over the limit (413, connection closed)."""


def _spec(target, match) -> None:
  target.name = match["name"]
  if match["version"]:
    target.version.value = int(match["version"])
  if match["label"]:
    target.version_label = match["label"]


def _is_b64(value) -> bool:
  return isinstance(value, dict) and set(value) == {"b64"}


def _binary(value):
  """{"b64": text} anywhere in a JSON value -> the bytes it encodes (TF
  Serving's REST convention for string tensors, e.g. encoded images)."""
  if _is_b64(value):
    try:
      return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, TypeError) as e:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"invalid base64 in a {{\"b64\": ...}} value: {e}"
                         ) from e
  if isinstance(value, list):
    return [_binary(v) for v in value]
  return value


def _json_value(name: str, value):
  """A tensor's values for JSON: bytes of outputs named *_bytes as
  {"b64": ...} (TF Serving's rule), other strings as text."""
  if isinstance(value, list):
    return [_json_value(name, v) for v in value]
  if isinstance(value, bytes):
    if name.endswith("_bytes"):
      return {"b64": base64.b64encode(value).decode("ascii")}
    return value.decode("utf-8", "replace")
  return value


def _leaves(value):
  if isinstance(value, list):
    for v in value:
      yield from _leaves(v)
  else:
    yield value


def _tensor(value, dtype) -> np.ndarray:
  """A JSON value as a tensor of the signature's `dtype`, strictly: ragged
  lists, non-numbers, fractions for an integer type and values outside its
  range are refused (nothing is silently cast, as the gRPC path casts
  nothing)."""
  value = _binary(value)
  want = tf.as_dtype(dtype)
  if want == tf.string:
    return np.asarray(value, dtype=object)
  if want.is_bool:
    fits = lambda v: isinstance(v, bool)  # noqa: E731
  elif want.is_integer:
    fits = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
  else:
    fits = lambda v: (isinstance(v, (int, float))  # noqa: E731
                      and not isinstance(v, bool))
  for leaf in _leaves(value):
    if not fits(leaf):
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"JSON value {leaf!r} is not of the expected type "
                         f"{want.name}.")
  try:
    array = np.asarray(value)
  except ValueError as e:  # Ragged nesting.
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"cannot convert JSON to a {want.name} tensor: {e}"
                       ) from e
  if array.dtype == object:  # Ragged, or integers beyond 64 bits.
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"cannot convert JSON to a {want.name} tensor: ragged "
                       "lists or numbers beyond 64 bits.")
  if want.is_integer and array.size and (
      array.min() < want.min or array.max() > want.max):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"JSON values from {array.min()} to {array.max()} are "
                       f"outside {want.name}'s range [{want.min}, "
                       f"{want.max}].")
  return array.astype(want.as_numpy_dtype)


def _predict(service, match, body: dict, send) -> None:
  """Runs the predict request in `body` and `send`s the JSON answer (the
  send counts: a failed one is not an OK in the metrics)."""
  request = predict_pb2.PredictRequest()
  _spec(request.model_spec, match)
  request.model_spec.signature_name = body.get("signature_name", "")
  version = service.resolve(request.model_spec)
  name = request.model_spec.signature_name or "serving_default"
  if name not in version.signature_defs:
    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                       f"Serving signature key \"{name}\" not found.")
  specs = version.signature_defs[name].inputs
  if ("instances" in body) == ("inputs" in body):
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       "Request must have exactly one of \"instances\" (row "
                       "format) or \"inputs\" (columnar format).")
  rows = "instances" in body
  data = body["instances"] if rows else body["inputs"]
  if rows:
    if not isinstance(data, list) or not data:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         "\"instances\" must be a non-empty list.")
    if all(isinstance(r, dict) and not _is_b64(r) for r in data):
      data = {k: [r.get(k) for r in data] for k in data[0]}
  if not isinstance(data, dict):
    if len(specs) != 1:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"unnamed input, but the signature has inputs "
                         f"{sorted(specs)}.")
    data = {next(iter(specs)): data}
  for key, value in data.items():
    dtype = specs[key].dtype if key in specs else tf.float32
    request.inputs[key].CopyFrom(tf.make_tensor_proto(_tensor(value, dtype)))
  service.predict(request, entrypoint="REST",
                  deliver=lambda response: send(_answer(response, rows)))


def _answer(response, rows: bool) -> dict:
  """The JSON of a PredictResponse, in the request's row or column form."""
  outputs = {k: _json_value(k, tf.make_ndarray(v).tolist())
             for k, v in response.outputs.items()}
  if not rows:
    return {"outputs": outputs if len(outputs) > 1
            else next(iter(outputs.values()))}
  if len(outputs) == 1:
    return {"predictions": next(iter(outputs.values()))}
  count = len(next(iter(outputs.values())))
  return {"predictions": [{k: v[i] for k, v in outputs.items()}
                          for i in range(count)]}


def _status(service, match) -> dict:
  request = get_model_status_pb2.GetModelStatusRequest()
  _spec(request.model_spec, match)
  response = service.status(request)
  return {"model_version_status": [
      {"version": str(v.version),
       "state": State.Name(v.state),
       "status": {"error_code": "OK" if not v.status.error_code else
                  "UNKNOWN", "error_message": v.status.error_message}}
      for v in response.model_version_status]}


def _metadata(service, match) -> dict:
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  _spec(request.model_spec, match)
  request.metadata_field.append("signature_def")
  response = service.metadata(request)
  signatures = get_model_metadata_pb2.SignatureDefMap()
  response.metadata["signature_def"].Unpack(signatures)
  return {"model_spec": json_format.MessageToDict(response.model_spec),
          "metadata": {"signature_def": json_format.MessageToDict(signatures)}}


class BaseHandler(BaseHTTPRequestHandler):
  """HTTP handler of TF Serving's REST API (/v1/models/...: predict,
  metadata, status) and /monitoring/prometheus/metrics.
  """
  service = None
  protocol_version = "HTTP/1.1"
  max_request_bytes = MAX_REQUEST_BYTES
  timeout = READ_TIMEOUT_S  # Socket timeout of every read (socketserver).

  def log_message(self, *args):  # Quiet; metrics count requests.
    pass

  def _send(self, status: int, payload, content_type="application/json"):
    body = (payload if isinstance(payload, bytes)
            else json.dumps(payload).encode())
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _dispatch(self, method: str) -> None:
    try:
      if method == "GET" and self.path == "/monitoring/prometheus/metrics":
        self._send(200, self.service.metrics_page(),
                   prom.CONTENT_TYPE_LATEST)
        return
      match = PATH.match(self.path)
      if not match:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Malformed request: {method} {self.path}")
      rest = match["rest"] or ""
      if method == "POST" and rest == ":predict":
        body = self._body()
        try:
          body = json.loads(body or b"{}")
        except ValueError as e:
          raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                             f"JSON Parse error: {e}") from e
        if not isinstance(body, dict):
          raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                             "request body must be a JSON object")
        _predict(self.service, match, body,
                 lambda payload: self._send(200, payload))
      elif method == "GET" and rest == "/metadata":
        self._send(200, _metadata(self.service, match))
      elif method == "GET" and not rest:
        self._send(200, _status(self.service, match))
      else:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Malformed request: {method} {self.path}")
    except _TooLarge as e:
      self.close_connection = True  # The unread body cannot be skipped.
      self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(e)})
    except TimeoutError:
      self.close_connection = True
      self._send(HTTPStatus.REQUEST_TIMEOUT, {
          "error": f"request body not received within {self.timeout:g} s"})
    except ServingError as e:
      if e.code == grpc.StatusCode.CANCELLED:  # The client is gone.
        self.close_connection = True
        return
      self._send(HTTP.get(e.code, 500), {"error": e.message})
    except Exception as e:  # Never crash on a request.
      self._send(500, {"error": f"{type(e).__name__}: {e}"})

  def _body(self) -> bytes:
    """The request body, after its declared length was checked."""
    declared = self.headers.get("Content-Length", "0").strip()
    if not declared.isdigit():
      self.close_connection = True
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"Content-Length {declared!r} is not a byte count.")
    length = int(declared)
    if length > self.max_request_bytes:
      raise _TooLarge(f"request body of {length} bytes exceeds the limit of "
                      f"{self.max_request_bytes} bytes")
    return self.rfile.read(length)

  def do_GET(self):  # noqa: N802
    self._dispatch("GET")

  def do_POST(self):  # noqa: N802
    self._dispatch("POST")


def handler(service, max_request_bytes: int = MAX_REQUEST_BYTES,
            read_timeout_s: float = READ_TIMEOUT_S) -> type[BaseHandler]:
  """A request handler class bound to `service`, with these limits."""
  return type("Handler", (BaseHandler,), {
      "service": service, "max_request_bytes": max_request_bytes,
      "timeout": read_timeout_s})
