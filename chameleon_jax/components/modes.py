"""The modes of `main.py`, composed: config -> objects -> the room that works.

Each function reads the config once (through `build`), builds the objects
and typed settings the lower rooms take, and calls them. Lower rooms never
see a config.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

from chameleon_jax import sharding
from chameleon_jax.components import build
from chameleon_jax.components import card as card_mode
from chameleon_jax.data import images as imio
from chameleon_jax.evaluation import decision
from chameleon_jax.evaluation import inference
from chameleon_jax.evaluation import report as eval_report
from chameleon_jax.evaluation.evaluate import evaluate_split
from chameleon_jax.robustness import report as robustness_report
from chameleon_jax.robustness import sweep
from chameleon_jax.train import loop, steps


def figure_names(config: ml_collections.ConfigDict, where: str) -> str:
  """What the figures printed for `where` ("eval", "validation",
  "robustness") are: evaluation/report.figure_names under this config."""
  return eval_report.figure_names(config.eval.decision, where)


def make_validate(config: ml_collections.ConfigDict, ds) -> loop.MakeValidate:
  """The validation the training loop runs: `--mode=eval`'s metrics on
  "val", and with the calibrated decision (segmentation) the rule chosen
  on val (calibrated/* metrics), so `train.best_metric` can select by what
  --mode=eval will report.

  Raises:
    ValueError: `train.best_metric` is a calibrated/* metric without the
      calibrated decision.
  """
  task = build.task(config)
  inp = build.eval_input(config)
  settings = build.eval_settings(config)
  calibrated = task == "segmentation" and settings.calibrated
  best = config.train.best_metric
  if best.startswith("calibrated/") and not calibrated:
    raise ValueError(
        f"train.best_metric={best!r} needs the calibrated/* validation "
        "metrics: set eval.decision='calibrated' (segmentation).")

  def make(graphdef, mesh):
    eval_step = jax.jit(steps.make_eval_step(
        graphdef, settings.min_defect_area, task))
    predict = (jax.jit(steps.make_predict_fn(graphdef, settings.flip_tta))
               if calibrated else None)

    def validate(state, max_items: int | None = None) -> dict[str, float]:
      part = dataclasses.replace(inp, max_items=max_items)
      metrics, _ = evaluate_split(eval_step, state, ds, "val", part, mesh,
                                  task)
      if predict is not None:
        metrics.update(decision.validation_metrics(
            predict, state, ds, part, mesh, settings.max_false_alarm,
            settings.per_class_rule))
      return metrics

    validate.items = ds.num_examples("val")
    return validate

  return make


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """`--mode=train`: trains per `config` in `workdir` (resuming if it holds a
  checkpoint); returns the last validation metrics (train/loop.py)."""
  started = time.perf_counter()
  mesh = sharding.make_mesh()
  ds = build.open_dataset(config, workdir)
  card_mode.keep_trained_config(config, workdir)
  data_iter = build.train_iterator(config, ds, mesh, jax.process_index(),
                                   jax.process_count())
  try:
    return loop.train(
        workdir, build.train_settings(config),
        model=build.model(config, ds.num_classes, ds.channels),
        signature=build.model_signature(config, ds.num_classes, ds.channels),
        data=loop.DatasetCard(tuple(ds.class_names), str(ds.path),
                              ds.dataset_hash),
        data_iter=data_iter, loss_fn=build.loss(config),
        target=build.target_key(config),
        make_validate=make_validate(config, ds), mesh=mesh, started=started)
  finally:  # Grain's worker processes and their shared memory, released.
    getattr(data_iter, "close", lambda: None)()


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=eval`: the `eval.checkpoint` model on `eval.split`
  (evaluation/report.py)."""
  settings = build.eval_settings(config)
  restored = build.restore(config, workdir, settings.checkpoint)
  return eval_report.run_eval(
      workdir, restored, build.open_dataset(config, workdir), settings,
      build.eval_input(config), build.task(config))


def predict(config: ml_collections.ConfigDict, workdir: str) -> Path:
  """`--mode=predict`: masks and overlays for `predict.input_dir`."""
  settings = build.eval_settings(config)
  predict_settings = build.predict_settings(config)
  restored = build.restore(config, workdir, settings.checkpoint)
  with imio.pixel_limit(config.data.max_pixels):
    return inference.predict_folder(
        workdir, restored, predict_settings, flip_tta=settings.flip_tta,
        calibrated=settings.calibrated)


def robustness_sweep(config: ml_collections.ConfigDict, workdir: str,
                     log=None):
  """sweep.run for `config`: (results, examples, finished)."""
  settings = build.robustness_settings(config)
  members, mesh = build.load_members(
      config, [workdir] + [m for m in settings.members if m])

  def open_other(other):
    return build.open_dataset(config, workdir, name=other.name,
                              version=other.version,
                              root=other.root or config.data.root)

  return sweep.run(
      settings, workdir, members=members, mesh=mesh,
      ds=build.open_dataset(config, workdir),
      inp=build.eval_input(config, settings.batch_size),
      min_defect_area=config.eval.min_defect_area, open_other=open_other,
      log=log or logging.info)


def robustness(config: ml_collections.ConfigDict,
               workdir: str) -> tuple[Path, dict[str, Any]]:
  """`--mode=robustness`: the sweep and its report (robustness/)."""
  return robustness_report.run(lambda: robustness_sweep(config, workdir),
                               workdir)


def export(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=export`: verified SavedModel in TF Serving layout (export/;
  the only mode that imports TensorFlow)."""
  from export import run  # pylint: disable=import-outside-toplevel
  task = build.task(config)
  if task == "segmentation" and build.size_policy(config) != "pad":
    raise ValueError(
        f"data.size_policy={build.size_policy(config)!r}: this model was "
        "evaluated on resized or cropped images, but the served model edge-"
        "pads whole images, so it would not make the evaluated decisions; "
        "train and evaluate with data.size_policy='pad' (or '').")
  settings = run.ExportSettings(**{**build.to_dict(config.export),
                                   "buckets": build.canvases(config)})
  evaluation = build.eval_settings(config)
  rule = (decision.load_rule(workdir)  # Refuses: no rule calibrated yet.
          if evaluation.calibrated and task == "segmentation" else None)
  exported = run.run(
      workdir, build.restore(config, workdir, settings.checkpoint), settings,
      run.ModelInput(task=task, scale=float(config.data.scale),
                     image_size=build.image_size(config),
                     data_name=config.data.name, decision=rule,
                     flip_tta=evaluation.flip_tta),
      config_sha256=build.config_digest(config),
      reference_examples=build.served_examples(config, workdir, "val"),
      false_alarm_budget=(evaluation.max_false_alarm if rule else None))
  if jax.process_index() == 0:  # The card of the new version.
    base = Path(settings.model_base_path or Path(workdir) / "serving")
    exported["model_card"] = str(card_mode.write(
        config, workdir, base, exported["model_name"], exported["version"]))
  return exported


def render(config: ml_collections.ConfigDict, workdir: str, target: str,
           config_file: str, overrides: dict, sweep: bool) -> dict:
  """`--mode=render`: Kubernetes manifests for `target` (infra/; text
  only: neither JAX devices nor TensorFlow are used)."""
  from infra import render as render_lib  # pylint: disable=import-outside-toplevel
  from infra import targets  # pylint: disable=import-outside-toplevel
  experiment = render_lib.Experiment(
      config_file=config_file, overrides=dict(overrides),
      data_name=config.data.name, model_name=config.export.model_name,
      model_base_path=config.export.model_base_path,
      sweep_storage=config.sweep.storage,
      sweep_workers=int(config.sweep.parallel))
  return render_lib.run(targets.Deploy(**build.to_dict(config.deploy)),
                        experiment, workdir, target, sweep)
