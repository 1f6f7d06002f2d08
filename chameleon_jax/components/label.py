"""`--mode=label`: the labelling tool over the dataset's raw folders, with
pre-labels from the workdir's trained model (chameleon_jax/labelling/).

  python main.py --config=... --workdir=... --mode=label \
      [--config.label.port=8765] [--config.label.prelabel=off]

The page writes masks where `image_mask_folders` reads them; a later
`--mode=ingest` makes a new dataset version holding them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from chameleon_jax.components import build
from chameleon_jax.data import images as imio
from chameleon_jax.data import overlays, sources
from chameleon_jax.evaluation import decision, inference
from chameleon_jax.labelling import queue, server, store as store_lib
from chameleon_jax.model_io import card as card_lib
from chameleon_jax.train import steps

PRELABEL = ("auto", "on", "off")


def prelabels(config: ml_collections.ConfigDict, workdir: str,
              label_store: store_lib.LabelStore, log: Callable = print
              ) -> tuple[dict[str, queue.Prelabel], str, float]:
  """The workdir's model on every image of the store -> (pre-labels by id,
  the model's version, the threshold the queue orders around).

  The mask and score are `--mode=predict`'s for the same file
  (`inference.decide`: the same scale, padding, windows and
  `eval.flip_tta`; the calibrated rule when `eval.decision` is
  "calibrated" and --mode=eval chose one, else argmax, said in the version
  string). The prediction with the other flip setting gives the flip
  disagreement the queue weighs.

  Raises:
    ValueError: the model's classes differ from the dataset's palette.
  """
  settings = build.eval_settings(config)
  restored = build.restore(config, workdir, settings.checkpoint)
  graphdef, state, _, card = restored
  names = tuple(card.get("class_names") or ())
  if names and names != label_store.layout.class_names:
    raise ValueError(
        f"the model in {workdir} predicts classes {list(names)}; the "
        f"dataset's palette is {list(label_store.layout.class_names)} "
        "(data.source_kwargs.class_names). Pre-label with a model of these "
        "classes or set --config.label.prelabel=off.")
  rule, how = None, "argmax"
  if settings.decision == "calibrated":
    try:
      rule, how = decision.load_rule(workdir), "calibrated"
    except FileNotFoundError as e:
      logging.warning("label: %s Pre-labels are argmax masks.", e)
  threshold = 0.5 if rule is None else max(rule.threshold,
                                           rule.seed_threshold or 0.0)
  predict_settings = build.predict_settings(config,
                                            input_dir=str(label_store.images))
  stride = inference.model_stride(restored)
  channels = card["signature"]["in_channels"]
  # The mask and score as --mode=predict gives them (eval.flip_tta); the
  # other flip setting only for the disagreement.
  predicts = [jax.jit(steps.make_predict_fn(graphdef, flip))
              for flip in (settings.flip_tta, not settings.flip_tta)]
  out, started = {}, time.time()
  ids = label_store.ids()
  for n, image_id in enumerate(ids):
    path = label_store.image_file(image_id)
    try:
      image = sources.to_channels(label_store.load_image(image_id), channels,
                                  path)
    except (store_lib.Refused, ValueError) as e:  # Ingest quarantines it.
      logging.warning("label: no pre-label for %s: %s", path, e)
      continue
    maps = []
    for predict in predicts:
      probs, classes = inference.decide(predict, state, image,
                                        predict_settings, stride, rule)
      maps.append((float((1.0 - probs[..., 0]).max()),
                   imio.resize_mask(classes.astype(np.uint8),
                                    *image.shape[:2])))
    (score, mask), (_, other) = maps
    out[image_id] = queue.Prelabel(
        mask=mask, score=score, disagreement=queue.disagreement(mask, other),
        alarm=bool((mask > 0).any()))
    if (n + 1) % 50 == 0 or n + 1 == len(ids):
      log(f"label: pre-labelled {n + 1}/{len(ids)} images "
          f"({time.time() - started:.0f} s)")
  digest = card_lib.params_digest(state.params)[:12]
  version = (f"{Path(workdir).resolve().name}@step{int(state.step)} "
             f"{settings.checkpoint} {digest} {how}")
  return out, version, threshold


def app(config: ml_collections.ConfigDict, workdir: str,
        log: Callable = print) -> server.LabelApp:
  """The label tool's application for `config` (no server started).

  Raises:
    ValueError: a source other than image_mask_folders, masks that are
      not PNG, an unknown `label.prelabel`, or (prelabel "on") no trained
      model in `workdir`.
  """
  section = config.label
  if section.prelabel not in PRELABEL:
    raise ValueError(f"label.prelabel={section.prelabel!r}; expected one "
                     f"of {PRELABEL}.")
  layout = store_lib.layout_from_source(config.data.source,
                                        config.data.source_kwargs.to_dict())
  label_store = store_lib.LabelStore(layout, config.data.max_pixels)
  checkpoints = Path(workdir) / "checkpoints"
  trained = checkpoints.is_dir() and any(checkpoints.iterdir())
  if section.prelabel == "on" and not trained:
    raise ValueError(f"label.prelabel='on' and {workdir} has no trained "
                     "model (checkpoints/); train first or set 'auto'.")
  found, version, threshold = {}, None, 0.5
  if section.prelabel != "off" and trained:
    found, version, threshold = prelabels(config, workdir, label_store, log)
  return server.LabelApp(
      label_store, overlays.class_colours(np.arange(len(layout.class_names))),
      prelabels=found, model_version=version,
      threshold=threshold,
      max_request_bytes=int(section.max_request_mb * (1 << 20)))


def label(config: ml_collections.ConfigDict, workdir: str,
          log: Callable = print) -> None:
  """Serves the page on label.host:label.port until interrupted.

  Raises:
    ValueError: as `app`; the port cannot be bound (in use, not allowed).
  """
  application = app(config, workdir, log)
  host, port = config.label.host, int(config.label.port)
  try:
    httpd = server.LabelServer(application, host, port)
  except OSError as e:
    raise ValueError(f"cannot serve on {host}:{port} ({e.strerror}); "
                     "choose another --config.label.port.") from None
  log(f"label: {len(application.store.ids())} images in "
      f"{application.store.images}; masks to {application.store.masks}; "
      f"pre-labels: {application.model_version or 'none'}")
  unlabelled = sum(not application.store.mask_file(i).is_file()
                   for i in application.store.ids())
  if unlabelled and config.data.source_kwargs.missing_masks != "unlabelled":
    log(f"label: {unlabelled} images have no mask yet; to ingest the "
        "labelled ones meanwhile, add --config.data.source_kwargs."
        "missing_masks=unlabelled (else they count as bad inputs)")
  log(f"label: open {httpd.url} (Ctrl+C stops)")
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()
