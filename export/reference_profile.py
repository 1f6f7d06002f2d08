"""The monitoring reference of a version, measured at export by the
SavedModel itself (chameleon_jax/monitoring/reference.py says what it holds).

Each validation image is sent to the exported `serving_default` as a client
sends it (at its stored size, in the contract's input dtype), one at a time,
and measured by the request log's own code (`request_log.served_answer`,
`monitoring.statistics`), so a window of logged requests and the reference
differ only by what the images are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import tensorflow as tf

from chameleon_jax import atomic
from chameleon_jax.monitoring import reference as reference_lib
from chameleon_jax.data.images import to_unit_float
from chameleon_jax.monitoring import statistics
from export.request_log import served_answer
from export.savedmodel import INPUT_DTYPES


def as_input(image: np.ndarray, input_dtype: str) -> np.ndarray:
  """A stored (H, W, C) image in the contract's input dtype, as a client
  converts it (via [0, 1], rounded for integer dtypes)."""
  dtype, top = INPUT_DTYPES[input_dtype]
  if image.dtype == np.dtype(dtype.as_numpy_dtype):
    return image
  x = to_unit_float(image)
  if dtype.is_integer:
    return np.rint(x * top).astype(dtype.as_numpy_dtype)
  return x.astype(np.float32)


def served_rows(saved_model_dir: str | Path, contract, images: Iterable
                ) -> Iterator[dict]:
  """Per image, {"inputs", "embedding", "outputs"} as the request log
  measures it, served by the SavedModel's serving_default one at a time.

  Args:
    saved_model_dir: the exported SavedModel.
    contract: its savedmodel.Contract.
    images: (H, W, C) uint8/uint16 images at their stored size.
  """
  model = tf.saved_model.load(str(saved_model_dir))
  serve = model.signatures["serving_default"]
  for image in images:
    x = as_input(image, contract.input_dtype)
    outputs = {k: v.numpy() for k, v in
               serve(images=tf.constant(x[None])).items()}
    answer = served_answer(contract.task, "serving_default", outputs, 0)
    yield {"inputs": statistics.input_statistics(x),
           "embedding": statistics.embedding(x).tolist(),
           "outputs": statistics.output_statistics(
               *answer, tuple(contract.class_names))}


def measure(saved_model_dir: str | Path, contract, examples: Iterable,
            false_alarm_budget: float | None) -> reference_lib.Reference:
  """The reference of `examples`, served by the SavedModel.

  Args:
    saved_model_dir: the exported SavedModel.
    contract: its savedmodel.Contract.
    examples: (image (H, W, C) uint8/uint16, has a defect) pairs.
    false_alarm_budget: the calibrated rule's budget (None: argmax).
  """
  examples = list(examples)
  rows = list(served_rows(saved_model_dir, contract,
                          (image for image, _ in examples)))
  return reference_lib.build(rows, [bool(d) for _, d in examples],
                             tuple(contract.class_names), false_alarm_budget)


def write(saved_model_dir: str | Path, contract, examples: Iterable,
          false_alarm_budget: float | None) -> dict:
  """Measures and writes the reference into the SavedModel's
  assets.extra (published with it); returns a summary for the metadata."""
  profile = measure(saved_model_dir, contract, examples, false_alarm_budget)
  atomic.write_json(Path(saved_model_dir) / reference_lib.RELATIVE_PATH,
                    profile.to_json(), indent=None)
  summary = {"images": profile.images,
             "defect_images": int(profile.defect.sum()),
             "alarm_rate": profile.alarms / profile.images,
             "false_alarm_budget": false_alarm_budget}
  logging.info("monitoring reference: %s", summary)
  return summary
