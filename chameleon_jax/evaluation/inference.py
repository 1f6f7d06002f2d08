"""`--mode=predict`: a trained model's masks and overlays for a folder of
images (restoring the model: `model_io.restore`)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from chameleon_jax import atomic
from chameleon_jax.data import images as imio
from chameleon_jax.data.images import to_unit_float
from chameleon_jax.data import overlays, sources
from chameleon_jax.evaluation import decision
from chameleon_jax.evaluation.settings import PredictSettings
from chameleon_jax.evaluation.sliding_window import sliding_window
from chameleon_jax.model_io.restore import Restored
from chameleon_jax.model_io.state import eval_params, merge
from chameleon_jax.train import steps


def canvas(height: int, width: int, canvases, stride: int
           ) -> tuple[int, int]:
  """The size an image is edge-padded to before the model: the smallest of
  `canvases` that holds it (the served model's buckets), else the next
  multiple of the stride."""
  fits = [c for c in canvases if c[0] >= height and c[1] >= width]
  if fits:
    return min(fits, key=lambda c: c[0] * c[1])
  return height + -height % stride, width + -width % stride


def model_input(image: np.ndarray, scale: float) -> np.ndarray:
  """An (H, W, C) image as the model sees it: resampled to the training
  pixel `scale` in its own dtype (rounded, as the training pipeline
  resizes stored images), then scaled to [0, 1]."""
  if scale != 1.0:
    image = imio.resize_image(image, max(1, round(image.shape[0] * scale)),
                              max(1, round(image.shape[1] * scale)))
  return to_unit_float(image)


def model_stride(restored: Restored) -> int:
  """The model's output stride (1 where it declares none)."""
  graphdef, state, _, _ = restored
  return getattr(merge(graphdef, eval_params(state), state.model_state),
                 "stride", 1)


def decide(predict, state, image: np.ndarray, settings: PredictSettings,
           stride: int, rule: decision.DecisionRule | None
           ) -> tuple[np.ndarray, np.ndarray]:
  """One image through the model as `predict_folder` sends it ->
  (probabilities (h, w, K), decided (h, w) class map), both at the model's
  scale (`settings.scale`; `imio.resize_mask` brings the map back).

  Args:
    predict: jitted (state, images) -> probabilities (steps.make_predict_fn).
    state: the model's state; image: (H, W, C) at the model's channels.
    settings: scale, window, overlap, batch size and the served canvases.
    stride: the model's output stride; rule: the calibrated decision rule,
      or None for argmax masks.
  """
  x = model_input(image, settings.scale)
  h, w = x.shape[:2]
  if settings.window:
    probs = np.asarray(sliding_window(
        predict, x, settings.window, overlap=settings.overlap,
        batch_size=settings.batch_size, args=(state,)))
  else:
    ch, cw = canvas(h, w, settings.canvases, stride)
    x = np.pad(x, ((0, ch - h), (0, cw - w), (0, 0)), mode="edge")
    probs = np.asarray(predict(state, x[None]))[0, :h, :w]
  classes = (rule.apply(probs, np.ones(probs.shape[:2], bool))
             if rule is not None else probs.argmax(-1))
  return probs, classes


def predict_folder(workdir: str | Path, restored: Restored,
                   settings: PredictSettings, *, flip_tta: bool,
                   calibrated: bool) -> Path:
  """Writes <stem>_mask.png (class indices) and <stem>_overlay.png per image
  of `settings.input_dir`, and predictions.json (per image: defect pixels,
  the largest defect probability, `alarm` and `alarm_score` as the served
  model returns them); returns the output folder.

  Whole images are edge-padded as the exported model pads them (`canvas`),
  so the masks and alarms here are what TF Serving answers for the same
  files (export/verify.py holds the two together).

  Args:
    workdir: the trained workdir (its eval/decision.json with `calibrated`).
    restored: the model (`model_io.restore`).
    settings: input and output folders, window, overlap, scale, batch.
    flip_tta: average the probabilities over 4 flips, as in evaluation.
    calibrated: apply the decision rule that --mode=eval chose on the
      validation split (eval/decision.json) instead of argmax masks.

  With `settings.window` set (the training crop size), images are predicted
  by Gaussian-blended sliding windows (sliding_window.py), so an image many
  times the training size gets the context the model was trained with;
  otherwise the whole image goes through the model at once.

  Raises:
    ValueError: no images in the folder; a window that is not a multiple of
      the model's stride; an image whose channels the model cannot take.
    FileNotFoundError: `calibrated` and no rule was chosen yet.
  """
  files = imio.list_images(settings.input_dir)
  if not files:
    raise ValueError(f"No images found in {settings.input_dir}.")
  out = Path(settings.output_dir or Path(workdir) / "predictions")
  out.mkdir(parents=True, exist_ok=True)
  graphdef, state, _, card = restored
  predict = jax.jit(steps.make_predict_fn(graphdef, flip_tta))
  rule = decision.load_rule(workdir) if calibrated else None
  stride = model_stride(restored)
  channels = card["signature"]["in_channels"]
  window = settings.window
  if window and any(v % stride for v in window):
    raise ValueError(f"predict.window={window} must be a multiple of the "
                     f"model stride {stride}.")
  summary = []
  for path in files:
    # As ingest brought the training images to the model's channels.
    image = sources.to_channels(imio.load_image(path), channels, path)
    probs, classes = decide(predict, state, image, settings, stride, rule)
    alarm, alarm_score = decision.alarm(classes, probs)
    pred = imio.resize_mask(classes.astype(np.uint8), *image.shape[:2])
    imio.save_mask_png(out / f"{path.stem}_mask.png", pred)
    imio.save_png(out / f"{path.stem}_overlay.png", overlays.panel(
        image, None, pred, titles=(path.name, "decision rule" if rule
                                   is not None else "argmax"),
        class_names=card.get("class_names", ())))
    summary.append({
        "file": str(path), "defect_pixels": int((pred > 0).sum()),
        "max_defect_probability": float(probs[..., 1:].max()),
        "alarm": alarm, "alarm_score": alarm_score})
  atomic.write_json(out / "predictions.json", summary)
  return out
