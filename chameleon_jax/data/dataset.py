"""Versioned datasets on disk: ArrayRecord shards, manifest, quarantine report.

Layout of one dataset version (written to a temporary folder, then renamed, so
a crash never leaves a half-written version visible):

  <root>/<name>/<dataset_hash[:16]>/
      manifest.json        counts, classes, splits, shard hashes, every item
      quarantine.json      every rejected input with the reason
      train-00000-of-00001.array_record   (and val-*, test-*)
  <root>/<name>/LATEST     the hash of the most recent version

The dataset hash covers the content hash of every accepted item, the class
names and the split parameters, so re-ingesting unchanged input gives the same
hash and is a no-op. Ingestion streams: images are staged to an ArrayRecord
file during validation and copied to their split's shards afterwards, so
memory stays bounded whatever the dataset size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import msgpack
import numpy as np
from array_record.python import array_record_module

from chameleon_jax.data.sources import Item, Rejected, SourceInfo
from chameleon_jax.data.splits import stratified_split

FORMAT_VERSION = 1
ITEMS_PER_SHARD = 2000


def encode_record(item: Item) -> bytes:
  return msgpack.packb({
      "id": item.item_id,
      "image": item.image.tobytes(),
      "shape": list(item.image.shape),
      "dtype": item.image.dtype.str,
      "mask": item.mask.tobytes(),
      "label": item.label,
      "source": item.source,
      "hash": item.content_hash,
  })


def decode_record(record: bytes) -> dict[str, Any]:
  """Record bytes -> {"image": (H, W, C), "mask": (H, W), "label", "id"}."""
  raw = msgpack.unpackb(record)
  shape = tuple(raw["shape"])
  image = np.frombuffer(raw["image"], dtype=np.dtype(raw["dtype"])).reshape(shape)
  mask = np.frombuffer(raw["mask"], dtype=np.uint8).reshape(shape[:2])
  return {"image": image, "mask": mask, "label": np.int32(raw["label"]),
          "id": raw["id"]}


def _write_records(path: Path, records: Iterator[bytes]) -> int:
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  count = 0
  for record in records:
    writer.write(record)
    count += 1
  writer.close()
  return count


def _read_records(path: Path) -> Iterator[bytes]:
  reader = array_record_module.ArrayRecordReader(str(path))
  try:
    for i in range(reader.num_records()):
      yield reader.read([i])[0]
  finally:
    reader.close()


def _file_sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _atomic_write_json(path: Path, payload: Any) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
  os.replace(tmp, path)


class BadInputError(ValueError):
  """Too many inputs were rejected; the quarantine report names them."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A written dataset version, opened for reading."""
  path: Path
  manifest: dict

  @classmethod
  def open(cls, path: str | os.PathLike[str]) -> "Dataset":
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
      raise FileNotFoundError(
          f"{path} is not a dataset version (no manifest.json). Run "
          "`python main.py --mode=ingest` first.")
    return cls(path, json.loads(manifest_path.read_text()))

  @property
  def class_names(self) -> list[str]:
    return self.manifest["class_names"]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def channels(self) -> int:
    return self.manifest["channels"]

  @property
  def dataset_hash(self) -> str:
    return self.manifest["dataset_hash"]

  def shard_paths(self, split: str) -> list[str]:
    if split not in self.manifest["splits"]:
      raise KeyError(f"Dataset {self.path} has no split {split!r}; it has "
                     f"{sorted(self.manifest['splits'])}.")
    return [str(self.path / s["file"])
            for s in self.manifest["splits"][split]["shards"]]

  def num_examples(self, split: str) -> int:
    return self.manifest["splits"][split]["count"]


def build(
    info: SourceInfo,
    items: Iterator[Item | Rejected],
    root: str | os.PathLike[str],
    name: str,
    split_fractions: Mapping[str, float],
    split_seed: int = 0,
    max_bad_fraction: float = 0.05,
    log=print,
) -> Dataset:
  """Validates, splits and writes `items`; returns the (new or existing) version."""
  base = Path(root) / name
  base.mkdir(parents=True, exist_ok=True)
  staging = base / f".staging-{os.getpid()}"
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir()
  try:
    accepted: list[dict] = []
    quarantine: list[dict] = []
    seen_ids: set[str] = set()

    def staged_records():
      for entry in items:
        if isinstance(entry, Rejected):
          quarantine.append({"path": entry.path, "reason": entry.reason})
          log(f"quarantined {entry.path}: {entry.reason}")
          continue
        if entry.item_id in seen_ids:
          quarantine.append({"path": entry.source,
                             "reason": f"duplicate item id {entry.item_id!r}."})
          continue
        seen_ids.add(entry.item_id)
        accepted.append({
            "id": entry.item_id, "hash": entry.content_hash,
            "label": entry.label, "height": int(entry.image.shape[0]),
            "width": int(entry.image.shape[1]),
            "foreground_fraction": float((entry.mask > 0).mean()),
            "classes_present": sorted(int(c) for c in np.unique(entry.mask)
                                      if c),
            "source": entry.source})
        yield encode_record(entry)

    staged = staging / "staged.array_record"
    _write_records(staged, staged_records())
    total = len(accepted) + len(quarantine)
    if not accepted:
      raise BadInputError(f"No valid item among {total} inputs; quarantine: "
                          f"{quarantine[:5]}")
    if len(quarantine) > max_bad_fraction * total:
      _atomic_write_json(base / "quarantine-rejected-build.json", quarantine)
      raise BadInputError(
          f"{len(quarantine)} of {total} inputs were rejected (more than "
          f"max_bad_fraction={max_bad_fraction}); see "
          f"{base / 'quarantine-rejected-build.json'}.")

    assignment = stratified_split(
        [(a["id"], (a["label"], a["foreground_fraction"] == 0), a["hash"])
         for a in accepted], split_fractions, split_seed)
    dataset_hash = hashlib.sha256(json.dumps({
        "format": FORMAT_VERSION,
        "items": sorted((a["id"], a["hash"]) for a in accepted),
        "class_names": list(info.class_names), "channels": info.channels,
        "splits": dict(split_fractions), "split_seed": split_seed,
    }, sort_keys=True).encode()).hexdigest()
    final = base / dataset_hash[:16]
    if (final / "manifest.json").is_file():
      log(f"dataset unchanged: {final} (hash {dataset_hash[:16]})")
      return Dataset.open(final)

    members = {split: [i for i, a in enumerate(accepted)
                       if assignment[a["id"]] == split]
               for split in split_fractions}
    splits = _write_splits(staging, staged, members, accepted)
    for a in accepted:
      a["split"] = assignment[a["id"]]
    staged.unlink()
    manifest = {
        "format_version": FORMAT_VERSION, "name": name,
        "dataset_hash": dataset_hash, "class_names": list(info.class_names),
        "channels": info.channels, "num_items": len(accepted),
        "num_quarantined": len(quarantine),
        "split_fractions": dict(split_fractions), "split_seed": split_seed,
        "splits": splits, "items": accepted,
    }
    _atomic_write_json(staging / "quarantine.json", quarantine)
    _atomic_write_json(staging / "manifest.json", manifest)
    os.replace(staging, final)
    (base / "LATEST.tmp").write_text(dataset_hash[:16] + "\n")
    os.replace(base / "LATEST.tmp", base / "LATEST")
    log(f"wrote dataset {final}: {len(accepted)} items, "
        f"{len(quarantine)} quarantined, splits "
        f"{ {k: v['count'] for k, v in splits.items()} }")
    return Dataset.open(final)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _write_splits(staging: Path, staged: Path, members: dict[str, list[int]],
                  accepted: list[dict]) -> dict:
  """Copies the staged records into every split's shards in one pass.

  Shards hold contiguous runs of a split's members, so reading the shards in
  order gives the split's items in manifest order (evaluation relies on it).
  """
  destination: dict[int, tuple[str, int]] = {}
  files: dict[tuple[str, int], str] = {}
  for split, indices in members.items():
    num_shards = max(1, -(-len(indices) // ITEMS_PER_SHARD))
    per_shard = -(-len(indices) // num_shards) if indices else 1
    for s in range(num_shards):
      files[split, s] = f"{split}-{s:05d}-of-{num_shards:05d}.array_record"
    for position, index in enumerate(indices):
      destination[index] = (split, position // per_shard)
  writers = {key: array_record_module.ArrayRecordWriter(
      str(staging / file), "group_size:1") for key, file in files.items()}
  counts = dict.fromkeys(files, 0)
  for index, record in enumerate(_read_records(staged)):
    writers[destination[index]].write(record)
    counts[destination[index]] += 1
  for writer in writers.values():
    writer.close()
  splits = {}
  for split, indices in members.items():
    labels = [accepted[i]["label"] for i in indices]
    splits[split] = {
        "count": len(indices),
        "shards": [{"file": file, "count": counts[key],
                    "sha256": _file_sha256(staging / file)}
                   for key, file in files.items() if key[0] == split],
        "empty": sum(accepted[i]["foreground_fraction"] == 0 for i in indices),
        "label_counts": {str(k): labels.count(k) for k in sorted(set(labels))},
    }
  return splits


def latest(root: str | os.PathLike[str], name: str) -> Dataset:
  """The most recently written version of dataset `name` under `root`."""
  pointer = Path(root) / name / "LATEST"
  if not pointer.is_file():
    raise FileNotFoundError(
        f"No dataset {name!r} under {root} (missing {pointer}); run "
        "`python main.py --mode=ingest --config=...` first.")
  return Dataset.open(Path(root) / name / pointer.read_text().strip())
