"""The served model's decisions on the test split against `--mode=eval`'s.

  python benchmarks/served_vs_eval.py --config=experiments/magnetic_tile.py \
      --workdir=workdirs/pvr_mt25/recipe_s0 --data_root=workdirs/pvr_mt25/data

Exports the trained, evaluated workdir (its calibrated rule and flip
averaging travel in the contract) with the evaluation canvas
(`data.image_size`) as the only bucket, so the served model pads exactly as
the evaluation did; then sends every test image's original file (the
JPEG/PNG the dataset was ingested from, as bytes through the `encoded`
signature, decoded in the graph) and compares per image with
eval/test_per_image.json: the alarm, and the defect-image Dice at the
model's scale (the served class map and the ground truth brought to the
model's pixel grid with `images.resize_mask`, as the evaluation brings
its labels) and at the original size. Prints the false-alarm rate and the
mean defect-image Dice both ways, and how many images differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.harness import REPO, run_main
from chameleon_jax import configfile
from chameleon_jax.data import dataset as dataset_lib
from chameleon_jax.data import images as imio
from chameleon_jax.data import records
from chameleon_jax.metrics.images import image_result
from export.client import decoded_outputs


def main() -> None:
  """Exports, serves the test split in process, prints the comparison."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--workdir", required=True, type=Path)
  parser.add_argument("--data_root", required=True, type=Path)
  args = parser.parse_args()
  config = configfile.load(REPO / args.config)
  canvas = tuple(int(v) for v in config.data.image_size)
  base = args.workdir.resolve() / "served_vs_eval"
  if not base.exists():
    run_main(f"--config={args.config}", f"--workdir={args.workdir}",
             f"--config.data.root={args.data_root.resolve()}",
             f"--config.export.buckets=({canvas},)",
             f"--config.export.model_base_path={base}", "--mode=export")
  (version,) = [p for p in (base / config.data.name).iterdir() if p.is_dir()]
  serve = tf.saved_model.load(str(version)).signatures["encoded"]
  ds = dataset_lib.latest(args.data_root.resolve(), config.data.name)
  sources = {item["id"]: item["source"] for item in ds.items("test")}
  evaluated = {r["id"]: r for r in json.loads(
      (args.workdir / "eval/test_per_image.json").read_text())}
  scale = float(config.data.scale)
  rows = []
  for path in ds.shard_paths("test"):
    for record in records.read(Path(path)):
      item = records.decode_record(record)
      served = decoded_outputs({k: v.numpy() for k, v in serve(
          images=tf.constant([Path(sources[item["id"]]).read_bytes()]))
                                .items()})
      native = served["class_map"][0]
      h, w = item["mask"].shape
      size = (max(1, round(h * scale)), max(1, round(w * scale)))
      at_scale = image_result(imio.resize_mask(native, *size),
                              imio.resize_mask(item["mask"], *size))
      rows.append({"id": item["id"], "alarm": bool(served["alarm"][0]),
                   "dice": at_scale["dice"], "defect": at_scale["defect"],
                   "dice_native": image_result(native, item["mask"])["dice"],
                   "eval": evaluated[item["id"]]})
  clean = [r for r in rows if not r["eval"]["defect"]]
  defect = [r for r in rows if r["eval"]["defect"]]
  table = {
      "false-alarm rate": (np.mean([r["alarm"] for r in clean]),
                           np.mean([r["eval"]["false_alarm"] for r in clean])),
      "defect-image Dice (model scale)": (
          np.mean([r["dice"] for r in defect]),
          np.mean([r["eval"]["dice"] for r in defect])),
      "defect-image Dice (original size)": (
          np.mean([r["dice_native"] for r in defect]), float("nan")),
  }
  alarms_eval = [r["eval"]["predicted_defect_pixels"] > 0 for r in rows]
  print(f"{args.workdir}: {len(rows)} test images ({len(defect)} with a "
        f"defect), served through `encoded` from the original files")
  print("| figure | served | --mode=eval |")
  print("| --- | ---: | ---: |")
  for name, (served_value, eval_value) in table.items():
    print(f"| {name} | {served_value:.4f} | {eval_value:.4f} |")
  differ = sum(r["alarm"] != a for r, a in zip(rows, alarms_eval))
  gaps = np.abs([r["dice"] - r["eval"]["dice"] for r in defect])
  print(f"\nalarm decisions that differ: {differ} of {len(rows)}; per-image "
        f"Dice |served - eval| on defect images: max {gaps.max():.4f}, "
        f"mean {gaps.mean():.4f}")


if __name__ == "__main__":
  main()
