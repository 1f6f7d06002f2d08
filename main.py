"""chameleon_jax entry point.

  python main.py --config=experiments/quickstart.py --workdir=DIR \
      --mode=ingest,train,eval [--config.train.steps=100 ...]

Modes (comma-separated, run in order): ingest, train, eval, predict,
robustness (corruptions, attacks, ensembles -> <workdir>/robustness/report.html).
"""

import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from chameleon_jax import components
from chameleon_jax.train import sharding

MODES = ("ingest", "train", "eval", "predict", "robustness")

config_flags.DEFINE_config_file("config", None, "Experiment config file "
                                "(path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, outputs.")
flags.DEFINE_list("mode", ["train"], f"Stages to run, in order: {MODES}.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = [m for m in FLAGS.mode if m not in MODES]
  if unknown:
    raise app.UsageError(f"Unknown --mode {unknown}; expected {MODES}.")
  logging.getLogger().setLevel(logging.INFO)
  config, workdir = FLAGS.config, FLAGS.workdir
  components.parse_gin(config)
  dist = config.distributed
  sharding.initialize_distributed(
      dist.coordinator_address or None, dist.num_processes or None,
      None if dist.process_id < 0 else dist.process_id)

  for mode in FLAGS.mode:
    if mode == "ingest":
      ds = components.ingest(config, workdir, log=logging.info)
      _report("ingest", {"dataset": str(ds.path),
                         "quarantined": ds.manifest["num_quarantined"],
                         **{s: v["count"] for s, v in ds.manifest["splits"].items()}})
    elif mode == "train":
      from chameleon_jax.train import loop
      _report("train (final validation)", loop.train(config, workdir))
    elif mode == "eval":
      from chameleon_jax.evaluation import report
      metrics = report.run_eval(config, workdir)
      _report(f"eval on {config.eval.split}", metrics,
              outputs=f"{workdir}/eval/")
    elif mode == "predict":
      from chameleon_jax.evaluation import inference
      _report("predict", {}, outputs=str(inference.predict_folder(config,
                                                                  workdir)))
    elif mode == "robustness":
      from chameleon_jax.robustness import report as robustness_report
      page, headline = robustness_report.run(config, workdir)
      _report("robustness", headline, outputs=str(page))


def _report(stage: str, metrics: dict, outputs: str | None = None) -> None:
  import jax
  if jax.process_index() != 0:
    return
  print(f"== {stage} ==", file=sys.stdout)
  for key, value in metrics.items():
    print(f"  {key}: {value:.4f}" if isinstance(value, float)
          else f"  {key}: {value}", file=sys.stdout)
  if outputs:
    print(f"  outputs: {outputs}", file=sys.stdout)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
