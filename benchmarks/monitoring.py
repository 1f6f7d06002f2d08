"""The monitor's false alarms, detection and cost on a real exported model.

  python benchmarks/monitoring.py --workdir=W --data_root=R --data_name=N \\
      [--windows=40 --window_sizes=25,50 --latency_requests=200]

W holds an exported version (W/serving/<name>/<latest>, with its reference
profile from the val split). Every held-out test image is served by that
SavedModel (`reference_profile.served_rows`, the request log's own
measurement), clean and under each shift: the project's corruptions
(gaussian_noise, defocus_blur, brightness, jpeg_compression at severities
2 and 3; each image edge-padded to a multiple of PAD px for the jitted
corruption, then cropped back) and a camera gain (x GAIN, clipped). Then:

  false alarms   `--windows` windows of each size drawn without replacement
                 from the clean test rows: the share that alarms (target
                 <= 5 %), and per test family
  detection      the same windows from each shift's rows: the share that
                 alarms (target >= 90 %) and the detection delay in windows
                 (a stream switched at a window boundary: windows until the
                 first alarm, averaged over starting points)
  cost           CPU seconds per image of the log's measurement and of the
                 tests; the stand-in server's latency with and without its
                 request log, side by side (two server processes, requests
                 in alternating blocks)
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

SHIFTS = [(name, severity) for name in ("gaussian_noise", "defocus_blur",
                                        "brightness", "jpeg_compression")
          for severity in (2, 3)] + [("camera_gain", 1)]
GAIN = 1.3
PAD = 64


def _corrupt(images: list[np.ndarray], name: str, severity: int
             ) -> list[np.ndarray]:
  import jax
  from chameleon_jax.robustness import corruptions
  if name == "camera_gain":
    top = np.iinfo(images[0].dtype).max
    return [np.clip(np.rint(x.astype(np.float64) * GAIN), 0, top
                    ).astype(x.dtype) for x in images]
  apply = jax.jit(corruptions.apply, static_argnums=(0, 1, 4))
  out = []
  for i, x in enumerate(images):
    h, w = x.shape[:2]
    padded = np.pad(x, ((0, -h % PAD), (0, -w % PAD), (0, 0)), mode="edge")
    key = jax.random.split(jax.random.key(i), 1)
    scale = corruptions.scale_for((h, w))
    y = np.asarray(apply(name, severity, key, padded[None], scale))[0]
    out.append(y[:h, :w])
  return out


def _label(shift: tuple[str, int]) -> str:
  name, severity = shift
  return {"clean": "clean", "camera_gain": f"camera gain x{GAIN}"}.get(
      name, f"{name} {severity}")


def _windows(n_rows: int, size: int, count: int, seed: int) -> list:
  rng = np.random.default_rng(seed)
  return [rng.choice(n_rows, size, replace=False) for _ in range(count)]


def _delay(alarms: list[bool]) -> float | None:
  """Mean windows until the first alarm, over every starting window."""
  delays = []
  for start in range(len(alarms)):
    later = [i for i, a in enumerate(alarms[start:]) if a]
    if later:
      delays.append(later[0] + 1)
  return float(np.mean(delays)) if delays else None


def _rate(verdicts: list[dict], family: str | None = None) -> float:
  if family is None:
    return float(np.mean([v["drift"] for v in verdicts]))
  return float(np.mean([any(t["alarm"] for t in v["tests"]
                            if t["test"] == family) for v in verdicts]))


def _latency(base: Path, images: list[np.ndarray], requests: int,
             log: Path, block: int = 25) -> dict:
  """p50/p99/mean ms of two stand-in servers (own processes), one with the
  request log and one without, serving the same images in alternating
  blocks of `block` requests (a pause after each block lets the log's
  thread finish, so one server's logging does not land on the other's
  requests)."""
  import subprocess
  import sys
  import portpicker
  from PIL import Image
  from export.client import GrpcClient
  name = next(p.name for p in base.iterdir() if p.is_dir())
  servers, clients = {}, {}
  for k, extra in (("without log", []), ("with log", [f"--request_log={log}"])):
    port = portpicker.pick_unused_port()
    servers[k] = subprocess.Popen(
        [sys.executable, "-m", "export.server", f"--model_base_path={base}",
         f"--port={port}", f"--rest_api_port={portpicker.pick_unused_port()}",
         *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    servers[k].stdout.readline()  # "serving ... on 127.0.0.1" once ready
    clients[k] = GrpcClient(f"127.0.0.1:{port}", name)
  encoded = []
  for x in images:
    buffer = io.BytesIO()
    Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(
        buffer, format="PNG")
    encoded.append(buffer.getvalue())
  for client in clients.values():  # every image size once, untimed
    for data in encoded:
      client.predict_encoded([data])
  times = {k: [] for k in servers}
  for b in range(0, requests, block):
    for k in (("with log", "without log") if (b // block) % 2 else
              ("without log", "with log")):
      for i in range(b, min(requests, b + block)):
        start = time.perf_counter()
        clients[k].predict_encoded([encoded[i % len(encoded)]])
        times[k].append(time.perf_counter() - start)
      time.sleep(0.5)
  for server in servers.values():
    server.terminate()
    server.wait(30)
  return {k: {"p50_ms": 1e3 * float(np.percentile(t, 50)),
              "p99_ms": 1e3 * float(np.percentile(t, 99)),
              "mean_ms": 1e3 * float(np.mean(t))} for k, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data_root", required=True)
  parser.add_argument("--data_name", required=True)
  parser.add_argument("--windows", type=int, default=40)
  parser.add_argument("--window_sizes", default="25,50")
  parser.add_argument("--latency_requests", type=int, default=200)
  parser.add_argument("--latency_only", action="store_true",
                      help="measure serving latency only")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  from chameleon_jax.data import dataset, records
  from chameleon_jax.monitoring import drift, reference, statistics
  from export import reference_profile, savedmodel
  base = Path(args.workdir) / "serving"
  model_dir = next(p for p in base.iterdir() if p.is_dir())
  version = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
  saved = model_dir / str(version)
  meta = json.loads((saved / "assets.extra" / "export_metadata.json")
                    .read_text())
  contract = savedmodel.Contract(**meta["input_contract"])
  ref = reference.load(saved)
  ds = dataset.latest(args.data_root, args.data_name)
  images = [records.decode_record(r)["image"] for p in ds.shard_paths("test")
            for r in records.read(Path(p))]
  print(f"{model_dir.name}/{version}: reference {ref.images} val images "
        f"(alarm rate {ref.alarms / ref.images:.3f}); {len(images)} test "
        "images", flush=True)
  rows, seconds = {}, {}
  for shift in [] if args.latency_only else [("clean", 0)] + SHIFTS:
    start = time.perf_counter()
    shifted = images if shift[0] == "clean" else _corrupt(images, *shift)
    rows[shift] = list(reference_profile.served_rows(saved, contract,
                                                     shifted))
    seconds[shift] = time.perf_counter() - start
    print(f"  served {_label(shift)}: {seconds[shift]:.0f} s",
          flush=True)
  start = time.process_time()
  for x in images[:50]:
    statistics.input_statistics(x)
    statistics.embedding(x)
  measure_cpu = (time.process_time() - start) / min(50, len(images))
  settings = drift.Settings()
  results = {"model": model_dir.name, "version": version,
             "reference_images": ref.images, "test_images": len(images),
             "measure_cpu_s_per_image": measure_cpu, "sizes": {}}
  for size in (int(s) for s in args.window_sizes.split(",")
               if not args.latency_only):
    if size > len(images):
      print(f"window {size} > {len(images)} test images: skipped")
      continue
    draws = _windows(len(images), size, args.windows, seed=size)
    per_size = {}
    test_cpu = []
    for shift, shift_rows in rows.items():
      verdicts = []
      for i, idx in enumerate(draws):
        start = time.process_time()
        verdicts.append(drift.evaluate(
            ref, [shift_rows[j] for j in idx],
            drift.Settings(seed=i, permutations=settings.permutations)))
        test_cpu.append((time.process_time() - start) / size)
      per_size[_label(shift)] = {
          "alarm_rate": _rate(verdicts),
          "families": {f: _rate(verdicts, f) for f in drift.FAMILIES},
          "delay_windows": _delay([v["drift"] for v in verdicts])}
    results["sizes"][size] = {"shifts": per_size,
                              "test_cpu_s_per_image": float(np.mean(test_cpu))}
    print(f"window {size} ({args.windows} windows; monitor CPU "
          f"{1e3 * np.mean(test_cpu):.2f} ms per image for the tests, "
          f"{1e3 * measure_cpu:.1f} ms per image to measure it):")
    for name, r in per_size.items():
      families = ", ".join(f"{f} {v:.2f}" for f, v in r["families"].items())
      delay = ("-" if r["delay_windows"] is None
               else f"{r['delay_windows']:.2f}")
      print(f"  {name:22s} alarm rate {r['alarm_rate']:.3f}  delay {delay}"
            f"  ({families})", flush=True)
  if args.latency_requests:
    latency = _latency(base, images, args.latency_requests,
                       Path(args.workdir) / "bench_log" / "requests.jsonl")
    results["latency"] = latency
    for k, v in latency.items():
      print(f"serving {k:12s}: p50 {v['p50_ms']:.1f} ms, p99 "
            f"{v['p99_ms']:.1f} ms, mean {v['mean_ms']:.1f} ms")
    print(f"with/without log, mean: "
          f"{latency['with log']['mean_ms'] / latency['without log']['mean_ms']:.3f}")
  if args.out:
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
