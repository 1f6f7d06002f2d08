"""Server-side request batching: concurrent requests share one model call.

The first request for a (model, version, signature, per-example shapes and
dtypes) group becomes the leader: it waits up to `timeout_s` (or until
`max_batch_size` examples are queued), concatenates every queued request
along the batch axis, runs the signature once per `max_batch_size` chunk and
hands each request its rows. If a batched call fails, the requests are rerun
one by one, so one bad request fails alone. As TF Serving's
`allowed_batch_sizes`, every call (a lone request too) is padded to the next
allowed size by repeating its last row, so the model only ever runs at the
sizes the version's warmup requests compiled.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import tensorflow as tf


class _Pending:
  def __init__(self, inputs: dict, size: int):
    self.inputs, self.size = inputs, size
    self.done = threading.Event()
    self.result: dict | None = None
    self.error: BaseException | None = None


def _call(function, inputs: dict, allowed: tuple[int, ...] = ()) -> dict:
  """`function` on `inputs`, their batch padded to the smallest `allowed`
  size that holds it (none holds it, or no batch axis: as they are)."""
  rows = {v.shape[0] if v.ndim else None for v in inputs.values()}
  size = rows.pop() if len(rows) == 1 else None
  padded = min((a for a in allowed if size is not None and a >= size),
               default=size)
  if size and padded != size:
    inputs = {k: np.concatenate([v, np.repeat(v[-1:], padded - size, 0)])
              for k, v in inputs.items()}
  outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
  return {k: (v.numpy()[:size] if size and padded != size and v.ndim
              and v.shape[0] == padded else v.numpy())
          for k, v in outputs.items()}


class Batcher:
  """Server-side batching as TF Serving's: requests of one model, version
  and signature queue, and run together once `max_batch_size` are waiting
  or `timeout_s` has passed since the first.
  """

  def __init__(self, max_batch_size: int = 16, timeout_s: float = 0.002,
               size_histogram=None, allowed_batch_sizes: tuple[int, ...] = ()):
    self.max_batch_size, self.timeout_s = max_batch_size, timeout_s
    self.allowed = tuple(sorted(allowed_batch_sizes))
    self.size_histogram = size_histogram
    self._lock = threading.Condition()
    self._queues: dict[tuple, list[_Pending]] = {}

  def run(self, key: tuple, function, inputs: dict) -> dict:
    sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
    if len(sizes) != 1 or None in sizes or self.max_batch_size <= 1:
      return self._observe(_call(function, inputs, self.allowed), inputs)
    group = (key, tuple(sorted((k, v.shape[1:], v.dtype.str)
                               for k, v in inputs.items())))
    pending = _Pending(inputs, sizes.pop())
    with self._lock:
      queue = self._queues.setdefault(group, [])
      queue.append(pending)
      leader = len(queue) == 1
      self._lock.notify_all()
    if leader:
      self._lead(group, function)
    pending.done.wait()
    if pending.error is not None:
      raise pending.error
    return pending.result

  def _lead(self, group: tuple, function) -> None:
    deadline = time.monotonic() + self.timeout_s
    with self._lock:
      while (sum(p.size for p in self._queues[group]) < self.max_batch_size
             and (left := deadline - time.monotonic()) > 0):
        self._lock.wait(left)
      batch = self._queues.pop(group)
    chunk: list[_Pending] = []
    for pending in batch:
      if chunk and sum(p.size for p in chunk) + pending.size > \
          self.max_batch_size:
        self._run_chunk(chunk, function)
        chunk = []
      chunk.append(pending)
    self._run_chunk(chunk, function)

  def _run_chunk(self, chunk: list[_Pending], function) -> None:
    total = sum(p.size for p in chunk)
    try:
      if len(chunk) == 1:
        raise _Single
      inputs = {k: np.concatenate([p.inputs[k] for p in chunk])
                for k in chunk[0].inputs}
      outputs = self._observe(_call(function, inputs, self.allowed), inputs)
      if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
        raise _Single  # Outputs without a batch axis cannot be split.
      start = 0
      for p in chunk:
        p.result = {k: v[start:start + p.size] for k, v in outputs.items()}
        start += p.size
        p.done.set()
    except Exception:  # Run alone: each request gets its own result/error.
      for p in chunk:
        if p.done.is_set():
          continue
        try:
          p.result = self._observe(_call(function, p.inputs, self.allowed),
                                   p.inputs)
        except BaseException as e:  # Delivered to the request's thread.
          p.error = e
        p.done.set()

  def _observe(self, outputs: dict, inputs: dict) -> dict:
    if self.size_histogram is not None:
      first = next(iter(inputs.values()))
      self.size_histogram.observe(first.shape[0] if first.ndim else 1)
    return outputs


class _Single(Exception):
  """Internal: fall back to one call per request."""
