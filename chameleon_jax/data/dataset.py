"""Versioned datasets on disk: ArrayRecord shards, manifest, quarantine report.

Layout of one dataset version (written to a temporary folder, then renamed, so
a crash never leaves a half-written version visible):

  <root>/<name>/<dataset_hash[:16]>/
      manifest.json        counts, classes, splits, shard hashes, every item
                           (with its split, group, quality flags, hashes)
      fingerprint.json     the dataset fingerprint (fingerprint.py)
      quarantine.json      every rejected input with the reason
      duplicates.json      exact and near-duplicate groups, leakage check
      quality.json         items per quality flag (quality.py)
      report.md            the data report, with its plots in report/
      train-00000-of-00001.array_record   (and val-*, test-*, or fold*-*)
  <root>/<name>/LATEST     the hash of the most recent version

The dataset hash covers the content hash of every accepted item, the class
names and the split parameters, so re-ingesting unchanged input gives the same
hash and is a no-op; adding or changing a file makes a new version. Ingestion
streams: images are staged to an ArrayRecord file during validation (the
fingerprint and quality measures are taken on the way) and copied to their
split's shards afterwards, so memory stays bounded whatever the dataset size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from array_record.python import array_record_module

from chameleon_jax import atomic
from chameleon_jax.data import duplicates as dup
from chameleon_jax.data import fingerprint as fp
from chameleon_jax.data import quality, splits as splits_lib
from chameleon_jax.data import records
from chameleon_jax.data.labels import defect_pixels
from chameleon_jax.data.records import (  # noqa: F401  (the dataset's API)
    decode_annotations, decode_record, encode_record)
from chameleon_jax.data.sources import IGNORE_VALUE, Item, Rejected, SourceInfo

FORMAT_VERSION = 2
ITEMS_PER_SHARD = 2000
# Seconds between progress lines while a long ingest reads its inputs.
PROGRESS_S = 10.0


def pixel_hash(image: np.ndarray) -> str:
  """Identifies decoded pixels (exact duplicates, whatever the file format)."""
  digest = hashlib.sha256(repr((image.shape, image.dtype.str)).encode())
  digest.update(np.ascontiguousarray(image).tobytes())
  return digest.hexdigest()


def _file_sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class BadInputError(ValueError):
  """Too many inputs were rejected; the quarantine report names them."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A written dataset version, opened for reading.

  For a k-fold version, `fold` picks the validation fold: split "val" is that
  fold and "train" the others (in fold order); "test" is the held-out split.
  """
  path: Path
  manifest: dict
  fold: int = 0

  @classmethod
  def open(cls, path: str | os.PathLike[str], fold: int = 0) -> "Dataset":
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
      raise FileNotFoundError(
          f"{path} is not a dataset version (no manifest.json). Run "
          "`python main.py --mode=ingest` first.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
      raise ValueError(
          f"{path} was written in dataset format "
          f"{manifest.get('format_version')}; this version reads format "
          f"{FORMAT_VERSION}. Re-run `python main.py --mode=ingest`.")
    return cls(path, manifest, fold)

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

  def _stored(self, split: str) -> list[str]:
    folds = self.manifest.get("folds", 0)
    stored = (splits_lib.fold_members(split, self.fold, folds) if folds
              else [split])
    missing = [s for s in stored if s not in self.manifest["splits"]]
    if missing:
      raise KeyError(f"Dataset {self.path} has no split {split!r}; it has "
                     f"{self.split_names()}.")
    return stored

  def split_names(self) -> list[str]:
    names = list(self.manifest["splits"])
    if self.manifest.get("folds", 0):
      names = ["train", "val"] + [n for n in names if not n.startswith("fold")]
    return names

  def shard_paths(self, split: str) -> list[str]:
    return [str(self.path / s["file"]) for stored in self._stored(split)
            for s in self.manifest["splits"][stored]["shards"]]

  def num_examples(self, split: str) -> int:
    return sum(self.manifest["splits"][s]["count"]
               for s in self._stored(split))

  def items(self, split: str) -> list[dict]:
    """Manifest entries of `split`, in the order its shards hold them."""
    by_split: dict[str, list[dict]] = {}
    for item in self.manifest["items"]:
      by_split.setdefault(item["split"], []).append(item)
    return [a for s in self._stored(split) for a in by_split.get(s, [])]

  def read_json(self, name: str) -> Any:
    return json.loads((self.path / name).read_text())


@dataclasses.dataclass(frozen=True)
class IngestOptions:
  """How `build` splits and checks; every field is part of the dataset hash."""
  split_fractions: Mapping[str, float]
  split_seed: int = 0
  max_bad_fraction: float = 0.05
  folds: int = 0  # >= 2: k-fold over train+val, "test" held out.
  group_pattern: str = ""  # Regex on item ids; group 1 (or the match) = key.
  near_duplicate_bits: int = 4  # pHash Hamming distance; -1 = off.
  thresholds: quality.Thresholds = quality.Thresholds()  # Quality flags.
  # Regex on item ids naming the dataset's own split (splits.own_split);
  # "" = every item is split by the fractions.
  split_pattern: str = ""

  def stored_fractions(self) -> dict[str, float]:
    fractions = dict(self.split_fractions)
    return (splits_lib.kfold_fractions(fractions, self.folds) if self.folds
            else fractions)

  def group_of(self, item: Item) -> str:
    if item.group or not self.group_pattern:
      return item.group
    match = re.search(self.group_pattern, item.item_id)
    if not match:
      return ""
    return match.group(1) if match.groups() else match.group(0)

  def identity(self) -> dict:
    return {"splits": self.stored_fractions(), "split_seed": self.split_seed,
            "group_pattern": self.group_pattern,
            # Only when set: versions ingested before the option keep their hash.
            **({"split_pattern": self.split_pattern} if self.split_pattern
               else {}),
            "near_duplicate_bits": self.near_duplicate_bits,
            "quality_thresholds": dataclasses.asdict(self.thresholds)}


def build(
    info: SourceInfo,
    items: Iterator[Item | Rejected],
    root: str | os.PathLike[str],
    name: str,
    options: IngestOptions,
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
    # The dataset's channels: the source's, or (None: images as decoded)
    # the first accepted image's; an image that disagrees is quarantined.
    channels = info.channels
    fingerprint = None

    started = last = time.monotonic()

    def staged_records():
      nonlocal channels, fingerprint, last
      for entry in items:
        if time.monotonic() - last >= PROGRESS_S:  # Long ingests say so.
          last = time.monotonic()
          log(f"ingest: {len(accepted) + len(quarantine)} inputs read "
              f"({len(accepted)} accepted, {len(quarantine)} quarantined) "
              f"in {last - started:.0f} s")
        if isinstance(entry, Rejected):
          quarantine.append({"path": entry.path, "reason": entry.reason,
                             **({} if entry.counted else {"counted": False})})
          log(f"quarantined {entry.path}: {entry.reason}")
          continue
        if entry.item_id in seen_ids:
          quarantine.append({"path": entry.source,
                             "reason": f"duplicate item id {entry.item_id!r}."})
          continue
        have = int(entry.image.shape[2])
        channels = channels or have
        if have != channels:
          reason = (f"{have} channel(s) where the dataset's images have "
                    f"{channels}: set data.source_kwargs.channels="
                    f"{channels} (or {have}) to convert every image.")
          quarantine.append({"path": entry.source, "reason": reason})
          log(f"quarantined {entry.source}: {reason}")
          continue
        seen_ids.add(entry.item_id)
        if fingerprint is None:
          fingerprint = fp.Fingerprint(info.class_names, channels)
        fingerprint.add(entry.image, entry.mask, entry.has_mask, entry.label,
                        entry.content_hash)
        foreground = defect_pixels(entry.mask)
        accepted.append({
            "id": entry.item_id, "hash": entry.content_hash,
            "pixel_hash": pixel_hash(entry.image),
            "label": entry.label, "height": int(entry.image.shape[0]),
            "width": int(entry.image.shape[1]),
            "channels": int(entry.image.shape[2]),
            "bit_depth": int(entry.image.dtype.itemsize * 8),
            "has_mask": entry.has_mask,
            "group": options.group_of(entry),
            "foreground_fraction": float(foreground.mean()),
            "classes_present": sorted(int(c) for c in np.unique(entry.mask)
                                      if c and c != IGNORE_VALUE),
            "source": entry.source, **quality.measure(entry.image)})
        yield encode_record(entry)

    staged = staging / "staged.array_record"
    records.write(staged, staged_records())
    total = len(accepted) + len(quarantine)
    if not accepted:
      raise BadInputError(f"No valid item among {total} inputs; quarantine: "
                          f"{quarantine[:5]}")
    # Images waiting for a label are neither bad nor part of the share.
    bad = sum(q.get("counted", True) for q in quarantine)
    judged = len(accepted) + bad
    if bad > options.max_bad_fraction * judged:
      _write_json(base / "quarantine-rejected-build.json", quarantine)
      raise BadInputError(
          f"{bad} of {judged} inputs were rejected (more than "
          f"max_bad_fraction={options.max_bad_fraction}); see "
          f"{base / 'quarantine-rejected-build.json'}.")

    fractions = options.stored_fractions()
    dataset_hash = hashlib.sha256(json.dumps({
        "format": FORMAT_VERSION,
        "items": sorted((a["id"], a["hash"]) for a in accepted),
        "class_names": list(info.class_names), "channels": channels,
        **options.identity(),
    }, sort_keys=True).encode()).hexdigest()
    final = base / dataset_hash[:16]
    if (final / "manifest.json").is_file():
      log(f"dataset unchanged: {final} (hash {dataset_hash[:16]})")
      return Dataset.open(final)

    log(f"ingest: {total} inputs read in {time.monotonic() - started:.0f} "
        "s; looking for duplicates and writing the splits")
    duplicates = _duplicates(accepted, options)
    units = dup.split_groups(len(accepted), duplicates["exact_groups_index"],
                             duplicates["near_pairs_index"],
                             [a["group"] for a in accepted])
    keyed = [(a["id"], (a["label"], a["foreground_fraction"] == 0),
              a["hash"]) for a in accepted]
    if options.split_pattern:  # The dataset's own split, kept.
      own = [splits_lib.own_split(a["id"], options.split_pattern)
             for a in accepted]
      assignment = splits_lib.split_keeping(
          keyed, fractions, options.split_seed, own,
          groups=[str(u) for u in units])
      moved = sum(o is not None and o != assignment[a["id"]]
                  for o, a in zip(own, accepted))
      if moved:  # Duplicates of a test image do not stay in train.
        log(f"{moved} items left their own split to stay with duplicates "
            "or group members in a held-out split")
    else:
      own = [None] * len(accepted)
      assignment = splits_lib.stratified_split(
          keyed, fractions, options.split_seed,
          groups=[str(u) for u in units])
    for a, unit, o in zip(accepted, units, own):
      a["split"] = assignment[a["id"]]
      a["split_unit"] = accepted[unit]["id"]  # Items kept together.
      if o is not None:
        a["own_split"] = o
    leaks = dup.leaks([a["split"] for a in accepted],
                      duplicates["exact_groups_index"],
                      duplicates["near_pairs_index"])
    if any(leaks.values()):  # Impossible by construction; checked anyway.
      raise AssertionError(f"duplicates cross splits: {leaks}")
    flags = quality.flag(accepted, options.thresholds)
    for a, item_flags in zip(accepted, flags):
      a["quality_flags"] = item_flags
    names = list(fractions) + sorted({a["split"] for a in accepted}
                                     - set(fractions))
    members = {split: [i for i, a in enumerate(accepted)
                       if a["split"] == split] for split in names}
    splits = _write_splits(staging, staged, members, accepted)
    staged.unlink()
    manifest = {
        "format_version": FORMAT_VERSION, "name": name,
        "dataset_hash": dataset_hash, "class_names": list(info.class_names),
        "channels": channels, "num_items": len(accepted),
        "num_quarantined": len(quarantine),
        "split_fractions": dict(options.split_fractions),
        "split_seed": options.split_seed, "folds": options.folds,
        "group_pattern": options.group_pattern,
        "split_pattern": options.split_pattern,
        "leakage": leaks, "splits": splits, "items": accepted,
    }
    _write_json(staging / "quarantine.json", quarantine)
    _write_json(staging / "duplicates.json", _duplicate_report(
        accepted, duplicates, leaks))
    _write_json(staging / "quality.json",
                       _quality_report(accepted, options.thresholds))
    (staging / "fingerprint.json").write_text(fp.dumps(fingerprint.result()))
    _write_json(staging / "manifest.json", manifest)
    from chameleon_jax.data import report  # matplotlib only when writing.
    report.write(Dataset(staging, manifest), quarantine)
    os.replace(staging, final)
    atomic.write_text(base / "LATEST", dataset_hash[:16] + "\n")
    log(f"wrote dataset {final}: {len(accepted)} items, "
        f"{len(quarantine)} quarantined, splits "
        f"{ {k: v['count'] for k, v in splits.items()} }")
    return Dataset.open(final)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _duplicates(accepted: list[dict], options: IngestOptions) -> dict:
  exact = dup.exact_groups([a["pixel_hash"] for a in accepted])
  near = dup.near_pairs([a["phash"] for a in accepted],
                        [a["width"] / a["height"] for a in accepted],
                        options.near_duplicate_bits)
  # Identical pixels are reported once, as exact duplicates.
  near = [p for p in near
          if accepted[p[0]]["pixel_hash"] != accepted[p[1]]["pixel_hash"]]
  return {"exact_groups_index": exact, "near_pairs_index": near}


def _duplicate_report(accepted: list[dict], duplicates: dict,
                      leaks: dict) -> dict:
  def describe(i: int) -> dict:
    a = accepted[i]
    return {"id": a["id"], "split": a["split"], "label": a["label"],
            "source": a["source"]}

  exact = []
  for group in duplicates["exact_groups_index"]:
    labels = {accepted[i]["hash"] for i in group}
    exact.append({"items": [describe(i) for i in group],
                  # Same pixels but different files/annotations: check labels.
                  "annotations_differ": len(labels) > 1})
  near = [{"a": describe(i), "b": describe(j), "hamming_bits": d}
          for i, j, d in duplicates["near_pairs_index"]]
  return {"exact": exact, "near": near, "leakage": leaks}


def _quality_report(accepted: list[dict],
                    thresholds: quality.Thresholds) -> dict:
  by_flag: dict[str, list[str]] = {}
  for a in accepted:
    for flag in a["quality_flags"]:
      by_flag.setdefault(flag, []).append(a["id"])
  return {"thresholds": dataclasses.asdict(thresholds),
          "flags": by_flag}


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
  for index, record in enumerate(records.read(staged)):
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


def latest(root: str | os.PathLike[str], name: str, fold: int = 0) -> Dataset:
  """The most recently written version of dataset `name` under `root`."""
  pointer = Path(root) / name / "LATEST"
  if not pointer.is_file():
    raise FileNotFoundError(
        f"No dataset {name!r} under {root} (missing {pointer}); run "
        "`python main.py --mode=ingest --config=...` first.")
  return Dataset.open(Path(root) / name / pointer.read_text().strip(), fold)


def _write_json(path: Path, payload: Any) -> None:
  """Sorted keys: the same dataset gives byte-identical files."""
  atomic.write_json(path, payload, sort_keys=True)
