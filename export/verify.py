"""Before a SavedModel is published: does it compute what was evaluated?

`verify` reloads the written SavedModel with TensorFlow and compares, on
inputs of several sizes, what TF returns with an independent reference:

- `logits` signature against the JAX model on NumPy edge-padded input:
  max |difference| <= LOGIT_ATOL (absolute up to |logit| 1, relative above;
  TF Serving's XLA is not jaxlib's, fusion and summation order differ by
  an order of magnitude less than the bound on trained models, RESULTS;
  a wrong weight or op differs by orders of magnitude more);
- `serving_default` (segmentation) against what `--mode=predict` computes
  for the same raw images: the training path's resize when `scale` != 1
  (`images.resize_image`, PIL, in the images' dtype and rounded; the graph
  rounds TF's resize to the same integer scale), unit scale, the JAX model's
  probabilities (flip mean when the contract says so), the decision rule
  as the evaluation applies it (`DecisionRule.apply`, NumPy + SciPy, not
  the graph's JAX twin) and the masks' nearest resize back. Alarms must be
  identical; class maps may differ on at most 1 - MIN_CLASS_AGREEMENT of
  the pixels at scale 1 (float rounding at a threshold) and
  1 - MIN_CLASS_AGREEMENT_RESAMPLED where the graph resamples (TF's
  antialiased bilinear against PIL's: the same triangle filter, different
  summation, so a value at a rounding boundary can land one level away);
  alarm scores within ALARM_SCORE_ATOL (resampled: ..._RESAMPLED);
- classification: top-1 of the served classes against the JAX model on
  the TF-resized input.

The inputs are smooth random images (Gaussian-filtered noise over the full
intensity range), as camera images are smooth: pure noise would put most
pixels at a threshold and measure nothing but the tie-breaking.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from scipy import ndimage

from chameleon_jax.data import images as imio
from chameleon_jax.evaluation import decision, inference
from chameleon_jax.model_io.state import merge
from export.savedmodel import (INPUT_DTYPES, Contract, jax_logits_fn,
                               probabilities_fn)

LOGIT_ATOL = 1e-4
MIN_CLASS_AGREEMENT = 0.999
MIN_CLASS_AGREEMENT_RESAMPLED = 0.99
ALARM_SCORE_ATOL = 1e-4
# Where the graph resamples, a pixel whose resized value lies at a rounding
# boundary can land one intensity level away from PIL's: p(defect) moves by
# up to about this much.
ALARM_SCORE_ATOL_RESAMPLED = 2e-3


class VerificationError(RuntimeError):
  """The SavedModel disagrees with the JAX model; it must not be published."""


def _edge_pad(x: np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
  h, w = x.shape[1:3]
  return np.pad(x, ((0, 0), (0, bucket[0] - h), (0, bucket[1] - w), (0, 0)),
                mode="edge")


def _bucket(contract: Contract, height: int, width: int) -> tuple[int, int]:
  return inference.canvas(height, width, contract.buckets, contract.stride)


def reference_logits(graphdef, params, model_state, x: np.ndarray,
                     bucket: tuple[int, int] | None) -> np.ndarray:
  """The JAX model on NumPy-edge-padded input (independent of the TF ops)."""
  h, w = x.shape[1:3]
  if bucket is not None:
    x = _edge_pad(x, bucket)
  out = merge(graphdef, params, model_state)(jnp.asarray(x), train=False)
  return np.asarray(out, np.float32)[:, :h, :w] if bucket else np.asarray(out)


def reference_outputs(graphdef, params, model_state, contract: Contract,
                      raw: np.ndarray) -> dict[str, np.ndarray]:
  """serving_default's outputs for raw (B, H, W, C) images as
  `--mode=predict` computes them (module docstring)."""
  height, width = raw.shape[1:3]
  unit = np.stack([inference.model_input(r, contract.scale) for r in raw])
  h, w = unit.shape[1:3]
  flat, logits = jax_logits_fn(graphdef, params, model_state)
  probabilities = jax.jit(probabilities_fn(logits, contract.flip_tta))
  probs = np.asarray(probabilities(flat.variables(), _edge_pad(
      unit, _bucket(contract, h, w))), np.float32)[:, :h, :w]
  rule = contract.rule()
  outputs = {"class_map": [], "alarm": [], "alarm_score": []}
  for p in probs:
    classes = (rule.apply(p, np.ones(p.shape[:2], bool)) if rule is not None
               else p.argmax(-1).astype(np.int32))
    alarm, score = decision.alarm(classes, p)
    outputs["alarm"].append(alarm)
    outputs["alarm_score"].append(score)
    outputs["class_map"].append(imio.resize_mask(classes, height, width))
  return {k: np.asarray(v) for k, v in outputs.items()}


def _smooth_images(rng, shape, dtype, top: float) -> np.ndarray:
  """(B, H, W, C) smooth random images over the full range of `dtype`."""
  field = ndimage.gaussian_filter(rng.normal(size=shape), (0, 3, 3, 0))
  low = field.min(axis=(1, 2, 3), keepdims=True)
  span = np.maximum(field.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
  unit = (field - low) / span
  if np.issubdtype(dtype, np.integer):
    return np.round(unit * top).astype(dtype)
  return unit.astype(dtype)


def _raw_sizes(contract: Contract) -> list[tuple[int, int]]:
  """Raw image sizes that, after scaling, fall just inside each bucket
  (odd sizes: padding exercised), and a small odd one."""
  s = contract.scale
  sizes = [(max(1, int((b[0] - 5) / s)), max(1, int((b[1] - 3) / s)))
           for b in contract.buckets]
  smallest = min(contract.buckets, key=lambda b: b[0] * b[1])
  sizes.append((max(1, int((smallest[0] // 2 + 1) / s)),
                max(1, int((smallest[1] // 3) / s))))
  return sizes


def verify(directory: str, graphdef, params, model_state, contract: Contract,
           seed: int = 0) -> dict:
  """Reloads the SavedModel and compares it (module docstring).

  Returns:
    {"checks": [per input size: size, bucket, max_abs_logit_diff,
    max_abs_logit, class_agreement, alarms_equal, max_alarm_score_diff,
    min_agreement], "passed": True}.

  Raises:
    VerificationError: a figure beyond its bound, named with the input size.
  """
  loaded = tf.saved_model.load(directory)
  rng = np.random.default_rng(seed)
  c = contract
  dtype, top = INPUT_DTYPES[c.input_dtype]
  if c.task == "segmentation":
    sizes = _raw_sizes(c)
  else:
    sizes = [tuple(c.image_size),
             (c.image_size[0] * 3 // 2, c.image_size[1] * 2 // 3)]
  report = {"checks": []}
  for size in sizes:
    if c.task == "segmentation":
      model_size = (max(1, round(size[0] * c.scale)),
                    max(1, round(size[1] * c.scale)))
      bucket = _bucket(c, *model_size)
    else:
      model_size, bucket = tuple(c.image_size), None
    x = rng.random((2, *model_size, c.channels)).astype(np.float32)
    got = loaded.signatures["logits"](images=tf.constant(x))["logits"].numpy()
    want = reference_logits(graphdef, params, model_state, x, bucket)
    diff = float(np.abs(got - want).max())
    scale = max(1.0, float(np.abs(want).max()))
    raw = _smooth_images(rng, (2, *size, c.channels), dtype.as_numpy_dtype,
                         top)
    served = loaded.signatures["serving_default"](images=tf.constant(raw))
    check = {"size": list(size), "bucket": list(bucket) if bucket else None,
             "max_abs_logit_diff": diff, "max_abs_logit": scale}
    if c.task == "segmentation":
      expected = reference_outputs(graphdef, params, model_state, c, raw)
      minimum = (MIN_CLASS_AGREEMENT if c.scale == 1.0
                 else MIN_CLASS_AGREEMENT_RESAMPLED)
      score_atol = (ALARM_SCORE_ATOL if c.scale == 1.0
                    else ALARM_SCORE_ATOL_RESAMPLED)
      alarms = served["alarm"].numpy()
      scores = np.abs(served["alarm_score"].numpy() - expected["alarm_score"])
      check.update(
          class_agreement=float((served["class_map"].numpy()
                                 == expected["class_map"]).mean()),
          alarms_equal=bool(np.array_equal(alarms, expected["alarm"])),
          max_alarm_score_diff=float(scores.max()), min_agreement=minimum)
      failed = (not check["alarms_equal"] or check["class_agreement"] < minimum
                or check["max_alarm_score_diff"] > score_atol)
      check["alarm_score_atol"] = score_atol
    else:
      unit = raw.astype(np.float32) / np.float32(top)
      expected = reference_logits(graphdef, params, model_state, np.asarray(
          tf.image.resize(unit, c.image_size, "bilinear", antialias=True)),
                                  None).argmax(-1)
      check.update(class_agreement=float(
          (served["top_k_classes"].numpy()[:, 0] == expected).mean()),
                   min_agreement=MIN_CLASS_AGREEMENT)
      failed = check["class_agreement"] < MIN_CLASS_AGREEMENT
    report["checks"].append(check)
    if failed or not diff <= LOGIT_ATOL * scale:
      raise VerificationError(
          f"SavedModel {directory} disagrees with the JAX model at input "
          f"size {size}: max |logit difference| {diff:.3g} (limit "
          f"{LOGIT_ATOL} x max(1, max |logit| = {scale:.3g})), "
          + ", ".join(f"{k} {check[k]}" for k in (
              "class_agreement", "min_agreement", "alarms_equal",
              "max_alarm_score_diff", "alarm_score_atol") if k in check)
          + ".")
  report["passed"] = True
  return report
