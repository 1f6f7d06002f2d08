"""The stand-in server's request log: statistics of every served image.

`Service.predict` hands each answered request (inputs, outputs, version) to
`RequestLog.submit`, which only queues it; one background thread decodes
what it must, measures each image (chameleon_jax.monitoring.statistics, the
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

import io
import json
import logging
import queue
import random
import socket
import threading
from pathlib import Path

import numpy as np
import prometheus_client as prom
from PIL import Image

from chameleon_jax import atomic
from chameleon_jax.governance import versions as layout
from chameleon_jax.monitoring import events, statistics

LOGGED_SIGNATURES = ("serving_default", "encoded")
QUEUE_REQUESTS = 256


def _decode(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    if image.mode == "I;16":
      return np.asarray(image, np.uint16)
    if image.mode not in ("L", "RGB", "RGBA"):
      image = image.convert("RGB")
    return np.asarray(image)


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
    p_defect = _decode(outputs["defect_probability_png_bytes"][i])
    p_defect = p_defect[..., 0] if p_defect.ndim == 3 else p_defect
    class_map = _decode(outputs["class_map_png_bytes"][i])
    class_map = class_map[..., 0] if class_map.ndim == 3 else class_map
    p_defect = p_defect.astype(np.float64) / 65535.0
  else:
    p_defect = 1.0 - np.asarray(outputs["probabilities"][i][..., 0],
                                np.float64)
    class_map = np.asarray(outputs["class_map"][i])
  return (p_defect, bool(outputs["alarm"][i]),
          float(outputs["alarm_score"][i]), class_map)


class RequestLog:
  """Queues answered requests and logs their images' statistics.

  Args:
    path: the log file (rotated beside itself).
    registry: where the dropped-request counter is registered.
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
    self.writer = events.Writer(self.path, max_bytes, backups)
    self.sample_rate = sample_rate
    self.source = f"chameleon_jax/export.server@{socket.gethostname()}"
    self._random = random.Random(seed)
    self._contracts: dict[Path, dict] = {}
    self._queue: queue.Queue = queue.Queue(QUEUE_REQUESTS)
    self.dropped = prom.Counter(
        "chameleon_standin_request_log_dropped", "Requests whose images "
        "were not logged because the log's queue was full.",
        registry=registry)
    self.failed = prom.Counter(
        "chameleon_standin_request_log_failed", "Requests whose images could "
        "not be measured or written (the server's log names why).",
        registry=registry)
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def submit(self, name: str, version, signature: str, inputs: dict,
             outputs: dict) -> None:
    """Queues one answered request (returns at once)."""
    if signature not in LOGGED_SIGNATURES:
      return
    try:
      self._queue.put_nowait((name, version.version, version.path, signature,
                              inputs, outputs))
    except queue.Full:
      self.dropped.inc()

  def flush(self, timeout_s: float = 30.0) -> None:
    """Waits until every queued request is logged (tests, shutdown)."""
    done = threading.Event()
    self._queue.put(("", 0, None, "", {}, {"__flush__": done}), timeout=timeout_s)
    done.wait(timeout_s)

  def close(self) -> None:
    self.flush()
    self.writer.close()

  def _run(self) -> None:
    while True:
      name, number, path, signature, inputs, outputs = self._queue.get()
      if "__flush__" in outputs:
        outputs["__flush__"].set()
        continue
      try:
        self._log(name, number, path, signature, inputs, outputs)
      except Exception:  # One odd request must not stop the log.
        logging.exception("request log: cannot log a request to %s/%s",
                          name, number)
        self.failed.inc()

  def _log(self, name, number, path, signature, inputs, outputs) -> None:
    if path not in self._contracts:
      self._contracts[path] = _contract(path)
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
    buffer = io.BytesIO()
    if not np.issubdtype(image.dtype, np.integer):  # float32 in [0, 1]
      image = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    squeezed = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    Image.fromarray(squeezed).save(buffer, format="PNG")
    atomic.write_bytes(self.path.parent / relative, buffer.getvalue())
    return str(relative)
