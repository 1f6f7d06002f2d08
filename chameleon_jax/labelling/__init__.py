"""The labelling tool (`--mode=label`): a local web page to draw and correct
defect masks, pre-labelled by the trained model, written where ingest reads
them. Reads no config and imports neither JAX nor TensorFlow: the composer
(components/label.py) hands it the folders, the palette and the pre-labels.

  raster.py   the page's operations (brush, eraser, polygon, box) -> masks
  store.py    the dataset's folders: confined paths, revisions, atomic
              saves, the audit log labels.jsonl
  queue.py    pre-labels and the order images are offered in
  server.py   the page and its JSON API (token, size limit, conflicts)
  static/     the page: plain HTML, CSS and JavaScript, no build step
"""
