"""The stand-in server's request log: statistics of every served image.

`Service.predict` hands each answered request (inputs, outputs, version) to
`RequestLog.submit`, which only queues it; a worker process (fed through a
pipe, so its work never holds the server's interpreter lock) decodes what
it must, measures each image (chameleon_jax.monitoring.statistics, the
code the reference profile was measured with) and appends one CloudEvent per
image (monitoring/events.py) to a size-rotated JSONL log. A full queue
drops the request's statistics (counted in
`chameleon_standin_request_log_dropped_total`), never delays an answer.
With `sample_rate` > 0 a share of the raw images is kept beside the log
(`samples/<event id>.png`) for the drift report's examples.

Logged signatures: serving_default and encoded (logits is a debugging
signature). Segmentation: p(defect) is 1 - p(background) per pixel (from
the probabilities, or the encoded signature's 16-bit PNG of it);
classification: 1 - p(class 0), the alarm is "not class 0".
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import queue
import random
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import prometheus_client as prom

from chameleon_jax.data import images as imio
from chameleon_jax.governance import versions as layout
from chameleon_jax.monitoring import events, statistics

LOGGED_SIGNATURES = ("serving_default", "encoded")
QUEUE_REQUESTS = 256


def _decode(data: bytes) -> np.ndarray:
  """Encoded bytes -> (H, W, C) at their bit depth, as ingest decodes."""
  return imio.load_image("request.png", data)


def _contract(version_path: Path) -> dict:
  metadata = json.loads((version_path / layout.METADATA).read_text())
  return metadata["input_contract"]


def served_answer(task: str, signature: str, outputs: dict, i: int
                  ) -> tuple:
  """(p_defect, alarm, alarm_score, class_map) of image i of a served
  answer (the arguments of statistics.output_statistics before the class
  names); the reference profile reads its answers through this too."""
  if task == "classification":
    probs = np.asarray(outputs["probabilities"][i])
    return (1.0 - probs[0], int(np.argmax(probs)) != 0, 1.0 - probs[0], None)
  if signature == "encoded":
    p_defect = _decode(outputs["defect_probability_png_bytes"][i])[..., 0]
    class_map = _decode(outputs["class_map_png_bytes"][i])[..., 0]
    p_defect = p_defect.astype(np.float64) / 65535.0
  else:
    p_defect = 1.0 - np.asarray(outputs["probabilities"][i][..., 0],
                                np.float64)
    class_map = np.asarray(outputs["class_map"][i])
  return (p_defect, bool(outputs["alarm"][i]),
          float(outputs["alarm_score"][i]), class_map)


class _Measurer:
  """The worker process's side: measures each image and writes its event."""

  def __init__(self, path: Path, max_bytes: int, backups: int,
               sample_rate: float, seed: int, source: str):
    self.path = path
    self.writer = events.Writer(path, max_bytes, backups)
    self.sample_rate, self.source = sample_rate, source
    self._random = random.Random(seed)
    self._contracts: dict[str, dict] = {}

  def log(self, name, number, path, signature, inputs, outputs) -> None:
    if path not in self._contracts:
      self._contracts[path] = _contract(Path(path))
    contract = self._contracts[path]
    classes = tuple(contract["class_names"])
    (images,) = inputs.values()
    for i in range(len(images)):
      raw = images[i]
      image = _decode(raw) if signature == "encoded" else np.asarray(raw)
      data = served_answer(contract["task"], signature, outputs, i)
      sample = None
      if self.sample_rate and self._random.random() < self.sample_rate:
        sample = self._keep(image)
      self.writer.write(events.event(
          name, number, signature, statistics.input_statistics(image),
          statistics.embedding(image).tolist(),
          statistics.output_statistics(*data, classes), self.source, sample))

  def _keep(self, image: np.ndarray) -> str:
    relative = Path("samples") / f"{self._random.getrandbits(64):016x}.png"
    if not np.issubdtype(image.dtype, np.integer):  # float32 in [0, 1]
      image = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    imio.save_png(self.path.parent / relative, image)
    return str(relative)


def _reduced(outputs: dict) -> dict:
  """What the log needs of a served answer, copied before it is queued:
  p(background) only of segmentation probabilities, the class map as
  uint8 (fewer bytes to hand to the worker)."""
  kept = dict(outputs)
  probs = outputs.get("probabilities")
  if probs is not None and probs.ndim == 4:
    kept["probabilities"] = probs[..., :1].copy()
  if "class_map" in outputs:
    kept["class_map"] = outputs["class_map"].astype(np.uint8)
  return kept


class RequestLog:
  """Queues answered requests; a worker process logs their images.

  The measurement (decoding, the Laplacian, PNG outputs, JSON) runs in its
  own process (`python -m export.request_log`, which imports no
  TensorFlow), fed through a pipe by one thread, so it never holds the
  serving process's interpreter lock: serving pays a copy of the request
  and a reduced answer.

  Args:
    path: the log file (rotated beside itself).
    registry: where the dropped / failed counters are registered.
    sample_rate: the share of images kept as files (0 = none).
    max_bytes, backups: rotation (events.Writer).
    seed: the sampling's seed.
  """

  def __init__(self, path: str | Path, registry: prom.CollectorRegistry,
               sample_rate: float = 0.0, max_bytes: int = events.MAX_BYTES,
               backups: int = events.BACKUPS, seed: int = 0):
    if not 0.0 <= sample_rate <= 1.0:
      raise ValueError(f"sample_rate={sample_rate}: expected a share in "
                       "[0, 1]")
    self.path = Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    source = f"chameleon_jax/export.server@{socket.gethostname()}"
    self._worker = subprocess.Popen(
        [sys.executable, "-m", "export.request_log", json.dumps({
            "path": str(self.path), "max_bytes": max_bytes,
            "backups": backups, "sample_rate": sample_rate, "seed": seed,
            "source": source})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    self._queue: queue.Queue = queue.Queue(QUEUE_REQUESTS)
    self._flush_lock = threading.Lock()
    self._tokens = itertools.count()
    self._failed_seen = 0
    self.dropped = prom.Counter(
        "chameleon_standin_request_log_dropped", "Requests whose images "
        "were not logged because the log's queue was full.",
        registry=registry)
    self.failed = prom.Counter(
        "chameleon_standin_request_log_failed", "Requests whose images could "
        "not be measured or written (the server's log names why).",
        registry=registry)
    self._feeder = threading.Thread(target=self._feed, daemon=True)
    self._feeder.start()

  def submit(self, name: str, version, signature: str, inputs: dict,
             outputs: dict) -> None:
    """Queues one answered request (returns at once)."""
    if signature not in LOGGED_SIGNATURES:
      return
    try:
      self._queue.put_nowait(("request", name, version.version,
                              str(version.path), signature, dict(inputs),
                              _reduced(outputs)))
    except queue.Full:
      self.dropped.inc()

  def _feed(self) -> None:
    while True:
      item = self._queue.get()
      try:
        pickle.dump(item, self._worker.stdin, protocol=5)
        self._worker.stdin.flush()
      except OSError as e:  # The worker died: count, keep serving.
        logging.error("request log worker gone (%s); request not logged", e)
        if item is not None and item[0] == "request":
          self.failed.inc()
      if item is None:
        return

  def flush(self, timeout_s: float = 60.0) -> None:
    """Waits until every request queued so far is logged (tests, shutdown).

    Raises:
      TimeoutError: the worker did not answer within `timeout_s`.
    """
    with self._flush_lock:
      token = next(self._tokens)
      self._queue.put(("flush", token), timeout=timeout_s)
      ready, _, _ = select.select([self._worker.stdout], [], [], timeout_s)
      if not ready:
        raise TimeoutError(f"the request log's worker did not flush in "
                           f"{timeout_s} s")
      line = self._worker.stdout.readline().split()
      if len(line) != 2 or int(line[0]) != token:
        raise RuntimeError(f"request log worker answered {line!r} to flush "
                           f"{token}")
      failed = int(line[1])
      self.failed.inc(failed - self._failed_seen)
      self._failed_seen = failed

  def close(self) -> None:
    """Flushes, stops the worker and waits for it."""
    if self._worker.poll() is None:
      self.flush()
      self._queue.put(None)
      self._feeder.join(30)
      self._worker.wait(30)


def _work(options: dict) -> None:
  """The worker: requests from stdin (pickles), events to the log; answers
  a flush with "<token> <failed so far>" on stdout. It runs at the
  lowest CPU priority: answers come first, the log catches up."""
  os.nice(19)
  measurer = _Measurer(Path(options["path"]), options["max_bytes"],
                       options["backups"], options["sample_rate"],
                       options["seed"], options["source"])
  failed = 0
  stdin, stdout = sys.stdin.buffer, sys.stdout
  while True:
    try:
      item = pickle.load(stdin)
    except EOFError:
      break
    if item is None:
      break
    if item[0] == "flush":
      stdout.write(f"{item[1]} {failed}\n")
      stdout.flush()
      continue
    try:
      measurer.log(*item[1:])
    except Exception:  # One odd request must not stop the log.
      logging.exception("request log: cannot log a request to %s/%s",
                        item[1], item[2])
      failed += 1
  measurer.writer.close()


if __name__ == "__main__":
  _work(json.loads(sys.argv[1]))
