"""Annotation-tool formats as ingest sources (importing this registers them).

  labelme   labelme JSON files (polygons, rectangles, circles), rasterised
  coco      a COCO instances JSON (polygons, RLE); instances and boxes kept
  voc       Pascal VOC segmentation (palette PNGs; 255 = void -> ignore)
  table     CSV / JSON / JSONL lists of (image, label[, group]) for
            classification

Each yields `Item`s or `Rejected` entries (the quarantine report), built
with the validation helpers of `data/sources.py`.
"""

from chameleon_jax.data.formats import coco, labelme, tables, voc  # noqa: F401
