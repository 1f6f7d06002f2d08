"""What the robustness sweep is told to do (built by the composer from the
`robustness.*` config section, where the values and reasons are written)."""

from __future__ import annotations

import dataclasses

ATTACK_GOALS = ("untargeted", "defects_to_background")


@dataclasses.dataclass(frozen=True)
class OtherData:
  """Another dataset of the same domain (generalisation); name "" = none."""
  name: str
  version: str
  root: str
  split: str


@dataclasses.dataclass(frozen=True)
class Settings:
  """The sweep (the `robustness.*` config section, documented there).

  Attributes:
    split, max_images: what is evaluated (a balanced subset of the split).
    batch_size, attack_batch_size: global batches (the latter divides the
      former).
    seed: perturbations depend on (seed, condition, image) only.
    members: other workdirs forming an ensemble with the evaluated one.
    ensemble_method: "logits", "probs" or "vote".
    corruptions, severities, corruption_scale: corruption names or groups,
      severities 1-5, parameter set ("auto", "224", "32").
    attacks, attack_kwargs, epsilons, attack_goal, attack_gradient,
      transfer_from: the attacks (ATTACKS names and options), their budgets
      in [0, 1] pixel units, goal, gradient and transfer member (-1 none).
    num_examples: images in the example grids.
    other_data: the generalisation dataset.
  """
  split: str
  max_images: int
  batch_size: int
  attack_batch_size: int
  seed: int
  members: tuple[str, ...]
  ensemble_method: str
  corruptions: tuple[str, ...]
  severities: tuple[int, ...]
  corruption_scale: str
  attacks: tuple[str, ...]
  attack_kwargs: dict
  epsilons: tuple[float, ...]
  attack_goal: str
  attack_gradient: str
  transfer_from: int
  num_examples: int
  other_data: OtherData

  def __post_init__(self):
    if isinstance(self.other_data, dict):
      object.__setattr__(self, "other_data", OtherData(**self.other_data))
    for name in ("members", "corruptions", "severities", "attacks",
                 "epsilons"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.attack_goal not in ATTACK_GOALS:
      raise ValueError(f"robustness.attack_goal={self.attack_goal!r}; "
                       f"expected one of {ATTACK_GOALS}.")
