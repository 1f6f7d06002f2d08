"""Deterministic splits: stratified, group-aware, optionally k-fold.

The unit of assignment is a group of items that must stay together (the same
part or patient, duplicates of one image); a lone item is its own group. Each
group has a stratum (image class, mask empty or not: the rarest stratum among
its members), and within a stratum groups are dealt, in an order fixed by the
seed and their content hashes, to the split furthest below its target item
count. Singleton groups therefore reproduce the fractions exactly (up to
rounding); large groups make them approximate, never broken.

k-fold: `kfold_fractions` turns {"train", "val", "test"} fractions into a
held-out "test" plus k equal folds "fold0".."fold{k-1}"; a dataset opened with
fold=i reads fold i as "val" and the other folds as "train".

A dataset's own split (`own_split`, `split_keeping`): items whose ids name
their split (e.g. "test/0042" from a test folder) stay in it, with every item
of their group; the others are dealt over the splits the dataset does not
provide.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from typing import Mapping, Sequence


def _check(fractions: Mapping[str, float]) -> None:
  total = sum(fractions.values())
  if abs(total - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
    raise ValueError(f"Split fractions {dict(fractions)} must be >= 0 and sum "
                     "to 1.")


def _targets(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
  """Rounded item counts per split; the first split takes the remainder."""
  names = list(fractions)
  counts = {name: int(round(n * fractions[name])) for name in names[1:]}
  counts[names[0]] = n - sum(counts.values())
  while counts[names[0]] < 0:  # Rounding overshoot on tiny strata.
    largest = max(names[1:], key=counts.get)
    counts[largest] -= 1
    counts[names[0]] += 1
  return counts


def stratified_split(
    items: Sequence[tuple[str, tuple, str]],
    fractions: Mapping[str, float],
    seed: int,
    groups: Sequence[str] | None = None,
) -> dict[str, str]:
  """Assigns every item to a split.

  Args:
    items: (item_id, stratum, content_hash) triples; a stratum is any hashable
      key, e.g. (image class, mask is empty).
    fractions: split name -> fraction; they must sum to 1. The first split
      receives the rounding remainder of every stratum.
    seed: changes the assignment; the same seed and items give the same split
      whatever their input order.
    groups: per item, the key of the group it belongs to (items with equal
      keys land in one split); None: every item alone.

  Returns:
    item_id -> split name.
  """
  _check(fractions)
  names = list(fractions)
  keys = list(groups) if groups is not None else [i for i, _, _ in items]
  frequency = Counter(stratum for _, stratum, _ in items)
  members: dict[str, list[int]] = defaultdict(list)
  for index, key in enumerate(keys):
    members[key].append(index)
  strata: dict[tuple, list[tuple[str, list[int]]]] = defaultdict(list)
  for key, indices in members.items():
    stratum = min((items[i][1] for i in indices),
                  key=lambda s: (frequency[s], repr(s)))
    order = hashlib.sha256(
        f"{seed}:{sorted(items[i][2] + items[i][0] for i in indices)}".encode()
    ).hexdigest()
    strata[stratum].append((order, indices))
  assignment: dict[str, str] = {}
  for stratum in sorted(strata, key=repr):
    units = sorted(strata[stratum])
    target = _targets(sum(len(u) for _, u in units), fractions)
    filled = dict.fromkeys(names, 0)
    # Largest groups first (they are hardest to place), then the seeded order.
    for _, indices in sorted(units, key=lambda u: -len(u[1])):
      name = max(names, key=lambda s: (target[s] - filled[s],
                                       -names.index(s)))
      filled[name] += len(indices)
      for i in indices:
        assignment[items[i][0]] = name
  return assignment


def kfold_fractions(fractions: Mapping[str, float],
                    folds: int) -> dict[str, float]:
  """{"train", "val", "test"} -> {"fold0", ..., "test"} for k-fold ingest."""
  _check(fractions)
  if folds < 2:
    raise ValueError(f"folds={folds}; k-fold needs at least 2 folds.")
  test = float(fractions.get("test", 0.0))
  out = {f"fold{k}": (1.0 - test) / folds for k in range(folds)}
  if test:
    out["test"] = test
  return out


def fold_members(split: str, fold: int, folds: int) -> list[str]:
  """The stored splits that make up `split` when fold `fold` is validation."""
  if not 0 <= fold < folds:
    raise ValueError(f"fold={fold} is outside 0..{folds - 1}.")
  if split == "val":
    return [f"fold{fold}"]
  if split == "train":
    return [f"fold{k}" for k in range(folds) if k != fold]
  return [split]


# A dataset's own split names -> ours.
OWN_NAMES = {"train": "train", "training": "train", "trainval": "train",
             "val": "val", "valid": "val", "validation": "val",
             "test": "test", "testing": "test"}
PRIORITY = ("test", "val")  # A group named in both stays in the first.


def own_split(item_id: str, pattern: str) -> str | None:
  """The split the dataset itself gives `item_id`: the regex `pattern`'s
  group 1 (or its whole match) searched in the id, by OWN_NAMES; None where
  it does not match.

  Example: own_split("testing/img_07", r"^(\\w+)/") -> "test".

  Raises:
    ValueError: the matched name is none of OWN_NAMES.
  """
  match = re.search(pattern, item_id)
  if not match:
    return None
  name = (match.group(1) if match.groups() else match.group(0)).lower()
  if name not in OWN_NAMES:
    raise ValueError(f"data.split_pattern {pattern!r} finds {name!r} in item "
                     f"{item_id!r}; expected one of {sorted(OWN_NAMES)}.")
  return OWN_NAMES[name]


def split_keeping(
    items: Sequence[tuple[str, tuple, str]],
    fractions: Mapping[str, float],
    seed: int,
    own: Sequence[str | None],
    groups: Sequence[str] | None = None,
) -> dict[str, str]:
  """`stratified_split`, keeping the dataset's own split: a group with an
  item the dataset puts in "test" (else "val") goes there whole; every other
  group (own "train", or unnamed) is dealt over the splits of `fractions`
  the dataset does not provide, in their proportions.

  Args:
    items, fractions, seed, groups: as for `stratified_split`.
    own: per item, the dataset's split ("train", "val", "test") or None.

  Raises:
    ValueError: the dataset names "val" items and `fractions` has no "val"
      (k-fold), or it provides every split, leaving none for its train items.
  """
  _check(fractions)
  keys = list(groups) if groups is not None else [i for i, _, _ in items]
  fixed: dict[str, str] = {}
  for key, name in zip(keys, own):
    if name in PRIORITY and (key not in fixed or PRIORITY.index(name)
                             < PRIORITY.index(fixed[key])):
      fixed[key] = name
  provided = set(fixed.values())
  if "val" in provided and "val" not in fractions:
    raise ValueError(f"the dataset names validation items, but the splits "
                     f"are {sorted(fractions)} (k-fold folds train and val "
                     "together); drop data.folds or the val folder.")
  rest = {s: f for s, f in fractions.items() if s not in provided}
  total = sum(rest.values())
  pool = [i for i, key in enumerate(keys) if key not in fixed]
  assignment = {items[i][0]: fixed[keys[i]] for i in range(len(items))
                if keys[i] in fixed}
  if pool and total <= 0:
    raise ValueError(f"the dataset provides the splits {sorted(provided)}; "
                     f"none of {dict(fractions)} is left for its other "
                     f"{len(pool)} items.")
  if pool:
    assignment.update(stratified_split(
        [items[i] for i in pool], {s: f / total for s, f in rest.items()},
        seed, groups=[keys[i] for i in pool]))
  return assignment
