"""Restoring trained models (one, or the members of an ensemble) for inference,
and `predict` on a folder."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Sequence

import jax
import ml_collections
import numpy as np

from chameleon_jax import components
from chameleon_jax.data import images as imio
from chameleon_jax.data.transforms import to_unit_float
from chameleon_jax.evaluation import decision, overlays
from chameleon_jax.evaluation.sliding_window import sliding_window
from chameleon_jax.train import checkpoint as ckpt_lib
from chameleon_jax.train import sharding, steps
from chameleon_jax.train.state import eval_params, merge
from chameleon_jax.train.loop import build_state, read_model_card


def restore(config: ml_collections.ConfigDict, workdir: str, which: str):
  """(graphdef, state, mesh, model card) from the `best` or `latest` step."""
  if which not in ("best", "latest"):
    raise ValueError(f"eval.checkpoint={which!r}; expected 'best' or 'latest'.")
  card = read_model_card(workdir)
  sig = card["signature"]
  mesh = sharding.make_mesh()
  graphdef, state, _, _ = build_state(config, sig["num_classes"],
                                      sig["in_channels"], mesh)
  checkpointer = ckpt_lib.Checkpointer(
      workdir, every_steps=1, keep=1, best_metric=config.train.best_metric or None)
  current = components.model_signature(config, sig["num_classes"],
                                       sig["in_channels"])
  restored = checkpointer.restore(ckpt_lib.abstract(state), current,
                                  best=which == "best")
  if restored is None and which == "best":  # No validation ran: use latest.
    which = "latest"
    restored = checkpointer.restore(ckpt_lib.abstract(state), current)
  checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}; train first.")
  state, _, step = restored
  card["step"], card["checkpoint"] = step, which
  logging.info("Restored %s checkpoint, step %d.", which, step)
  return graphdef, state, mesh, card


def load_members(config: ml_collections.ConfigDict, workdirs: Sequence[str]):
  """[(graphdef, state, card, workdir)] of an ensemble, in `workdirs` order.

  A member's architecture comes from its own model card, the rest of the
  experiment (data, evaluation, `eval.checkpoint`) from `config`. Members
  must agree on classes and input channels.
  """
  members = []
  for wd in workdirs:
    sig = read_model_card(wd)["signature"]
    member_config = copy.deepcopy(config)
    with member_config.unlocked():
      member_config.model.name = sig["name"]
      member_config.model.dtype = sig["dtype"]
      member_config.model.kwargs = ml_collections.ConfigDict(sig["kwargs"])
    graphdef, state, mesh, card = restore(member_config, wd,
                                          config.eval.checkpoint)
    members.append((graphdef, state, card, wd))
  first = members[0][2]["signature"]
  for _, _, card, wd in members[1:]:
    sig = card["signature"]
    if (sig["num_classes"], sig["in_channels"]) != (first["num_classes"],
                                                    first["in_channels"]):
      raise ValueError(
          f"Ensemble member {wd} has {sig['num_classes']} classes and "
          f"{sig['in_channels']} input channels; {workdirs[0]} has "
          f"{first['num_classes']} and {first['in_channels']}.")
  return members, mesh


def predict_folder(config: ml_collections.ConfigDict, workdir: str) -> Path:
  """Writes <stem>_mask.png (class indices) and <stem>_overlay.png per image.

  With eval.decision = "calibrated" the masks follow the decision rule that
  --mode=eval chose on the validation split (eval/decision.json); with
  eval.flip_tta the probabilities are flip-averaged, as in evaluation.

  With `predict.window` set (the training crop size), images are predicted
  by Gaussian-blended sliding windows (sliding_window.py), so an image many
  times the training size gets the context the model was trained with;
  otherwise the whole image goes through the model at once.
  """
  input_dir = config.predict.input_dir
  if not input_dir:
    raise ValueError("Set --config.predict.input_dir to a folder of images.")
  files = imio.list_images(input_dir)
  if not files:
    raise ValueError(f"No images found in {input_dir}.")
  out = Path(config.predict.output_dir or Path(workdir) / "predictions")
  out.mkdir(parents=True, exist_ok=True)
  graphdef, state, _, card = restore(config, workdir, config.eval.checkpoint)
  predict = jax.jit(steps.make_predict_fn(graphdef, config.eval.flip_tta))
  rule = (decision.load_rule(workdir) if config.eval.decision == "calibrated"
          else None)
  stride = getattr(merge(graphdef, eval_params(state), state.model_state),
                   "stride", 1)
  channels = card["signature"]["in_channels"]
  window = tuple(int(v) for v in config.predict.get("window", ()))
  if window and any(v % stride for v in window):
    raise ValueError(f"predict.window={window} must be a multiple of the "
                     f"model stride {stride}.")
  summary = []
  for path in files:
    image = imio.load_image(path)
    if image.shape[2] != channels:
      if image.shape[2] == 1:
        image = np.repeat(image, channels, axis=2)
      else:
        raise ValueError(f"{path}: {image.shape[2]} channels, the model "
                         f"expects {channels}.")
    x = to_unit_float(image)
    if config.data.scale != 1.0:  # The pixel scale the model was trained at.
      x = imio.resize_image(x, max(1, round(x.shape[0] * config.data.scale)),
                            max(1, round(x.shape[1] * config.data.scale)))
    h, w = x.shape[:2]
    if window:
      probs = np.asarray(sliding_window(
          predict, x, window, overlap=config.predict.get("overlap", 0.5),
          batch_size=config.eval.batch_size, args=(state,)))
    else:
      x = np.pad(x, ((0, -h % stride), (0, -w % stride), (0, 0)))
      probs = np.asarray(predict(state, x[None]))[0, :h, :w]
    classes = (rule.apply(probs, np.ones(probs.shape[:2], bool))
               if rule is not None else probs.argmax(-1))
    pred = imio.resize_mask(classes.astype(np.uint8), *image.shape[:2])
    imio.save_png(out / f"{path.stem}_mask.png", pred)
    imio.save_png(out / f"{path.stem}_overlay.png",
                  overlays.panel(image, None, pred))
    summary.append({"file": str(path), "defect_pixels": int((pred > 0).sum()),
                    "max_defect_probability": float(probs[..., 1:].max())})
  (out / "predictions.json").write_text(json.dumps(summary, indent=1) + "\n")
  return out
