"""--mode=plan: the dataset's fingerprint, this machine and the budget ->
<workdir>/plan/ (config.py, plan.md, plan.json, machine.json).

The base config (`--config`) names the data; its other values are what the
plan replaces, except the keys given as `--config.key=value` overrides,
which the plan keeps and records as the user's choices. Returns the planned
config, loaded from the written config.py, for the modes that follow
(`--mode=ingest,plan,train,eval`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from chameleon_jax import atomic, configfile
from chameleon_jax.components import build
from chameleon_jax.planning import machine as machine_lib
from chameleon_jax.planning import planner, schedule
from chameleon_jax.planning.facts import facts_from

FILES = ("config.py", "plan.md", "plan.json", "machine.json")


def budget_minutes(base: dict[str, Any], fixed: dict[str, Any]) -> float:
  """The user's `train.time_budget_minutes`, else the base config's when
  > 0, else the planner's default."""
  value = fixed.get("train.time_budget_minutes",
                    base.get("train.time_budget_minutes", 0.0))
  return float(value) if value and value > 0 else schedule.DEFAULT_BUDGET_MINUTES


def plan(config: ml_collections.ConfigDict, workdir: str,
         overrides: dict[str, Any], log=print) -> ml_collections.ConfigDict:
  """Plans for the dataset `config.data` names (ingested before) and
  returns the planned config (module docstring).

  Args:
    config: the base config (with the overrides already applied).
    workdir: where plan/ is written.
    overrides: the `--config.key=value` overrides, by dotted key.
    log: progress lines.

  Raises:
    PlanError: a dataset no plan can serve (the fingerprint field named).
    FileNotFoundError: no ingested dataset, or a missing machine profile.
  """
  ds = build.open_dataset(config, workdir)
  split_items = {s: ds.items(s) for s in ("train", "val", "test")
                 if s in ds.split_names()}
  facts = facts_from(ds.read_json("fingerprint.json"), split_items)
  profile_path = config.plan.machine_profile
  machine = (machine_lib.MachineProfile.load(profile_path) if profile_path
             else machine_lib.measure(log))
  base = configfile.flatten(config.to_dict())
  fixed = {k: v for k, v in overrides.items() if not k.startswith("plan.")}
  result = planner.make_plan(facts, machine, budget_minutes(base, fixed),
                             base, fixed)
  header = {"dataset": {"name": config.data.name, "version": ds.path.name,
                        "hash": ds.dataset_hash},
            "machine": machine.__dict__}
  out = Path(workdir) / "plan"
  out.mkdir(parents=True, exist_ok=True)
  texts = {
      "config.py": planner.config_file(
          result, header, configfile.template_values()),
      "plan.md": planner.plan_markdown(result, header),
      "plan.json": planner.plan_json(result, header),
      "machine.json": machine.to_json()}
  for name in FILES:
    atomic.write_text(out / name, texts[name])
  log(f"plan: {len(result.choices)} keys set, {len(fixed)} kept as the "
      f"user's; {out / 'plan.md'}")
  planned = configfile.load(out / "config.py")
  planned.lock()
  return planned
