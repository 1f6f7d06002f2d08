"""ETL throughput and memory: ingest of large images, Grain pipeline speed.

  python benchmarks/etl.py [--num_images=2000 --size=1024 --crop=256
      --workers=1,2,4 --preset=industrial]

Generates `num_images` grey 8-bit size x size images with masks (a random
smooth texture, sensor noise and 0-3 small defects each, as PNG pairs) in a
temporary folder, then prints, measured in this run:
  - ingest (`--mode=ingest` path: decode, validate, fingerprint, duplicates,
    quality, shards, report) images/s and the ingest process's peak resident
    memory, for the full set and for a quarter of it: equal peaks show that
    memory does not grow with the dataset;
  - Grain training pipeline images/s (read, crop with foreground
    oversampling, augmentation preset, batch) at each worker count, next to
    the images/s the default UNet's training step consumes at that crop.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def generate(folder: Path, num_images: int, size: int, seed: int = 0) -> None:
  (folder / "images").mkdir(parents=True)
  (folder / "masks").mkdir()
  rng = np.random.default_rng(seed)
  for k in range(num_images):
    coarse = Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8))
    image = np.asarray(coarse.resize((size, size), Image.BICUBIC),
                       np.float32) * 0.5 + 64
    image += rng.normal(0, 6, (size, size))
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(0, 4))):
      r, c = rng.integers(16, size - 16, 2)
      radius = int(rng.integers(3, 12))
      mask[r - radius:r + radius, c - radius:c + radius] = 1
      image[r - radius:r + radius, c - radius:c + radius] -= 40
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
        folder / "images" / f"{k:05d}.png", compress_level=1)
    Image.fromarray(mask).save(folder / "masks" / f"{k:05d}.png")


def ingest(folder: Path, out: Path) -> None:
  """Runs in a child process, so its peak memory is its own; prints JSON."""
  from chameleon_jax.data import dataset, sources
  start = time.perf_counter()
  info, items = sources.image_mask_folders(str(folder))
  dataset.build(info, items, out, "bench",
                dataset.IngestOptions({"train": 0.8, "val": 0.1, "test": 0.1}),
                log=lambda *_: None)
  print(json.dumps({
      "seconds": time.perf_counter() - start,
      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def timed_ingest(folder: Path, out: Path) -> tuple[float, float]:
  """(seconds, peak resident MB) of an ingest (imports excluded)."""
  result = subprocess.run([sys.executable, __file__, "--ingest_child",
                           str(folder), str(out)], check=True,
                          capture_output=True, text=True)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  return report["seconds"], report["peak_mb"]


def pipeline_rate(ds, crop: int, batch: int, workers: int, batches: int,
                  preset: str) -> float:
  from chameleon_jax.data import augment, pipeline
  it = pipeline.train_iterator(
      ds, split="train", local_batch_size=batch, seed=0, size=None,
      size_policy="crop",
      augment=augment.from_preset(preset, crop_size=(crop, crop),
                                  foreground_crop_fraction=0.33),
      num_workers=workers)
  next(it)  # Worker start-up excluded.
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num_images", type=int, default=2000)
  parser.add_argument("--size", type=int, default=1024)
  parser.add_argument("--crop", type=int, default=256)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--workers", default="1,2,4")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--preset", default="industrial")
  parser.add_argument("--ingest_child", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.ingest_child:
    ingest(Path(args.ingest_child[0]), Path(args.ingest_child[1]))
    return

  from absl import flags
  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags.
  from benchmarks.train_throughput import step_throughput
  from chameleon_jax.data import dataset

  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    quarter = max(1, args.num_images // 4)
    start = time.perf_counter()
    generate(tmp / "full", args.num_images, args.size)
    generate(tmp / "quarter", quarter, args.size, seed=1)
    print(f"generated {args.num_images} + {quarter} {args.size}x{args.size} "
          f"grey PNG pairs in {time.perf_counter() - start:.0f} s")
    print("| images | ingest s | images/s | peak RSS MB |")
    print("| ---: | ---: | ---: | ---: |")
    for name, n in (("quarter", quarter), ("full", args.num_images)):
      seconds, peak = timed_ingest(tmp / name, tmp / f"out-{name}")
      print(f"| {n} | {seconds:.0f} | {n / seconds:.1f} | {peak:.0f} |",
            flush=True)
    ds = dataset.latest(tmp / "out-full", "bench")
    fp = ds.read_json("fingerprint.json")
    print(f"fingerprint: {fp['images']['count']} images, "
          f"{fp['masks']['empty']} empty masks; "
          f"{len(ds.read_json('duplicates.json')['near'])} near-duplicate "
          "pairs")
    consumed = step_throughput("float32", args.crop, args.batch, n_steps=5)[0]
    print(f"\nGrain pipeline, {args.crop}px crops of {args.size}px images, "
          f"preset {args.preset!r}, batch {args.batch}; the default UNet's "
          f"fp32 training step consumes {consumed:.1f} img/s here")
    print("| workers | images/s | x step consumption |")
    print("| ---: | ---: | ---: |")
    for workers in map(int, args.workers.split(",")):
      rate = pipeline_rate(ds, args.crop, args.batch, workers, args.batches,
                           args.preset)
      print(f"| {workers} | {rate:.1f} | {rate / consumed:.1f} |", flush=True)


if __name__ == "__main__":
  main()
