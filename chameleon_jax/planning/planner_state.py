"""The planner's working state: what has been chosen, why, and what is fixed.

Rules call `choose(key, value, rule, evidence)`. A key the user fixed (a
`--config.key=value` override) keeps the user's value; the plan records it
as the user's choice beside what the rule would have chosen, and later
rules read the user's value (`value(key)`), so a fixed crop size sizes the
batch that follows from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from chameleon_jax.planning.facts import Facts
from chameleon_jax.planning.machine import MachineProfile


@dataclasses.dataclass(frozen=True)
class Choice:
  """One planned config key: its value, the rule, the evidence, and what it
  replaced (the base config's value); `by` is "plan" or "user"."""
  key: str
  value: Any
  rule: str
  evidence: str
  replaced: Any = None
  by: str = "plan"
  planned: Any = None  # What the rule chose, where the user's value won.


class Planner:
  """Collects choices for one dataset, machine and budget (module doc)."""

  def __init__(self, facts: Facts, machine: MachineProfile,
               budget_minutes: float, base: dict[str, Any],
               fixed: dict[str, Any]):
    """`base`: the base config's values by dotted key (what a choice
    replaces); `fixed`: the user's overrides by dotted key."""
    self.facts = facts
    self.machine = machine
    self.budget_minutes = budget_minutes
    self.base = base
    self.fixed = fixed
    self.choices: dict[str, Choice] = {}
    self.notes: dict[str, tuple[str, str]] = {}
    self.derived: dict[str, Any] = {}

  def _fixed(self, key: str) -> tuple[bool, Any]:
    if key in self.fixed:
      return True, self.fixed[key]
    # A dict-valued key ("loss.kwargs") with fixed leaves inside it.
    leaves = {k[len(key) + 1:]: v for k, v in self.fixed.items()
              if k.startswith(key + ".")}
    return (True, leaves) if leaves else (False, None)

  def choose(self, key: str, value: Any, rule: str, evidence: str) -> None:
    """Records `key` = `value` (or the user's fixed value) with its reason."""
    fixed, user = self._fixed(key)
    replaced = self.base.get(key)
    if not fixed:
      self.choices[key] = Choice(key, value, rule, evidence, replaced)
      return
    if isinstance(value, dict) and key not in self.fixed:
      user = {**value, **user}  # The user's leaves on top of the plan's dict.
    self.choices[key] = Choice(key, user, "the user's choice (--config."
                               f"{key})", f"the rule would have chosen "
                               f"{value!r}: {rule}; {evidence}", replaced,
                               by="user", planned=value)

  def note(self, topic: str, text: str, evidence: str) -> None:
    """A fact the plan states without setting a key (e.g. the input)."""
    self.notes[topic] = (text, evidence)

  def value(self, key: str) -> Any:
    """The value chosen for `key` (the user's where fixed), else the base's."""
    if key in self.choices:
      return self.choices[key].value
    fixed, user = self._fixed(key)
    return user if fixed else self.base.get(key)
