"""Serving latency: JAX, SavedModel in-process, gRPC and REST round trips.

  python benchmarks/serving.py [--size=256 --batches=1,8 --requests=50]

For the default UNet (16-32-64-128, GroupNorm) on size x size x 3 uint8
images, measured in this run after one warm-up call each:
  - JAX direct: the jitted model (softmax probabilities) on the device;
  - SavedModel in-process: the exported serving signature (pre/post-
    processing included) called through TensorFlow in this process;
  - gRPC and REST: round trips to the local server (`python -m
    export.server`, its own process) through the clients in export/client.py;
  - gRPC and REST encoded: the same images as PNG bytes through the
    `encoded` signature (REST as {"b64": ...}, what the CLI sends);
p50 and p99 latency and requests/s at each batch size. Then the cost of
the calibrated decision rule in the graph (connected components through
jax2tf): in-process p50 of the same model exported with argmax masks and
with a per-class rule, side by side. Then the first-request latency of a
freshly started server with and without the version's warmup records.
Goals: gRPC p50 at batch 1 within 1.3x of the in-process SavedModel call;
REST with encoded images within 1.5x of gRPC (issue 32).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax  # noqa: E402
import numpy as np  # noqa: E402
import portpicker  # noqa: E402
import tensorflow as tf  # noqa: E402
from flax import nnx  # noqa: E402

from chameleon_jax.models import build_model  # noqa: E402
from chameleon_jax.model_io.state import merge, model_variables
from export import publish, savedmodel  # noqa: E402
from export.client import GrpcClient, RestClient  # noqa: E402

NAME = "unet"
# A per-class rule of the kind --mode=eval calibrates (decision.py).
RULE = {"threshold": 0.4, "min_area": 16, "seed_threshold": 0.7,
        "class_seed_thresholds": None, "class_min_areas": None}


def timings(fn, n: int) -> dict:
  fn()  # Warm-up (compilation, connections).
  samples = []
  for _ in range(n):
    start = time.perf_counter()
    fn()
    samples.append(time.perf_counter() - start)
  samples = np.asarray(samples) * 1e3
  return {"p50": float(np.percentile(samples, 50)),
          "p99": float(np.percentile(samples, 99)),
          "rps": float(1e3 / samples.mean())}


def start_server(base: Path, warmup: bool):
  port, rest = portpicker.pick_unused_port(), portpicker.pick_unused_port()
  process = subprocess.Popen(
      [sys.executable, "-m", "export.server", f"--model_base_path={base}",
       f"--port={port}", f"--rest_api_port={rest}",
       f"--enable_model_warmup={int(warmup)}", "--batch_timeout_micros=0"],
      cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True)
  process.stdout.readline()  # "serving ..." once models are loaded.
  return process, port, rest


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--requests", type=int, default=50)
  args = parser.parse_args()
  size, batches = args.size, [int(b) for b in args.batches.split(",")]

  model = build_model("unet", num_classes=2, in_channels=3)
  graphdef = nnx.graphdef(model)
  params, state = model_variables(model)
  contract = savedmodel.Contract(
      task="segmentation", class_names=("background", "defect"), channels=3,
      input_dtype="uint8", buckets=((size, size),), stride=model.stride,
      scale=1.0, image_size=None, top_k=1, platforms=("cpu",))
  forward = jax.jit(lambda p, s, x: jax.nn.softmax(
      merge(graphdef, p, s)(x, train=False), -1))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    savedmodel.save(savedmodel.ServingModule(graphdef, params, state,
                                             contract), str(tmp / "sm"))
    loaded = tf.saved_model.load(str(tmp / "sm"))
    serve = loaded.signatures["serving_default"]
    ruled = dataclasses.replace(contract, decision=RULE)
    savedmodel.save(savedmodel.ServingModule(graphdef, params, state, ruled),
                    str(tmp / "sm_rule"))
    serve_rule = tf.saved_model.load(str(tmp / "sm_rule")).signatures[
        "serving_default"]
    for warm in (True, False):
      requests = (publish.warmup_requests(NAME, contract, batches)
                  if warm else [])
      publish.publish(tmp / "sm", tmp / ("warm" if warm else "cold"), NAME,
                      requests, {})
    server, port, rest_port = start_server(tmp / "warm", warmup=True)
    try:
      grpc_client = GrpcClient(f"127.0.0.1:{port}", NAME)
      rest_client = RestClient(f"http://127.0.0.1:{rest_port}", NAME)
      for batch in batches:
        images = np.random.default_rng(0).integers(
            0, 256, (batch, size, size, 3), np.uint8)
        unit = jax.device_put(images.astype(np.float32) / 255)
        tensor = tf.constant(images)
        pngs = [tf.io.encode_png(x).numpy() for x in images]
        cases = {
            "JAX direct": lambda: forward(params, state, unit)
            .block_until_ready(),
            "SavedModel in-process": lambda: serve(images=tensor)[
                "class_map"].numpy(),
            "SavedModel in-process, calibrated rule": lambda: serve_rule(
                images=tensor)["class_map"].numpy(),
            "gRPC": lambda: grpc_client.predict(images),
            "gRPC encoded": lambda: grpc_client.predict_encoded(pngs),
            "REST": lambda: rest_client.predict(images),
            "REST encoded (b64)": lambda: rest_client.predict_encoded(pngs),
        }
        for name, fn in cases.items():
          n = args.requests if name != "REST" else max(5, args.requests // 5)
          rows.append((name, batch, timings(fn, n)))
      grpc_client.close()
    finally:
      server.terminate()
      server.wait()
    first = {}
    for warm in (True, False):
      server, port, _ = start_server(tmp / ("warm" if warm else "cold"), warm)
      try:
        client = GrpcClient(f"127.0.0.1:{port}", NAME)
        client.input_spec()  # Metadata first: only Predict is timed.
        images = np.zeros((1, size, size, 3), np.uint8)
        start = time.perf_counter()
        client.predict(images)
        first[warm] = (time.perf_counter() - start) * 1e3
        client.close()
      finally:
        server.terminate()
        server.wait()

  print(f"devices: {jax.devices()}; UNet 16-32-64-128 GroupNorm, "
        f"{size}x{size}x3 uint8, local server on 127.0.0.1")
  print("| path | batch | p50 ms | p99 ms | requests/s |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for name, batch, t in rows:
    print(f"| {name} | {batch} | {t['p50']:.1f} | {t['p99']:.1f} | "
          f"{t['rps']:.1f} |")
  inproc = next(t for n, b, t in rows if n == "SavedModel in-process"
                and b == batches[0])
  remote = next(t for n, b, t in rows if n == "gRPC" and b == batches[0])
  rest_b64 = next(t for n, b, t in rows if n == "REST encoded (b64)"
                  and b == batches[0])
  rule = next(t for n, b, t in rows if n.endswith("calibrated rule")
              and b == batches[0])
  print(f"\ngRPC p50 / in-process p50 at batch {batches[0]}: "
        f"{remote['p50'] / inproc['p50']:.2f} (goal <= 1.3)")
  print(f"REST encoded p50 / gRPC p50 at batch {batches[0]}: "
        f"{rest_b64['p50'] / remote['p50']:.2f} (goal <= 1.5)")
  print(f"calibrated rule in the graph: in-process p50 "
        f"{rule['p50']:.1f} ms against {inproc['p50']:.1f} ms with argmax "
        f"masks ({rule['p50'] / inproc['p50']:.2f}x)")
  print(f"first request after start: {first[True]:.0f} ms with warmup, "
        f"{first[False]:.0f} ms without")


if __name__ == "__main__":
  main()
