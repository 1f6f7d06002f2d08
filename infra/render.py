"""`--mode=render --target=gke-gpu|gke-tpu|cpu`: manifests from the config.

  python main.py --config=experiments/magnetic_tile.py --workdir=DIR \
      --mode=render --target=gke-gpu [--config.deploy.hosts=2 ...]

writes DIR/render/<target>/:
  base.yaml      Namespace, training and serving service accounts
  ingest.yaml    JobSet: --mode=ingest (CPU)
  train.yaml     JobSet: --mode=train on deploy.hosts pods (sweep: one
                 JobSet per member x replicate of the experiment's
                 get_sweep(); with sweep.storage a PostgreSQL URL, instead
                 sweep.parallel JobSets of --mode=sweep workers sharing that
                 study, so every trial's pod is given the URL)
  evaluate.yaml  JobSet: --mode=eval,robustness (one pod)
  export.yaml    JobSet: --mode=export in the publishing image (CPU)
  gate.yaml      JobSet: --mode=gate (CPU): the exported model against the
                 stable version; fails unless blessed (the verdict goes to
                 the ledger beside the models, which promotion reads)
  serving.yaml   TF Serving (only when the export's server files exist under
                 export.model_base_path; the pipeline renders it after export)
  monitoring.yaml  with serving.yaml: the drift monitor's Deployment and
                 Service and its alerts as a PrometheusRule (monitoring.py)

The config stays the single source: every pod runs the same
`--config=<file>[:variant]` with the same `--config.x=y` overrides given to
the renderer (deploy.* excepted), plus the cluster paths of data and workdir.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from export import server_flags
from infra import manifests, monitoring
from infra import targets as targets_lib

from chameleon_jax import atomic, configfile
from chameleon_jax.sweeps import space as space_lib

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGE = "chameleon-train"
PUBLISH_IMAGE = "chameleon-publish"
# Local paths given to the renderer; the pods get the shared volume's.
CLUSTER_PATHS = ("data.root", "export.model_base_path")


def config_args(config_file: str, overrides: dict) -> tuple[str, ...]:
  """--config=<repo-relative file[:variant]> and its overrides as flags."""
  path, _, variant = config_file.partition(":")
  resolved = Path(path).resolve()
  try:
    relative = resolved.relative_to(REPO)
  except ValueError:
    raise ValueError(f"--config={config_file}: the file must be inside the "
                     f"repository ({REPO}), which the image copies.") from None
  # Cluster settings and paths are the renderer's to set, not forwarded.
  forwarded = {k: v for k, v in overrides.items()
               if not k.startswith("deploy.") and k not in CLUSTER_PATHS}
  return (f"--config={relative}" + (f":{variant}" if variant else ""),
          *config_args_of(forwarded))


def _flag_value(value) -> str:
  return value if isinstance(value, str) else repr(value)


def load_sweep(config_file: str) -> list[dict]:
  """The experiment module's get_sweep() as override dicts: every grid
  member x replicate (chameleon_jax/sweeps/space.py; a plain list of
  dicts too).

  Raises:
    ValueError: no get_sweep(), a member that sets deploy.*, or sampled
      ranges (they need one shared study: sweep.storage, `workers`).
  """
  path = config_file.partition(":")[0]
  module = configfile.module(path)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep(); a sweep needs a Space "
                     "or a list of override dicts, e.g. [{'seed': 0}].")
  space = space_lib.from_experiment(module.get_sweep())
  if space.sampled:
    raise ValueError(
        f"{path}: get_sweep() samples {sorted(space.ranges)}; sampled trials "
        "need one shared study: set sweep.storage to a PostgreSQL URL and "
        "render sweep workers.")
  sweep = [{**member, **replicate} for member in space.grid
           for replicate in space.replicates]
  for member in sweep:
    bad = [k for k in member if k.startswith("deploy.")]
    if bad:
      raise ValueError(f"get_sweep() member {member} sets {bad}: members "
                       "share one cluster template.")
  return sweep


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What the manifests need to know of the experiment beyond `deploy`.

  Attributes:
    config_file: the `--config` given (path[:variant]), forwarded to pods.
    overrides: the `--config.x=y` overrides given, as {key: value}.
    data_name: the dataset's name (default names of jobs and models).
    model_name: the served model's name ("" = data_name).
    model_base_path: where exports were published ("" = <workdir>/serving).
    sweep_storage: the sweep's study database (sweep.storage).
    sweep_workers: sweep worker JobSets (sweep.parallel).
  """
  config_file: str
  overrides: dict
  data_name: str
  model_name: str
  model_base_path: str
  sweep_storage: str = ""
  sweep_workers: int = 1


def steps(deploy: targets_lib.Deploy, data_name: str,
          target: targets_lib.Target, args: tuple[str, ...],
          sweep: list[dict] | None = None,
          workers: int = 0) -> dict[str, list[manifests.Step]]:
  """The JobSet steps (ingest, train (one per sweep member, or `workers`
  sweep workers on one shared study), evaluate, export, gate) of the
  pipeline on `target`."""
  base = targets_lib.dns_label(deploy.name or data_name, "deploy.name")
  registry = deploy.registry.rstrip("/")
  train_image = f"{registry}/{TRAIN_IMAGE}:{deploy.image_tag}"
  publish_image = f"{registry}/{PUBLISH_IMAGE}:{deploy.image_tag}"
  shared = manifests.SHARED
  common = (*args, f"--config.data.root={shared}/data")
  models = f"--config.export.model_base_path={shared}/models"
  workdir = f"{shared}/workdirs/{base}"
  hosts = targets_lib.training_hosts(target, deploy)
  train_place = targets_lib.training_placement(target, deploy)
  cpu_place = targets_lib.cpu_placement(deploy.cpu, deploy.memory_gi)
  # Evaluation runs in one process: one GPU host, or CPU (a lone host of
  # a multi-host TPU slice cannot start its TPUs).
  eval_place = train_place if target.device == "gpu" else cpu_place
  step = manifests.Step
  if workers:  # --mode=sweep workers sharing the study (sweep.storage).
    train = [step(f"{base}-sweep-{i:02d}", ("sweep",),
                  (*common, "--config.sweep.parallel=1"), f"{workdir}-sweep",
                  1, train_place, train_image) for i in range(workers)]
  elif sweep:
    train = [step(f"{base}-{i:02d}-train", ("train",),
                  (*common, *config_args_of(member)),
                  f"{workdir}-{i:02d}", hosts, train_place, train_image)
             for i, member in enumerate(sweep)]
  else:
    train = [step(f"{base}-train", ("train",), common, workdir, hosts,
                  train_place, train_image)]
  return {
      "ingest": [step(f"{base}-ingest", ("ingest",), common,
                      f"{shared}/workdirs/{base}-ingest", 1, cpu_place,
                      train_image)],
      "train": train,
      "evaluate": [step(f"{base}-evaluate", ("eval", "robustness"), common,
                        workdir, 1, eval_place, train_image)],
      "export": [step(f"{base}-export", ("export",), (*common, models),
                      workdir, 1, cpu_place, publish_image)],
      "gate": [step(f"{base}-gate", ("gate",), (*common, models), workdir, 1,
                    cpu_place, train_image, max_restarts=0)],
  }


def config_args_of(member: dict) -> tuple[str, ...]:
  """{key: value} overrides as --config.key=value flags."""
  return tuple(f"--config.{k}={_flag_value(v)}" for k, v in member.items())


def read_server_files(model_base_path: Path) -> dict[str, str] | None:
  """The export's server files, or None when nothing was exported there."""
  paths = [model_base_path / f for f in server_flags.SERVER_FILES]
  if not all(p.is_file() for p in paths):
    return None
  return {p.name: p.read_text() for p in paths}


def check_exports(model_base_path: Path, model_name: str,
                  serving_version: str) -> list[int]:
  """Versions of `model_name`; each must be readable by the serving image."""
  model_dir = model_base_path / model_name
  found = sorted(int(p.name) for p in model_dir.iterdir()
                 if p.name.isdigit()) if model_dir.is_dir() else []
  if not found:
    raise ValueError(f"No exported version of {model_name!r} under "
                     f"{model_dir}; run --mode=export first.")
  limit = manifests.SERVING_READS_XLA_CALL_MODULE.get(serving_version)
  for version in found:
    meta_path = model_dir / str(version) / "assets.extra" / "export_metadata.json"
    meta = json.loads(meta_path.read_text())
    written = meta.get("xla_call_module_version")
    if limit is not None and written is not None and written > limit:
      raise ValueError(
          f"{meta_path}: XlaCallModule version {written}, but TF Serving "
          f"{serving_version} reads up to {limit}; pin a newer "
          "deploy.serving_version.")
  return found


def run(deploy: targets_lib.Deploy, experiment: Experiment, workdir: str,
        target_name: str, sweep: bool = False) -> dict:
  """Writes the manifests under <workdir>/render/<target>/; returns
  {file: [kind/name, ...]}.

  Raises:
    ValueError: an unknown target, a config file outside the repository,
      deploy settings the target cannot run (names, hosts, topology), or
      exports the serving image cannot read.
  """
  target = targets_lib.get(target_name)
  shared_study = sweep and experiment.sweep_storage.startswith("postgresql")
  args = config_args(experiment.config_file, {
      k: v for k, v in experiment.overrides.items()
      if not (shared_study and k == "sweep.parallel")})
  members = load_sweep(experiment.config_file) if sweep and not shared_study \
      else None
  workers = experiment.sweep_workers if shared_study else 0
  out = Path(workdir) / "render" / target.name
  out.mkdir(parents=True, exist_ok=True)
  sa = deploy.train_service_account
  files = {"base": manifests.base(target, deploy)}
  for name, group in steps(deploy, experiment.data_name, target, args,
                           members, workers).items():
    files[name] = [manifests.jobset(s, target, deploy, sa) for s in group]
  model_name = experiment.model_name or experiment.data_name
  model_base = Path(experiment.model_base_path or Path(workdir) / "serving")
  server_files = read_server_files(model_base)
  if server_files is not None:
    check_exports(model_base, model_name, deploy.serving_version)
    name = targets_lib.dns_label(
        f"{deploy.name or experiment.data_name}-serving", "deploy.name")
    files["serving"] = manifests.serving(name, model_name, target, deploy,
                                         server_files)
    files["monitoring"] = monitoring.objects(
        name, model_name, target, deploy,
        f"{deploy.registry.rstrip('/')}/{TRAIN_IMAGE}:{deploy.image_tag}")
  else:
    for stale in ("serving", "monitoring"):
      (out / f"{stale}.yaml").unlink(missing_ok=True)
  written = {}
  for name, objects in files.items():
    path = out / f"{name}.yaml"
    atomic.write_text(path, yaml.safe_dump_all(
        objects, sort_keys=False, width=100, explicit_start=True))
    written[str(path)] = [f"{o['kind']}/{o['metadata']['name']}"
                          for o in objects]
  if server_files is None:
    written["serving"] = (f"not rendered: no export under {model_base} "
                          "(run --mode=export first)")
  return written
