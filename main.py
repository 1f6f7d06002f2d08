"""chameleon_jax entry point.

  python main.py --config=experiments/quickstart.py --workdir=DIR \
      --mode=ingest,train,eval [--config.train.steps=100 ...]

A new dataset, planned from its fingerprint (plan: <workdir>/plan/config.py
and plan.md, the reason for every value; the modes after it use that config):

  python main.py --config=configs/segmentation.py --workdir=DIR \
      --config.data.source=image_mask_folders \
      --config.data.source_kwargs.root=/data/parts --mode=ingest,plan,train,eval

Modes (comma-separated, run in order): ingest, plan (a config from the
dataset's fingerprint, below), sweep (the experiment's get_sweep() as
processes here, resumable: <workdir>/sweep/leaderboard.md), train, eval, predict,
robustness (corruptions, attacks, ensembles -> <workdir>/robustness/report.html),
export (verified jax2tf SavedModel published in TF Serving layout under
export.model_base_path, with its model card; the only mode that imports
TensorFlow), gate (the evaluated model against the champion; exit status 1
unless blessed), promote (stable -> the version exported from the blessed
checkpoint, if its card is signed), card (rebuild the cards of the versions
exported from this workdir, e.g. after editing card.human's YAML), label
(a local page on 127.0.0.1:label.port to draw and correct masks of
data.source_kwargs.root, pre-labelled by the workdir's model; serves until
Ctrl+C; chameleon_jax/labelling/), render
(Kubernetes manifests for --target=gke-gpu|gke-tpu|cpu under
<workdir>/render/; infra/README.md).

  python main.py --mode=zoo [--zoo_size=224 --zoo_channels=3 --zoo_classes=1000
      --zoo_filter='fpn/*']

lists every model x encoder with parameters and FLOPs (needs no config).
"""

import errno
import logging
import math
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from chameleon_jax import components, sharding
from chameleon_jax.components import card as card_mode
from chameleon_jax.components import gate as gate_mode
from chameleon_jax.components import label as label_mode
from chameleon_jax.components import modes
from chameleon_jax.components import plan as plan_mode
from chameleon_jax.components import sweep as sweep_mode
from chameleon_jax.governance.gate import GateError
from chameleon_jax.governance.ledger import LedgerError
from chameleon_jax.planning.facts import PlanError
from chameleon_jax.sweeps.runner import SweepError
from chameleon_jax.data.dataset import BadInputError
from chameleon_jax.model_io.checkpoint import CheckpointError, ModelMismatchError
from chameleon_jax.train.loop import NonFiniteLossError

# Errors about the data, the run or the workdir, whose messages name the
# file, value or step and the fix: printed as one line, without a traceback.
USER_ERRORS = (NonFiniteLossError, CheckpointError, ModelMismatchError,
               BadInputError)

MODES = ("ingest", "plan", "sweep", "train", "eval", "predict", "robustness",
         "export", "gate", "promote", "card", "label", "render", "zoo")

# Why a figure is NaN, by the end of its name.
UNDEFINED = {"false_alarm_rate": "no defect-free image",
             "defect_image_dice": "no defect image",
             "defect_image_dice_std": "no defect image",
             "defect_recall": "no defect image"}

config_flags.DEFINE_config_file("config", None, "Experiment config file "
                                "(path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, outputs.")
flags.DEFINE_list("mode", ["train"], f"Stages to run, in order: {MODES}.")
flags.DEFINE_integer("zoo_size", 224, "--mode=zoo: square input size.")
flags.DEFINE_integer("zoo_channels", 3, "--mode=zoo: input channels.")
flags.DEFINE_integer("zoo_classes", 1000, "--mode=zoo: output classes.")
flags.DEFINE_string("zoo_filter", "*", "--mode=zoo: glob on model/encoder.")
flags.DEFINE_enum("target", "gke-gpu", ["gke-gpu", "gke-tpu", "cpu"],
                  "--mode=render: the cluster the manifests are for.")
flags.DEFINE_bool("sweep", False, "--mode=render: one training JobSet per "
                  "member of the experiment file's get_sweep().")
FLAGS = flags.FLAGS


def main(argv):
  """Runs the --mode stages in order (module docstring). A full disk ends
  the run with one line that names the file, not a traceback."""
  try:
    _stages(argv)
  except USER_ERRORS as e:  # Their messages say what to do: no traceback.
    sys.exit(f"--mode={','.join(FLAGS.mode)} stopped: {type(e).__name__}: "
             f"{e}")
  except Exception as e:  # pylint: disable=broad-except
    full = no_space(e)
    if full is None:
      raise
    sys.exit(f"--mode={','.join(FLAGS.mode)} stopped: no space left on "
             f"device ({full}). Nothing half-written was put in place; free "
             "space there and rerun: training resumes from its last "
             "checkpoint, ingest starts the version again.")


def no_space(error: BaseException) -> BaseException | None:
  """The error in `error`'s chain that says the disk is full (ENOSPC, or a
  library's error whose text says so), else None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or \
        "No space left on device" in str(error):
      return error
    error = error.__cause__ or error.__context__
  return None


def _stages(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = [m for m in FLAGS.mode if m not in MODES]
  if unknown:
    raise app.UsageError(f"Unknown --mode {unknown}; expected {MODES}.")
  if FLAGS.mode == ["zoo"]:
    from chameleon_jax.models import listing
    print(listing.table(FLAGS.zoo_size, FLAGS.zoo_channels, FLAGS.zoo_classes,
                        FLAGS.zoo_filter))
    return
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required (except for "
                         "--mode=zoo alone).")
  logging.getLogger().setLevel(logging.INFO)
  config, workdir = FLAGS.config, FLAGS.workdir
  if FLAGS.mode == ["render"]:  # Text only: no gin, no JAX devices.
    _report("render", modes.render(
        config, workdir, FLAGS.target,
        config_flags.get_config_filename(FLAGS["config"]),
        config_flags.get_override_values(FLAGS["config"]), FLAGS.sweep))
    return
  components.parse_gin(config)
  dist = config.distributed
  sharding.initialize_distributed(
      dist.coordinator_address or None, dist.num_processes or None,
      None if dist.process_id < 0 else dist.process_id)

  if components.task(config) == "classification" and (
      {"predict", "robustness"} & set(FLAGS.mode)):
    raise app.UsageError("--mode=predict and --mode=robustness support "
                         "task=segmentation only (so far).")
  for mode in FLAGS.mode:
    if mode == "ingest":
      ds = components.ingest(config, workdir, log=logging.info)
      _report("ingest", {"dataset": str(ds.path),
                         "quarantined": ds.manifest["num_quarantined"],
                         "report": str(ds.path / "report.md"),
                         **{s: v["count"] for s, v in ds.manifest["splits"].items()}})
    elif mode == "plan":
      try:
        config = plan_mode.plan(
            config, workdir, config_flags.get_override_values(FLAGS["config"]),
            log=logging.info)
      except PlanError as e:
        sys.exit(f"--mode=plan: {e}")
      _report("plan", {"config": f"{workdir}/plan/config.py",
                       "reasons": f"{workdir}/plan/plan.md"})
    elif mode == "sweep":
      try:
        board = sweep_mode.sweep(
            config, workdir, config_flags.get_config_filename(FLAGS["config"]),
            main_path=os.path.abspath(__file__), log=logging.info)
      except SweepError as e:
        sys.exit(f"--mode=sweep: {e}")
      _report("sweep", {"winner": board["winner"],
                        "verdict": board["comparison"]["text"]},
              outputs=f"{workdir}/sweep/leaderboard.md")
    elif mode == "train":
      _report("train, final validation: "
              f"{modes.figure_names(config, 'validation')}",
              modes.train(config, workdir))
    elif mode == "eval":
      _report(f"eval on {config.eval.split}: "
              f"{modes.figure_names(config, 'eval')}",
              modes.evaluate(config, workdir), outputs=f"{workdir}/eval/")
    elif mode == "predict":
      _report("predict", {}, outputs=str(modes.predict(config, workdir)))
    elif mode == "export":  # The only mode that imports TensorFlow.
      _report("export", modes.export(config, workdir))
    elif mode == "gate":
      try:
        verdict = gate_mode.gate(config, workdir)
      except (GateError, LedgerError) as e:
        sys.exit(f"--mode=gate: not blessed: {e}")
      _report("gate", {"blessed": verdict["blessed"],
                       **{f"reason {i + 1}": r
                          for i, r in enumerate(verdict["reasons"])},
                       **{f"warning {i + 1}": w
                          for i, w in enumerate(verdict["warnings"])}},
              outputs=f"{workdir}/eval/gate.json")
      if not verdict["blessed"]:
        sys.exit(1)
    elif mode == "promote":
      try:
        _report("promote", gate_mode.promote(config, workdir))
      except (GateError, LedgerError, ValueError) as e:
        sys.exit(f"--mode=promote: {e}")
    elif mode == "card":
      try:
        _report("card", card_mode.card(config, workdir))
      except (GateError, LedgerError, ValueError) as e:
        sys.exit(f"--mode=card: {e}")
    elif mode == "label":  # Serves until interrupted (Ctrl+C).
      try:
        label_mode.label(config, workdir, log=logging.info)
      except (ValueError, FileNotFoundError) as e:
        sys.exit(f"--mode=label: {e}")
    elif mode in ("zoo", "render"):
      raise app.UsageError(f"--mode={mode} runs alone.")
    elif mode == "robustness":
      page, headline = modes.robustness(config, workdir)
      _report(f"robustness: {modes.figure_names(config, 'robustness')}",
              headline, outputs=str(page))


def _report(stage: str, metrics: dict, outputs: str | None = None) -> None:
  import jax
  if jax.process_index() != 0:
    return
  print(f"== {stage} ==", file=sys.stdout)
  for key, value in metrics.items():
    if isinstance(value, float) and math.isnan(value):
      # An undefined figure (metrics/segmentation.py) is said to be one.
      why = next((w for suffix, w in UNDEFINED.items()
                  if key.endswith(suffix)), "undefined")
      print(f"  {key}: not measurable ({why})", file=sys.stdout)
    elif isinstance(value, float) and key.startswith("num_") and \
        value.is_integer():  # A count, whatever its type.
      print(f"  {key}: {int(value)}", file=sys.stdout)
    else:
      print(f"  {key}: {value:.4f}" if isinstance(value, float)
            else f"  {key}: {value}", file=sys.stdout)
  if outputs:
    print(f"  outputs: {outputs}", file=sys.stdout)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
