"""Clients for TF Serving (the official server or the local stand-in).

`GrpcClient` talks PredictionService / ModelService through the official
stubs: it reads the served signature once (GetModelMetadata) and validates
and casts every request against it before sending (dtype, rank, channel
count), sets a deadline on every call, retries UNAVAILABLE with exponential
backoff, and raises gRPC's message-size limits for image batches.
`RestClient` does the same over the REST API. Both send image files as
they are to the `encoded` signature (`predict_encoded`: bytes over gRPC,
{"b64": ...} over REST, decoded in the served graph); `encoded_image`
re-encodes what the graph cannot decode (TIFF) as PNG at its bit depth.
The CLI sends a folder of images and writes masks, overlays and the served
decisions (predictions.json: alarm, alarm_score, defect pixels):

  python -m export.client --target=127.0.0.1:8500 --model=NAME \\
      --input_dir=images/ --output_dir=masks/ [--protocol=rest \\
      --target=http://127.0.0.1:8501]
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

MAX_MESSAGE_BYTES = 256 << 20


ENCODED_SIGNATURE = "encoded"
# What the served graph decodes (savedmodel.ENCODED_FORMATS); other files
# are re-encoded as PNG by `encoded_image`.
DECODED_IN_GRAPH = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class RequestError(ValueError):
  """A request that does not fit the served signature (never sent)."""


def decoded_outputs(outputs: dict) -> dict[str, np.ndarray]:
  """The `encoded` signature's answer as arrays: class_map (B, H, W) and
  defect_probability (B, H, W) in [0, 1] from their PNGs, the rest as is."""
  out = {}
  for key, value in outputs.items():
    if key == "class_map_png_bytes":
      out["class_map"] = np.stack([tf.io.decode_png(v).numpy()[..., 0]
                                   for v in value]).astype(np.int32)
    elif key == "defect_probability_png_bytes":
      out["defect_probability"] = np.stack([
          tf.io.decode_png(v, dtype=tf.uint16).numpy()[..., 0]
          for v in value]).astype(np.float32) / 65535.0
    else:
      out[key] = np.asarray(value)
  return out


def encoded_image(path: str | Path) -> bytes:
  """The bytes to send for an image file: the file itself when the served
  graph decodes its format, else (TIFF) the image as a PNG at its bit
  depth (8 or 16 bits, 1 to 4 channels)."""
  path = Path(path)
  if path.suffix.lower() in DECODED_IN_GRAPH:
    return path.read_bytes()
  from chameleon_jax.data import images as imio  # pylint: disable=import-outside-toplevel
  return tf.io.encode_png(imio.load_image(path)).numpy()


def check_inputs(inputs: dict[str, np.ndarray], spec: dict) -> dict:
  """Validates and casts inputs against {name: (dtype, shape or None)}."""
  missing, extra = set(spec) - set(inputs), set(inputs) - set(spec)
  if missing or extra:
    raise RequestError(f"inputs {sorted(inputs)} do not match the signature "
                       f"inputs {sorted(spec)} (missing {sorted(missing)}, "
                       f"extra {sorted(extra)}).")
  out = {}
  for name, value in inputs.items():
    dtype, shape = spec[name]
    value = np.asarray(value)
    if shape is not None:
      if value.ndim != len(shape):
        raise RequestError(f"input {name!r} has shape {value.shape}; the "
                           f"signature expects rank {len(shape)} {shape}.")
      for got, want in zip(value.shape, shape):
        if want not in (-1, None) and got != want:
          raise RequestError(f"input {name!r} has shape {value.shape}; the "
                             f"signature expects {shape}.")
    target = np.dtype(dtype)
    if value.dtype != target:
      # Integers only from whole values in range (e.g. float 0..255 images to
      # uint8); floats from anything numeric (e.g. float64 to float32).
      if np.issubdtype(target, np.integer) and value.size:
        info = np.iinfo(target)
        if (value.min() < info.min or value.max() > info.max or
            not np.all(np.mod(value, 1) == 0)):
          raise RequestError(
              f"input {name!r} ({value.dtype}, range {value.min()}.."
              f"{value.max()}) cannot be cast losslessly to {target}.")
      value = value.astype(target)
    out[name] = value
  return out


class GrpcClient:
  """A TF Serving PredictionService client (Predict, GetModelMetadata,
  GetModelStatus) over gRPC, images in and class maps out.
  """

  def __init__(self, target: str, model: str, signature: str = "",
               version: int | None = None, label: str = "",
               timeout_s: float = 30.0, retries: int = 4,
               backoff_s: float = 0.2):
    self.model, self.signature = model, signature or "serving_default"
    self.version, self.label = version, label
    self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
    self.channel = grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(
        self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
    self._spec = None

  def close(self) -> None:
    self.channel.close()

  def _model_spec(self, target) -> None:
    target.name = self.model
    if self.version is not None:
      target.version.value = self.version
    if self.label:
      target.version_label = self.label

  def _call(self, method, request):
    delay = self.backoff_s
    for attempt in range(self.retries + 1):
      try:
        return method(request, timeout=self.timeout_s)
      except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
          raise
        time.sleep(delay)
        delay *= 2

  def metadata(self) -> dict:
    """{signature name: SignatureDef} as served."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    self._model_spec(request.model_spec)
    request.metadata_field.append("signature_def")
    response = self._call(self.prediction.GetModelMetadata, request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return dict(signatures.signature_def)

  def input_spec(self) -> dict:
    if self._spec is None:
      signature = self.metadata()[self.signature]
      self._spec = {
          name: (tf.as_dtype(info.dtype).as_numpy_dtype,
                 None if info.tensor_shape.unknown_rank else
                 [d.size for d in info.tensor_shape.dim])
          for name, info in signature.inputs.items()}
    return self._spec

  def status(self) -> list:
    request = get_model_status_pb2.GetModelStatusRequest()
    self._model_spec(request.model_spec)
    return list(self._call(self.models.GetModelStatus,
                           request).model_version_status)

  def predict(self, inputs: dict | np.ndarray,
              output_filter: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    spec = self.input_spec()
    if not isinstance(inputs, dict):
      inputs = {next(iter(spec)): inputs}
    inputs = check_inputs(inputs, spec)
    request = predict_pb2.PredictRequest()
    self._model_spec(request.model_spec)
    request.model_spec.signature_name = self.signature
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    response = self._call(self.prediction.Predict, request)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

  def predict_encoded(self, images: list[bytes]) -> dict[str, np.ndarray]:
    """Encoded images (one size) through the `encoded` signature; the
    answer as arrays (`decoded_outputs`)."""
    request = predict_pb2.PredictRequest()
    self._model_spec(request.model_spec)
    request.model_spec.signature_name = ENCODED_SIGNATURE
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(
        list(images), dtype=tf.string))
    response = self._call(self.prediction.Predict, request)
    return decoded_outputs({k: tf.make_ndarray(v)
                            for k, v in response.outputs.items()})


class RestClient:
  """The REST API: status, metadata and predict (columnar JSON)."""

  def __init__(self, base_url: str, model: str, signature: str = "",
               version: int | None = None, label: str = "",
               timeout_s: float = 30.0):
    path = f"/v1/models/{model}"
    if version is not None:
      path += f"/versions/{version}"
    elif label:
      path += f"/labels/{label}"
    self.url = base_url.rstrip("/") + path
    self.signature, self.timeout_s = signature, timeout_s

  def _request(self, url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
        return json.loads(reply.read())
    except urllib.error.HTTPError as e:
      message = json.loads(e.read() or b"{}").get("error", str(e))
      raise RequestError(f"HTTP {e.code}: {message}") from e

  def status(self) -> dict:
    return self._request(self.url)

  def metadata(self) -> dict:
    return self._request(self.url + "/metadata")

  def predict(self, inputs: dict | np.ndarray) -> dict | list:
    body = {"inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}
            if isinstance(inputs, dict) else np.asarray(inputs).tolist()}
    if self.signature:
      body["signature_name"] = self.signature
    return self._request(self.url + ":predict", body)["outputs"]

  def predict_encoded(self, images: list[bytes]) -> dict[str, np.ndarray]:
    """Encoded images (one size) as {"b64": ...} through the `encoded`
    signature; the answer as arrays (`decoded_outputs`)."""
    body = {"signature_name": ENCODED_SIGNATURE, "inputs": {"images": [
        {"b64": base64.b64encode(data).decode("ascii")} for data in images]}}
    outputs = self._request(self.url + ":predict", body)["outputs"]
    return decoded_outputs({k: [base64.b64decode(x["b64"]) for x in v]
                            if k.endswith("_bytes") else v
                            for k, v in outputs.items()})


def main():
  """Command line: send the images of a folder to a server and write the
  masks, overlays and decisions it returns.
  """
  parser = argparse.ArgumentParser(description="Send a folder of images.")
  parser.add_argument("--target", default="127.0.0.1:8500",
                      help="host:port (grpc) or http://host:port (rest)")
  parser.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
  parser.add_argument("--model", required=True)
  parser.add_argument("--label", default="")
  parser.add_argument("--input_dir", required=True)
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--timeout_s", type=float, default=30.0)
  args = parser.parse_args()
  from chameleon_jax.data import images as imio
  from chameleon_jax.data import overlays
  client = (GrpcClient(args.target, args.model, label=args.label,
                       timeout_s=args.timeout_s) if args.protocol == "grpc"
            else RestClient(args.target, args.model, label=args.label,
                            timeout_s=args.timeout_s))
  out = Path(args.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  summary = []
  for path in imio.list_images(args.input_dir):
    result = client.predict_encoded([encoded_image(path)])
    if "class_map" in result:
      mask = np.asarray(result["class_map"][0]).astype(np.uint8)
      imio.save_mask_png(out / f"{path.stem}_mask.png", mask)
      imio.save_png(out / f"{path.stem}_overlay.png",
                    overlays.panel(imio.load_image(path), None, mask))
      summary.append({"file": str(path),
                      "defect_pixels": int((mask > 0).sum()),
                      "alarm": bool(result["alarm"][0]),
                      "alarm_score": float(result["alarm_score"][0])})
    else:
      summary.append({"file": str(path), "top_k": [
          x.decode() if isinstance(x, bytes) else str(x)
          for x in result["top_k_labels"][0]],
          "scores": np.asarray(result["top_k_scores"][0]).tolist()})
  (out / "predictions.json").write_text(json.dumps(summary, indent=1) + "\n")
  print(f"wrote {len(summary)} predictions to {out}")


if __name__ == "__main__":
  main()
