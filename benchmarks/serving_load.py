"""Serving under load, from a freshly started server (issue 37, item 7).

  python -m benchmarks.serving_load [--size=128 --clients=8 --requests=200]

A random-weight UNet (16-32-64-128, GroupNorm) on size x size x 1 uint8,
published with the export's default warmup (every allowed batch size,
export/server_flags.py) and served by `python -m export.server` in its own
process with the default batching (2 ms window). Side by side in one run:
the same version with its warmup records, and without them
(`--enable_model_warmup=0`: every batch size the batcher forms compiles
under load). For each: `clients` gRPC clients in threads, `requests` one-
image Predicts each, started together on the fresh server; errors, p50,
p99 and p99 / p50 of the per-request latency of this first run. Then the
time the server takes to refuse an oversized request: 4,096 images over
gRPC (more than a batch) and a REST body declaring 1 GB.
Goals: 0 errors; p99 within 3x p50 on the first run; refusals < 1 s.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import portpicker
import tensorflow as tf
from flax import nnx
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from chameleon_jax.model_io.state import model_variables
from chameleon_jax.models import build_model
from export import publish, savedmodel, server_flags

NAME = "parts"


def start_server(base: Path, warmup: bool):
  port, rest = portpicker.pick_unused_port(), portpicker.pick_unused_port()
  process = subprocess.Popen(
      [sys.executable, "-m", "export.server", f"--model_base_path={base}",
       f"--port={port}", f"--rest_api_port={rest}",
       f"--enable_model_warmup={int(warmup)}"],
      cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True)
  process.stdout.readline()  # "serving ..." once models are loaded.
  return process, port, rest


def request(images: np.ndarray) -> predict_pb2.PredictRequest:
  out = predict_pb2.PredictRequest()
  out.model_spec.name = NAME
  out.output_filter.append("class_map")
  out.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
  return out


def load(port: int, clients: int, requests: int, size: int) -> dict:
  """`clients` threads x `requests` Predicts of one (size - 5) x (size - 3)
  image (padded to the bucket by the graph); latencies in ms."""
  latencies, errors = [], []
  lock = threading.Lock()
  go = threading.Barrier(clients)

  def client(k: int) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    image = np.random.default_rng(k).integers(
        0, 256, (1, size - 5, size - 3, 1), np.uint8)
    message = request(image)
    go.wait()
    for _ in range(requests):
      start = time.perf_counter()
      try:
        stub.Predict(message, timeout=120)
        with lock:
          latencies.append((time.perf_counter() - start) * 1e3)
      except grpc.RpcError as e:
        with lock:
          errors.append(e.code().name)
    channel.close()

  threads = [threading.Thread(target=client, args=(k,))
             for k in range(clients)]
  start = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  wall = time.perf_counter() - start
  samples = np.asarray(latencies)
  return {"errors": len(errors), "ok": len(samples),
          "p50": float(np.percentile(samples, 50)),
          "p99": float(np.percentile(samples, 99)),
          "max": float(samples.max()), "rps": len(samples) / wall}


def refusals(port: int, rest_port: int, size: int) -> dict:
  """Seconds to refuse 4,096 images over gRPC and a 1 GB REST body."""
  channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                  options=[("grpc.max_send_message_length",
                                            256 << 20)])
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  big = request(np.zeros((4096, size // 2, size // 2, 1), np.uint8))
  start = time.perf_counter()
  try:
    stub.Predict(big, timeout=120)
    grpc_code = "OK"
  except grpc.RpcError as e:
    grpc_code = e.code().name
  grpc_s = time.perf_counter() - start
  channel.close()
  start = time.perf_counter()
  with socket.create_connection(("127.0.0.1", rest_port), timeout=60) as s:
    s.sendall(f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\n"
              "Content-Length: 1000000000\r\n\r\n".encode())
    reply = s.recv(4096)
  rest_s = time.perf_counter() - start
  return {"grpc_code": grpc_code, "grpc_s": grpc_s,
          "rest_status": int(reply.split()[1]), "rest_s": rest_s,
          "request_mb": big.ByteSize() / 2**20}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--clients", type=int, default=8)
  parser.add_argument("--requests", type=int, default=200)
  args = parser.parse_args()
  size = args.size
  model = build_model("unet", num_classes=2, in_channels=1)
  params, state = model_variables(model)
  contract = savedmodel.Contract(
      task="segmentation", class_names=("background", "defect"), channels=1,
      input_dtype="uint8", buckets=((size, size),), stride=model.stride,
      scale=1.0, image_size=None, top_k=1, platforms=("cpu",))
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    savedmodel.save(savedmodel.ServingModule(nnx.graphdef(model), params,
                                             state, contract), str(tmp / "sm"))
    publish.publish(tmp / "sm", tmp / "models", NAME, publish.warmup_requests(
        NAME, contract, server_flags.ALLOWED_BATCH_SIZES), {})
    for warm in (True, False):
      server, port, rest_port = start_server(tmp / "models", warm)
      try:
        results[warm] = load(port, args.clients, args.requests, size)
        if warm:
          refused = refusals(port, rest_port, size)
      finally:
        server.terminate()
        server.wait()
  print(f"UNet 16-32-64-128 GroupNorm, {size}x{size}x1 uint8, one image per "
        f"request, {args.clients} clients x {args.requests} requests on a "
        "fresh local server; allowed batch sizes "
        f"{server_flags.ALLOWED_BATCH_SIZES}")
  print("| server | errors | p50 ms | p99 ms | max ms | p99 / p50 | "
        "requests/s |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  for warm, r in results.items():
    print(f"| {'warmup records replayed' if warm else 'no warmup'} | "
          f"{r['errors']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} "
          f"| {r['p99'] / r['p50']:.2f} | {r['rps']:.1f} |")
  print(f"oversized gRPC request ({refused['request_mb']:.0f} MB, 4096 "
        f"images): {refused['grpc_code']} in {refused['grpc_s']:.3f} s; "
        f"REST body declaring 1 GB: HTTP {refused['rest_status']} in "
        f"{refused['rest_s']:.3f} s")


if __name__ == "__main__":
  main()
