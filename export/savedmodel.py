"""A trained model as a jax2tf SavedModel that TF Serving can load.

The model runs as one XlaCallModule op (native serialization) compiled for
every platform in `Contract.platforms`; its parameters (and batch-norm
statistics) are `tf.Variable`s, so `saved_model.pb` stays small. Around it,
TensorFlow ops do what a customer should not have to:

serving_default(images: (B, H, W, C) in `input_dtype`)
  segmentation: scale to [0, 1] -> resample by the training `scale` -> edge-
  pad to the smallest bucket that holds the image -> model -> softmax ->
  crop -> outputs `probabilities` (B, H, W, K) and `class_map` (B, H, W)
  int32 at the original size.
  classification: scale to [0, 1] -> resize to the training image size ->
  model -> softmax -> outputs `probabilities` (B, K), `top_k_classes`,
  `top_k_scores` and `top_k_labels` (class names).
logits(images: (B, H, W, C) float32 in [0, 1], at the model's pixel scale;
  classification: H, W = the model's input size)
  the raw logits, cropped back to the input size (what verification checks).

An image larger than the largest bucket fails inside the graph with an
INVALID_ARGUMENT that names the limit. Buckets are multiples of the model
stride, so XLA compiles one program per bucket and batch size (warmup
requests cover them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from chameleon_jax.model_io.state import merge

INPUT_DTYPES = {"uint8": (tf.uint8, 255.0), "uint16": (tf.uint16, 65535.0),
                "float32": (tf.float32, 1.0)}


class VerificationError(RuntimeError):
  """The SavedModel disagrees with the JAX model; it must not be published."""


@dataclasses.dataclass(frozen=True)
class Contract:
  """What the exported signatures accept and return (also exported as JSON)."""
  task: str  # segmentation | classification
  class_names: tuple[str, ...]
  channels: int
  input_dtype: str
  buckets: tuple[tuple[int, int], ...]  # segmentation: padded sizes
  stride: int
  scale: float  # segmentation: resampling factor applied first
  image_size: tuple[int, int] | None  # classification: model input size
  top_k: int
  platforms: tuple[str, ...]

  def __post_init__(self):
    if self.input_dtype not in INPUT_DTYPES:
      raise ValueError(f"export.input_dtype={self.input_dtype!r}; expected "
                       f"one of {sorted(INPUT_DTYPES)}.")
    if self.task == "segmentation":
      if not self.buckets:
        raise ValueError("export.buckets is empty; give at least one (H, W).")
      bad = [b for b in self.buckets if b[0] % self.stride or b[1] % self.stride]
      if bad:
        raise ValueError(f"export.buckets {bad} are not multiples of the "
                         f"model stride {self.stride}.")

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


class _Flat:
  """The model's (params, model_state) split into float leaves (variables)
  and the rest (e.g. RNG state), which is baked in as constants."""

  def __init__(self, params: Any, model_state: Any):
    leaves, self.treedef = jax.tree.flatten((params, model_state))
    self.leaves = leaves
    self.variable_index = [
        i for i, leaf in enumerate(leaves)
        if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        and jnp.issubdtype(leaf.dtype, jnp.floating)]

  def variables(self) -> list[np.ndarray]:
    return [np.asarray(self.leaves[i]) for i in self.variable_index]

  def unflatten(self, variables) -> tuple[Any, Any]:
    leaves = list(self.leaves)
    for i, value in zip(self.variable_index, variables):
      leaves[i] = value
    return jax.tree.unflatten(self.treedef, leaves)


def jax_logits_fn(graphdef, params, model_state):
  """(flat, f(variables, images) -> logits) for jax2tf."""
  flat = _Flat(params, model_state)

  def logits(variables, images):
    p, s = flat.unflatten(variables)
    return merge(graphdef, p, s)(images, train=False).astype(jnp.float32)

  return flat, logits


def _edge_pad(x, height, width):
  """Pads (B, h, w, C) to (B, height, width, C) by repeating the last row /
  column (what the training pipeline's pad does)."""
  rows = tf.minimum(tf.range(height), tf.shape(x)[1] - 1)
  cols = tf.minimum(tf.range(width), tf.shape(x)[2] - 1)
  return tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)


class ServingModule(tf.Module):
  """The exported module: variables + the converted model + signatures."""

  def __init__(self, graphdef, params, model_state, contract: Contract):
    super().__init__(name="chameleon_model")
    self.contract = contract
    flat, logits = jax_logits_fn(graphdef, params, model_state)
    self.model_variables = [tf.Variable(v, trainable=False)
                            for v in flat.variables()]
    c = contract
    if c.task == "segmentation":
      shape = f"(b, {c.stride}*h, {c.stride}*w, {c.channels})"
    else:
      shape = f"(b, {c.image_size[0]}, {c.image_size[1]}, {c.channels})"
    self._converted = jax2tf.convert(
        logits, polymorphic_shapes=[None, shape], with_gradient=False,
        native_serialization_platforms=tuple(c.platforms))
    dtype, _ = INPUT_DTYPES[c.input_dtype]
    self.serving_default = tf.function(
        self._serve, autograph=False, input_signature=[
            tf.TensorSpec([None, None, None, c.channels], dtype, "images")])
    spatial = ([None, None] if c.task == "segmentation"
               else list(c.image_size))
    self.logits = tf.function(
        self._logits, autograph=False, input_signature=[
            tf.TensorSpec([None, *spatial, c.channels], tf.float32,
                          "images")])

  def _model(self, x):
    return self._converted(self.model_variables, x)

  def _padded_logits(self, x):
    """Edge-pads to the smallest bucket holding x, runs, crops back."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    buckets = tf.constant(self.contract.buckets, tf.int32)
    fits = (buckets[:, 0] >= height) & (buckets[:, 1] >= width)
    largest = max(self.contract.buckets, key=lambda b: b[0] * b[1])
    with tf.control_dependencies([tf.debugging.assert_equal(
        tf.reduce_any(fits), True,
        message=f"image (after scaling) is larger than every bucket of this "
        f"model {list(self.contract.buckets)}; largest {largest}")]):
      index = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    x = _edge_pad(x, buckets[index, 0], buckets[index, 1])
    return self._model(x)[:, :height, :width]

  def _unit(self, images):
    _, top = INPUT_DTYPES[self.contract.input_dtype]
    return tf.cast(images, tf.float32) / top

  def _logits(self, images):
    if self.contract.task == "classification":
      return {"logits": self._model(images)}
    return {"logits": self._padded_logits(images)}

  def _serve(self, images):
    c = self.contract
    x = self._unit(images)
    if c.task == "classification":
      x = tf.image.resize(x, c.image_size, "bilinear", antialias=True)
      probs = tf.nn.softmax(self._model(x), axis=-1)
      scores, classes = tf.math.top_k(probs, k=min(c.top_k, len(c.class_names)))
      return {"probabilities": probs, "top_k_classes": classes,
              "top_k_scores": scores,
              "top_k_labels": tf.gather(tf.constant(c.class_names), classes)}
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    if c.scale != 1.0:
      size = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32)
                              * c.scale), tf.int32)
      x = tf.image.resize(x, tf.maximum(size, 1), "bilinear", antialias=True)
    probs = tf.nn.softmax(self._padded_logits(x), axis=-1)
    class_map = tf.argmax(probs, axis=-1, output_type=tf.int32)
    if c.scale != 1.0:
      probs = tf.image.resize(probs, [height, width], "bilinear")
      class_map = tf.cast(tf.image.resize(
          class_map[..., None], [height, width], "nearest")[..., 0], tf.int32)
    return {"probabilities": probs, "class_map": class_map}


def save(module: ServingModule, directory: str) -> None:
  """Writes `module` as a SavedModel with its serving signatures."""
  tf.saved_model.save(module, directory, signatures={
      "serving_default": module.serving_default.get_concrete_function(),
      "logits": module.logits.get_concrete_function()})


def _reference_logits(graphdef, params, model_state, x: np.ndarray,
                      bucket: tuple[int, int] | None) -> np.ndarray:
  """The JAX model on NumPy-edge-padded input (independent of the TF ops)."""
  h, w = x.shape[1:3]
  if bucket is not None:
    x = np.pad(x, ((0, 0), (0, bucket[0] - h), (0, bucket[1] - w), (0, 0)),
               mode="edge")
  out = merge(graphdef, params, model_state)(jnp.asarray(x), train=False)
  return np.asarray(out, np.float32)[:, :h, :w] if bucket else np.asarray(out)


def verify(directory: str, graphdef, params, model_state, contract: Contract,
           atol: float = 1e-5, min_agreement: float = 0.999,
           seed: int = 0) -> dict:
  """Reloads the SavedModel and compares it with the JAX model.

  At two or more input sizes (segmentation: one per bucket, smaller than it
  so padding is exercised, and a small one; classification: two raw sizes),
  inputs go through the `logits` signature (max |difference| <= atol) and
  through `serving_default` (class maps / top-1 agree on >= min_agreement of
  the pixels / images). The logit bound is `atol` absolute for logits up to
  1 in magnitude, `atol` relative to the largest logit above (TF Serving's
  XLA is not jaxlib's: fusion and summation order differ by a few ulps).
  Raises VerificationError with the figures.
  """
  loaded = tf.saved_model.load(directory)
  rng = np.random.default_rng(seed)
  c = contract
  if c.task == "segmentation":  # One size per bucket (padding exercised),
    sizes = [(max(1, b[0] - 5), max(1, b[1] - 3)) for b in c.buckets]
    smallest = min(c.buckets, key=lambda b: b[0] * b[1])
    sizes.append((max(1, smallest[0] // 2 + 1), max(1, smallest[1] // 3)))
  else:  # and for classification two raw sizes around the model's.
    sizes = [tuple(c.image_size),
             (c.image_size[0] * 3 // 2, c.image_size[1] * 2 // 3)]
  report = {"checks": []}
  _, top = INPUT_DTYPES[c.input_dtype]
  for size in sizes:
    bucket = (min((b for b in c.buckets if b[0] >= size[0] and b[1] >= size[1]),
                  key=lambda b: b[0] * b[1])
              if c.task == "segmentation" else None)
    model_size = size if c.task == "segmentation" else tuple(c.image_size)
    x = rng.random((2, *model_size, c.channels)).astype(np.float32)
    got = loaded.signatures["logits"](images=tf.constant(x))["logits"].numpy()
    want = _reference_logits(graphdef, params, model_state, x, bucket)
    diff = float(np.abs(got - want).max())
    # float32 rounding grows with the values: the 1e-5 bound is absolute for
    # logits up to 1 in magnitude and relative to the largest logit above.
    scale = max(1.0, float(np.abs(want).max()))
    raw = (rng.random((2, *size, c.channels)) * top).astype(
        INPUT_DTYPES[c.input_dtype][0].as_numpy_dtype)
    served = loaded.signatures["serving_default"](images=tf.constant(raw))
    unit = raw.astype(np.float32) / np.float32(top)
    if c.task == "segmentation" and c.scale == 1.0:
      expected = _reference_logits(graphdef, params, model_state, unit,
                                   bucket).argmax(-1)
      agreement = float((served["class_map"].numpy() == expected).mean())
    elif c.task == "segmentation":
      agreement = None  # Resampling is TF's; covered by the logits check.
    else:
      expected = _reference_logits(graphdef, params, model_state,
                                   np.asarray(tf.image.resize(
                                       unit, c.image_size, "bilinear",
                                       antialias=True)), None).argmax(-1)
      agreement = float((served["top_k_classes"].numpy()[:, 0] ==
                         expected).mean())
    check = {"size": list(size), "bucket": list(bucket) if bucket else None,
             "max_abs_logit_diff": diff, "max_abs_logit": scale,
             "class_agreement": agreement}
    report["checks"].append(check)
    if not diff <= atol * scale or (agreement is not None and
                                    agreement < min_agreement):
      raise VerificationError(
          f"SavedModel {directory} disagrees with the JAX model at input "
          f"size {size}: max |logit difference| {diff:.3g} (limit {atol} x "
          f"max(1, max |logit| = {scale:.3g})), class agreement {agreement} "
          f"(minimum {min_agreement}).")
  report["passed"] = True
  return report
