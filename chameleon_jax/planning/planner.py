"""The experiment planner: a dataset's fingerprint -> a config, with reasons.

  plan = make_plan(facts, machine, budget_minutes, base, fixed)
  plan_json(plan, header) / plan_markdown(plan, header) / config_file(...)

The rules run in a fixed order (each may read what an earlier one chose):
task, scale, canvas, crop, sampling, loss, input normalisation, decision
rule (rules.py), model and batch (schedule.py), augmentation (it reads how
many passes fit; rules.py), schedule (schedule.py). The outputs are pure
functions of (facts, machine profile, budget, base values, fixed values),
written with sorted keys and fixed number formats, so the same inputs give
byte-identical files.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from chameleon_jax import configfile
from chameleon_jax.planning import rules, schedule
from chameleon_jax.planning.facts import Facts
from chameleon_jax.planning.machine import MachineProfile
from chameleon_jax.planning.planner_state import Choice, Planner

SCHEMA_VERSION = 1
RULES: tuple[Callable[[Planner], None], ...] = (
    rules.task, rules.scale, rules.canvas, rules.crop, rules.sampling,
    rules.loss, rules.normalisation, rules.decision,
    schedule.model_and_batch, rules.augmentation, schedule.schedule)


def make_plan(facts: Facts, machine: MachineProfile, budget_minutes: float,
              base: dict[str, Any], fixed: dict[str, Any]) -> Planner:
  """Runs every rule (module docstring) and returns the filled Planner.

  Args:
    facts: the dataset (facts.facts_from).
    machine: the machine planned for (machine.measure or .load).
    budget_minutes: the training run's wall-clock budget.
    base: the base config's values by dotted key (flatten).
    fixed: the user's `--config` overrides by dotted key; they win.

  Raises:
    PlanError: a dataset or machine no plan serves (the field named).
  """
  planner = Planner(facts, machine, budget_minutes, base, fixed)
  for rule in RULES:
    rule(planner)
  return planner


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def _choice_json(choice: Choice) -> dict:
  entry = {"key": choice.key, "value": _jsonable(choice.value),
           "rule": choice.rule, "evidence": choice.evidence,
           "replaced": _jsonable(choice.replaced), "by": choice.by}
  if choice.by == "user":
    entry["planned"] = _jsonable(choice.planned)
  return entry


def plan_json(plan: Planner, header: dict) -> str:
  """plan.json: the header (dataset, machine, budget), every choice, notes,
  the user's overrides."""
  payload = {
      "schema_version": SCHEMA_VERSION, **_jsonable(header),
      "budget_minutes": plan.budget_minutes,
      "choices": [_choice_json(c) for c in plan.choices.values()],
      "notes": {k: {"text": t, "evidence": e}
                for k, (t, e) in plan.notes.items()},
      "user": _jsonable(plan.fixed),
  }
  return json.dumps(payload, indent=1, sort_keys=True) + "\n"


def _cell(value: Any) -> str:
  return repr(value).replace("|", "\\|")


def plan_markdown(plan: Planner, header: dict) -> str:
  """plan.md: a table a person reads (key, value, rule, evidence, what it
  replaced), the user's choices marked."""
  d = header["dataset"]
  lines = [
      f"# Plan for {d['name']} {d['version']}", "",
      f"Dataset hash `{d['hash']}`; machine {plan.machine.device_kind} x "
      f"{plan.machine.devices} ({plan.machine.seconds_per_gflop:g} s/GFLOP, "
      f"{plan.machine.memory_bytes / 2**30:.1f} GiB); budget "
      f"{plan.budget_minutes:g} min. Written by `python main.py --mode=plan`; "
      "the config is `config.py` beside this file.", "",
      "| key | value | by | rule | evidence | replaced |",
      "| --- | --- | --- | --- | --- | --- |"]
  for c in plan.choices.values():
    lines.append(f"| `{c.key}` | `{_cell(c.value)}` | {c.by} | {c.rule} | "
                 f"{c.evidence} | `{_cell(c.replaced)}` |")
  if plan.notes:
    lines += ["", "## Notes", ""]
    lines += [f"- **{k}**: {t} ({e})" for k, (t, e) in plan.notes.items()]
  if plan.fixed:
    lines += ["", "## The user's choices (`--config` overrides)", ""]
    lines += [f"- `{k}` = `{v!r}`" for k, v in sorted(plan.fixed.items())]
  return "\n".join(lines) + "\n"


def config_file(plan: Planner, header: dict, template: dict[str, Any]) -> str:
  """config.py: the template's `get_config()` (configfile.TEMPLATE_MODULE),
  the base config's values
  where they differ from the template (`template`, flat), then the plan's
  choices."""
  d = header["dataset"]
  inherited = configfile.differences(
      plan.base, template, skip=("plan", *plan.choices))
  return configfile.render(
      f"Planned config for dataset {d['name']} {d['version']}.\n\n"
      "Written by `python main.py --mode=plan`: why each value, plan.md "
      "beside this\nfile. An ordinary experiment file: read, edit, commit.",
      [("From the base config (its file and --config overrides):", inherited),
       ("Planned (plan.md):", {k: c.value for k, c in plan.choices.items()})])
