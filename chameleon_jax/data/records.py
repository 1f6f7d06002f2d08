"""The record format of a dataset version's ArrayRecord shards.

A record is a msgpack dict: the raw image bytes with their shape and dtype
(uint8/uint16 kept), the uint8 mask, the image-level label, the item id, the
source, the content hash, `has_mask` and the format's annotations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import msgpack
import numpy as np
from array_record.python import array_record_module

from chameleon_jax.data.sources import Item


def encode_record(item: Item) -> bytes:
  """An ingested item -> record bytes (msgpack; pixels at their bit depth)."""
  return msgpack.packb({
      "id": item.item_id,
      "image": item.image.tobytes(),
      "shape": list(item.image.shape),
      "dtype": item.image.dtype.str,
      "mask": item.mask.tobytes(),
      "label": item.label,
      "source": item.source,
      "hash": item.content_hash,
      "has_mask": item.has_mask,
      "annotations": item.annotations,
  })


def decode_record(record: bytes) -> dict[str, Any]:
  """Record bytes -> {"image": (H, W, C), "mask": (H, W), "label", "id"}."""
  raw = msgpack.unpackb(record)
  shape = tuple(raw["shape"])
  image = np.frombuffer(raw["image"], dtype=np.dtype(raw["dtype"])).reshape(shape)
  mask = np.frombuffer(raw["mask"], dtype=np.uint8).reshape(shape[:2])
  return {"image": image, "mask": mask, "label": np.int32(raw["label"]),
          "id": raw["id"]}


def decode_annotations(record: bytes) -> dict | None:
  """The format extras stored with a record (e.g. COCO instances), if any."""
  return msgpack.unpackb(record).get("annotations")


def write(path: Path, records: Iterator[bytes]) -> int:
  """Writes `records` to one ArrayRecord shard; returns how many."""
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  count = 0
  for record in records:
    writer.write(record)
    count += 1
  writer.close()
  return count


def read(path: Path) -> Iterator[bytes]:
  """The records of one ArrayRecord shard, in order."""
  reader = array_record_module.ArrayRecordReader(str(path))
  try:
    for i in range(reader.num_records()):
      yield reader.read([i])[0]
  finally:
    reader.close()
