"""A trained model as a jax2tf SavedModel that TF Serving can load.

The model runs as one XlaCallModule op (native serialization) compiled for
every platform in `Contract.platforms`; its parameters (and batch-norm
statistics) are `tf.Variable`s, so `saved_model.pb` stays small. Around it,
TensorFlow ops do what a customer should not have to:

serving_default(images: (B, H, W, C) in `input_dtype`)
  segmentation: scale to [0, 1] -> resample by the training `scale` -> edge-
  pad to the smallest bucket that holds the image -> model -> softmax (the
  mean over 4 flips when the contract's `flip_tta`) -> crop -> the decision
  rule the evaluation chose (`decision`, eval/decision.json; argmax when the
  config did not calibrate one) -> outputs at the original size:
  `probabilities` (B, H, W, K) float32, `class_map` (B, H, W) int32 (the
  rule's classes, 0 = background), `alarm` (B,) bool (a defect component
  was kept) and `alarm_score` (B,) float32 (the largest p(defect) of a kept
  pixel, 0 without alarm). Model, flips and rule are one XlaCallModule each
  (decision_graph.py: connected components in JAX), so TF Serving itself
  makes the decision that was evaluated.
  classification: scale to [0, 1] -> resize to the training image size ->
  model -> softmax -> outputs `probabilities` (B, K), `top_k_classes`,
  `top_k_scores` and `top_k_labels` (class names).
encoded(images: (B,) string, PNG / JPEG / BMP / GIF bytes of one size)
  each image decoded in the graph and scaled to [0, 1] by its own bit depth
  (8- or 16-bit PNG), as training loads files, whatever `input_dtype` says;
  grey images repeated to the model's channels, any other channel count
  refused (INVALID_ARGUMENT). Segmentation answers as compactly as it is
  asked: `class_map_png_bytes` (8-bit PNG of serving_default's class map),
  `defect_probability_png_bytes` (16-bit PNG of p(defect) * 65535),
  `alarm`, `alarm_score`; TF Serving's REST API returns `_bytes` outputs
  as {"b64": ...}. Classification: serving_default's outputs. REST clients
  send the files as {"b64": ...}; TIFF is not decodable by TensorFlow's
  ops, so clients re-encode it as PNG (export/client.py). ENCODED_FORMATS
  lists the formats the graph reads.
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

from chameleon_jax.evaluation.decision import DecisionRule
from chameleon_jax.evaluation.decision_graph import apply_rule
from chameleon_jax.model_io.state import merge

INPUT_DTYPES = {"uint8": (tf.uint8, 255.0), "uint16": (tf.uint16, 65535.0),
                "float32": (tf.float32, 1.0)}
ENCODED_FORMATS = ("png", "jpeg", "bmp", "gif")


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
  # Segmentation: the rule's fields (DecisionRule), None = argmax masks;
  # and whether probabilities are the mean over 4 flips.
  decision: dict | None = None
  flip_tta: bool = False

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

  def rule(self) -> DecisionRule | None:
    """The served decision rule; None: argmax masks."""
    return DecisionRule(**self.decision) if self.decision else None


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


def probabilities_fn(logits, flip_tta: bool):
  """f(variables, images) -> softmax probabilities; with `flip_tta` the
  mean over the image and its horizontal, vertical and double flips, each
  mapped back (as steps.make_predict_fn computes them for evaluation)."""

  def probabilities(variables, images):
    if not flip_tta:
      return jax.nn.softmax(logits(variables, images), axis=-1)
    total = 0.0
    for axes in ((), (2,), (1,), (1, 2)):
      flipped = jnp.flip(images, axes) if axes else images
      out = jax.nn.softmax(logits(variables, flipped), axis=-1)
      total = total + (jnp.flip(out, axes) if axes else out)
    return total / 4

  return probabilities


def decide_fn(rule: DecisionRule | None):
  """f(probabilities (B, H, W, K)) -> (class_map, alarm, alarm_score): the
  calibrated rule (decision_graph.apply_rule), or argmax masks with the
  same two image-level outputs."""

  def decide(probs):
    if rule is not None:
      return apply_rule(rule, probs)
    class_map = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    kept = class_map > 0
    return (class_map, jnp.any(kept, axis=(1, 2)),
            jnp.max(jnp.where(kept, 1.0 - probs[..., 0], 0.0), axis=(1, 2)))

  return decide


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
    polymorphic = dict(with_gradient=False,
                       native_serialization_platforms=tuple(c.platforms))
    self._converted = jax2tf.convert(
        logits, polymorphic_shapes=[None, shape], **polymorphic)
    if c.task == "segmentation":
      self._probabilities = jax2tf.convert(
          probabilities_fn(logits, c.flip_tta),
          polymorphic_shapes=[None, shape], **polymorphic)
      self._decide = jax2tf.convert(
          decide_fn(c.rule()),
          polymorphic_shapes=[f"(b, h, w, {len(c.class_names)})"],
          **polymorphic)
    dtype, _ = INPUT_DTYPES[c.input_dtype]
    self.serving_default = tf.function(
        self._serve, autograph=False, input_signature=[
            tf.TensorSpec([None, None, None, c.channels], dtype, "images")])
    self.encoded = tf.function(
        self._serve_encoded, autograph=False, input_signature=[
            tf.TensorSpec([None], tf.string, "images")])
    spatial = ([None, None] if c.task == "segmentation"
               else list(c.image_size))
    self.logits = tf.function(
        self._logits, autograph=False, input_signature=[
            tf.TensorSpec([None, *spatial, c.channels], tf.float32,
                          "images")])

  def _model(self, x):
    return self._converted(self.model_variables, x)

  def _padded(self, function, x):
    """Edge-pads to the smallest bucket holding x, runs `function`
    (variables, x), crops back."""
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
    return function(self.model_variables, x)[:, :height, :width]

  def _decode(self, data):
    """One encoded image -> (H, W, C) float32 in [0, 1], scaled by its own
    bit depth as `images.to_unit_float` scales a loaded image; JPEG
    with libjpeg's accurate integer DCT, as PIL decodes it (TF's default,
    the fast DCT, does not: RESULTS, "Serving the evaluated decision")."""
    c = self.contract
    padded = tf.strings.join([data, tf.constant("\0" * 25)])
    png16 = tf.logical_and(
        tf.equal(tf.strings.substr(padded, 0, 8), b"\x89PNG\r\n\x1a\n"),
        tf.equal(tf.strings.substr(padded, 24, 1), b"\x10"))  # IHDR depth.

    def unit(image, top):
      return (tf.cast(image, tf.float32) / tf.constant(top, tf.float32),
              tf.constant(top, tf.float32))

    image, depth = tf.case([
        (tf.io.is_jpeg(data), lambda: unit(tf.io.decode_jpeg(
            data, dct_method="INTEGER_ACCURATE"), 255.0)),
        (png16, lambda: unit(tf.io.decode_png(data, dtype=tf.uint16),
                             65535.0))],
        default=lambda: unit(tf.io.decode_image(
            data, dtype=tf.uint8, expand_animations=False), 255.0))
    if c.channels > 1:
      image = tf.cond(tf.equal(tf.shape(image)[-1], 1),
                      lambda: tf.repeat(image, c.channels, axis=-1),
                      lambda: image)
    with tf.control_dependencies([tf.debugging.assert_equal(
        tf.shape(image)[-1], c.channels, message=(
            f"the encoded image's channel count is not this model's "
            f"{c.channels} (grey images are repeated; others refused)"))]):
      return (tf.ensure_shape(tf.identity(image), [None, None, c.channels]),
              depth)

  def _serve_encoded(self, images):
    decoded, depth = tf.map_fn(self._decode, images, fn_output_signature=(
        tf.TensorSpec([None, None, self.contract.channels], tf.float32),
        tf.TensorSpec([], tf.float32)))
    out = self._serve_unit(decoded, depth[:, None, None, None])
    if self.contract.task == "classification":
      return out
    # Answers as compact as the request: PNGs, which TF Serving's REST API
    # returns as {"b64": ...} because the names end in "_bytes".
    p_defect = 1.0 - out["probabilities"][..., :1]
    return {
        "class_map_png_bytes": tf.map_fn(
            lambda m: tf.io.encode_png(tf.cast(m[..., None], tf.uint8)),
            out["class_map"], fn_output_signature=tf.string),
        "defect_probability_png_bytes": tf.map_fn(
            lambda q: tf.io.encode_png(tf.cast(tf.round(
                tf.clip_by_value(q, 0.0, 1.0) * 65535.0), tf.uint16)),
            p_defect, fn_output_signature=tf.string),
        "alarm": out["alarm"], "alarm_score": out["alarm_score"]}

  def _unit(self, images):
    _, top = INPUT_DTYPES[self.contract.input_dtype]
    return tf.cast(images, tf.float32) / top

  def _logits(self, images):
    if self.contract.task == "classification":
      return {"logits": self._model(images)}
    return {"logits": self._padded(self._converted, images)}

  def _serve(self, images):
    dtype, top = INPUT_DTYPES[self.contract.input_dtype]
    return self._serve_unit(self._unit(images),
                            top if dtype.is_integer else None)

  def _serve_unit(self, x, depth=None):
    """serving_default's outputs for images already in [0, 1]; `depth`
    (255, 65535; per image or shared): the images' integer scale, to which
    a resampled image is rounded, as the training pipeline resizes integer
    images and rounds them (images.resize_image) before scaling to [0, 1].
    """
    c = self.contract
    if c.task == "classification":
      x = tf.image.resize(x, c.image_size, "bilinear", antialias=True)
      probs = tf.nn.softmax(self._model(x), axis=-1)
      scores, classes = tf.math.top_k(probs, k=min(c.top_k, len(c.class_names)))
      return {"probabilities": probs, "top_k_classes": classes,
              "top_k_scores": scores,
              "top_k_labels": tf.gather(tf.constant(c.class_names), classes)}
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    if c.scale != 1.0:
      size = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32)
                              * c.scale), tf.int32)
      x = tf.image.resize(x, tf.maximum(size, 1), "bilinear", antialias=True)
      if depth is not None:
        x = tf.round(x * depth) / depth
    probs = self._padded(self._probabilities, x)
    class_map, alarm, score = self._decide(probs)
    if c.scale != 1.0:
      probs = tf.image.resize(probs, [height, width], "bilinear")
      class_map = nearest_resize(class_map, height, width)
    return {"probabilities": probs, "class_map": class_map, "alarm": alarm,
            "alarm_score": score}


def nearest_resize(class_map, height, width):
  """(B, h, w) -> (B, height, width) by the pixel-centre rule of
  `images.resize_mask` (source index floor((2i + 1) h / 2 height), in
  integers, so both give the same map)."""
  h, w = tf.shape(class_map)[1], tf.shape(class_map)[2]
  rows = tf.minimum((2 * tf.range(height) + 1) * h // (2 * height), h - 1)
  cols = tf.minimum((2 * tf.range(width) + 1) * w // (2 * width), w - 1)
  return tf.gather(tf.gather(class_map, rows, axis=1), cols, axis=2)


def save(module: ServingModule, directory: str) -> None:
  """Writes `module` as a SavedModel with its serving signatures."""
  tf.saved_model.save(module, directory, signatures={
      "serving_default": module.serving_default.get_concrete_function(),
      "encoded": module.encoded.get_concrete_function(),
      "logits": module.logits.get_concrete_function()})
