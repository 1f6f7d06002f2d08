"""`--mode=robustness`: a trained model (or ensemble) under every perturbation.

Evaluates on `settings.split` (a balanced subset of at most
`max_images`: half with defects) the clean images, every corruption x
severity, every attack x epsilon, and optionally another dataset of the same
domain (generalisation), for every member and for the ensemble. The numbers
are the segmentation metrics of `--mode=eval` (psum-able sums from
`metrics.segmentation`); `report.py` turns them into JSON, plots and HTML.

Determinism: every perturbed image (and every random attack start) is a
function of (robustness.seed, condition name, the image's index in the split)
only, so results do not depend on batch size or device count.

Compilation: perturbations are jitted per condition (small graphs); the
models' forward pass and metric sums are one jitted function reused by every
condition; an attack is jitted once per attack and target, all epsilons in one
call (vmap).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import zlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from chameleon_jax import atomic
from chameleon_jax.data import pipeline
from chameleon_jax.data.labels import IGNORE_INDEX
from chameleon_jax.metrics.images import defect_pixels
from chameleon_jax.registry import ATTACKS
from chameleon_jax.robustness import attacks as attacks_lib
from chameleon_jax.robustness import corruptions as corruptions_lib
from chameleon_jax.robustness.ensemble import Ensemble
from chameleon_jax.robustness.subset import EvalData, load_eval_data
from chameleon_jax.robustness.settings import (  # noqa: F401  (API)
    ATTACK_GOALS, OtherData, Settings)
from chameleon_jax.metrics import segmentation as metrics_lib
from chameleon_jax import sharding
from chameleon_jax.train.reporting import ProgressBar

GROUP_ALIASES = {
    "all": None,
    "imagenet_c": corruptions_lib.CORE_GROUPS + ("extra",),
    "imagenet_c_core": corruptions_lib.CORE_GROUPS,
}


def select_corruptions(selection) -> list[str]:
  """Names and group aliases ("all", "imagenet_c", a group name) -> names."""
  out: list[str] = []
  groups = {s.group for s in corruptions_lib.specs().values()}
  for item in selection:
    if item in GROUP_ALIASES:
      found = corruptions_lib.names(GROUP_ALIASES[item])
    elif item in groups:
      found = corruptions_lib.names((item,))
    elif item in corruptions_lib.specs():
      found = [item]
    else:
      raise ValueError(
          f"robustness.corruptions: unknown {item!r}; expected a name of "
          f"{corruptions_lib.names()}, a group of {sorted(groups)} or one of "
          f"{sorted(GROUP_ALIASES)}.")
    out += [n for n in found if n not in out]
  return out


class Finished:
  """Finished conditions on disk: a killed sweep resumes where it stopped.

  `path` holds {"fingerprint", "values": {condition: result}}; values are
  reused only when the fingerprint (the robustness settings, the members'
  checkpoints, the dataset and the evaluated images) is the same. Written
  atomically after every condition; `report.run` removes it once the
  report is written.
  """

  def __init__(self, path: Path, identity: dict):
    self.path = path
    self.fingerprint = hashlib.sha256(
        json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    self.values: dict[str, Any] = {}
    if path.is_file():
      saved = json.loads(path.read_text())
      if saved.get("fingerprint") == self.fingerprint:
        self.values = saved["values"]
        logging.info("Resuming the robustness sweep: %d conditions done.",
                     len(self.values))

  def get(self, key: str) -> Any:
    return self.values.get(key)

  def put(self, key: str, value: Any) -> Any:
    self.values[key] = value
    atomic.write_text(self.path, json.dumps(
        {"fingerprint": self.fingerprint, "values": self.values},
        allow_nan=True))
    return json.loads(json.dumps(value))  # As a resumed run would see it.

  def remove(self) -> None:
    self.path.unlink(missing_ok=True)


def build_attack(rcfg: Settings, name: str):
  """(attack fn, its options) from robustness.attack_kwargs and the goal."""
  kwargs = dict(rcfg.attack_kwargs.get(name, {}))
  if rcfg.attack_goal == "defects_to_background":
    kwargs = {**kwargs, "targeted": True}
  return ATTACKS.build(name, **kwargs), kwargs


def condition_keys(seed: int, condition: str, index: jax.Array) -> jax.Array:
  """One key per image from (seed, condition, index in the split)."""
  base = jax.random.fold_in(jax.random.key(seed), zlib.crc32(condition.encode()))
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def warp_mask(mask: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
  """Nearest-neighbour mask at the sampling grid; outside -> IGNORE_INDEX."""
  h, w = mask.shape
  yi, xi = jnp.round(ys).astype(jnp.int32), jnp.round(xs).astype(jnp.int32)
  inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
  return jnp.where(inside, mask[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)],
                   IGNORE_INDEX)


def make_corrupt_fn(name: str, severity: int, scale: str, seed: int):
  """jit: (images, masks, index) -> (corrupted images, masks that followed)."""
  condition = f"{name}/{severity}"

  @jax.jit
  def corrupt(images, masks, index):
    keys = condition_keys(seed, condition, index)
    out = corruptions_lib.apply(name, severity, keys, images, scale)
    grids = corruptions_lib.warp_grids(name, severity, keys,
                                       images.shape[1:3], scale)
    if grids is not None:
      masks = jax.vmap(warp_mask)(masks, *grids)
    return out, masks

  return corrupt


class Evaluator:
  """Runs the models of an ensemble on batches; sums metrics per model."""

  def __init__(self, ensemble: Ensemble, states, mesh, class_names,
               min_defect_area: int):
    self.ensemble, self.states, self.mesh = ensemble, tuple(states), mesh
    self.class_names = class_names
    self.model_names = (["model"] if ensemble.size == 1 else
                        [f"member{i}" for i in range(ensemble.size)] +
                        ["ensemble"])

    def all_logits(states, images):
      member = ensemble.member_logits(states, images)
      if ensemble.size == 1:
        return member
      combined = ensemble.logits(states, images)
      return jnp.concatenate([member, combined[None]], 0)

    def sums(states, images, masks, weight):
      logits = all_logits(states, images)
      return jax.vmap(lambda l: metrics_lib.segmentation_sums(
          l, masks, weight, min_defect_area)[0])(logits)

    self._sums = jax.jit(sums)
    self._predict = jax.jit(lambda s, x: all_logits(s, x).argmax(-1))

  def place(self, batch: dict) -> dict:
    return sharding.shard_batch(batch, self.mesh)

  def metrics(self, data: EvalData, batch_size: int,
              transform: Callable | None = None) -> dict[str, dict]:
    """{model: metrics} over `data`, images (and masks) through `transform`."""
    total = None
    for batch in data.batches(batch_size):
      b = self.place(batch)
      images, masks = b["image"], b["mask"]
      if transform is not None:
        images, masks = transform(images, masks, b["index"])
      total = metrics_lib.add_sums(
          total, jax.device_get(self._sums(self.states, images, masks,
                                           b["weight"])))
    return self._summaries(total)

  def _summaries(self, total: dict) -> dict[str, dict]:
    return {name: metrics_lib.summarize({k: v[m] for k, v in total.items()},
                                        self.class_names)
            for m, name in enumerate(self.model_names)}

  def predictions(self, images: jax.Array) -> np.ndarray:
    """(models, B, H, W) class maps of every model for `images`."""
    return np.asarray(self._predict(self.states, images))

  def attack(self, data: EvalData, chunk: int, attack_fn, epsilons,
             goal: str, target: str, gradient: str, seed: int, name: str,
             clean: dict[str, dict]
             ) -> tuple[dict[str, list[dict]], dict[str, list[float]]]:
    """Metrics of every model on adversarial images crafted on `target`.

    Returns ({model: [metrics per eps]}, {"linf": [...], "l2": [...]} mean
    perturbation norms per eps over real images). eps = 0 is the clean
    image: its entries are `clean`, not recomputed.

    Attacks run one eps at a time on `chunk` images: XLA:CPU needs the PGD
    loop unrolled to be fast (attacks.pgd), and the unrolled loop holds the
    activations of every step (~0.26 GB per image and member for PGD-10 at
    208x320), so memory grows with chunk x members x steps.
    """
    loss_of = lambda states: self.ensemble.attack_loss(
        states, attacks_lib.segmentation_loss, target, gradient)

    @jax.jit
    def craft(states, images, masks, index, eps):
      goal_masks = (attacks_lib.defects_to_background(masks)
                    if goal == "defects_to_background" else masks)
      keys = condition_keys(seed, name, index)
      return attack_fn(loss_of(states), images, goal_masks, eps, keys)

    per_eps, count = [], int(data.weight.sum())
    norms = {"linf": [], "l2": []}
    for eps in epsilons:
      if eps == 0:
        per_eps.append(clean)
        norms["linf"].append(0.0)
        norms["l2"].append(0.0)
        continue
      total, linf, l2 = None, 0.0, 0.0
      for batch in data.batches(chunk):
        b = self.place(batch)
        adv = craft(self.states, b["image"], b["mask"], b["index"],
                    jnp.float32(eps))
        total = metrics_lib.add_sums(total, jax.device_get(
            self._sums(self.states, adv, b["mask"], b["weight"])))
        real = batch["weight"] > 0
        delta = np.asarray(adv - b["image"]).reshape(len(real), -1)[real]
        linf += float(np.abs(delta).max(-1).sum())
        l2 += float(np.sqrt((delta ** 2).sum(-1)).sum())
      per_eps.append(self._summaries(total))
      norms["linf"].append(linf / max(count, 1))
      norms["l2"].append(l2 / max(count, 1))
    results = {m: [p[m] for p in per_eps] for m in self.model_names}
    return results, norms


def run(rcfg: Settings, workdir: str | Path, *, members, mesh, ds,
        inp: pipeline.EvalInput, min_defect_area: int,
        open_other: Callable[[OtherData], Any] | None = None,
        log: Callable[[str], Any] = logging.info):
  """The whole sweep -> (results, examples, finished) for `report.write`.

  Args:
    rcfg: what to sweep.
    workdir: the evaluated model's workdir (robustness/ is written there).
    members: [(graphdef, state, card, workdir)], the evaluated model first
      (`model_io.load_members`); mesh: their mesh.
    ds: the dataset version evaluated; inp: its evaluation size and scale.
    min_defect_area: predicted pixels that raise an alarm.
    open_other: opens `rcfg.other_data` (generalisation), when it is named.
    log: progress messages.

  Returns:
    results: every number (JSON-ready); examples: {condition: arrays} of a
    few images for the example grid; finished: the on-disk record of
    finished conditions (remove it once the report is written).

  Raises:
    ValueError: more than one process; batch sizes that do not divide.
  """
  if jax.process_count() > 1:
    raise ValueError("--mode=robustness runs in one process (on all of its "
                     "devices); start it without jax.distributed.")
  ensemble = Ensemble([m[0] for m in members], rcfg.ensemble_method)
  states = [m[1] for m in members]
  batch = rcfg.batch_size
  sharding.local_batch_size(batch, mesh)  # Refuses uneven splits early.
  sharding.local_batch_size(rcfg.attack_batch_size, mesh)
  if batch % rcfg.attack_batch_size:
    raise ValueError(f"robustness.attack_batch_size={rcfg.attack_batch_size} "
                     f"must divide robustness.batch_size={batch}.")
  data = load_eval_data(ds, rcfg.split, inp, rcfg.max_images, batch)
  evaluator = Evaluator(ensemble, states, mesh, ds.class_names,
                        min_defect_area)
  size = inp.size
  scale = (corruptions_lib.scale_for(size) if rcfg.corruption_scale == "auto"
           else rcfg.corruption_scale)
  names = select_corruptions(rcfg.corruptions)
  severities = [int(s) for s in rcfg.severities]
  attack_names = list(rcfg.attacks)
  targets = ["ensemble"]
  if ensemble.size > 1 and rcfg.transfer_from >= 0:
    targets.append(f"member:{rcfg.transfer_from}")
  num_images = int(data.weight.sum())
  results: dict[str, Any] = {
      "models": evaluator.model_names,
      "members": [{"workdir": str(wd), "checkpoint": card["checkpoint"],
                   "step": int(card["step"]), "model": card["signature"]}
                  for _, _, card, wd in members],
      "ensemble_method": ensemble.method if ensemble.size > 1 else None,
      "dataset": str(ds.path), "split": rcfg.split,
      "num_images": num_images,
      "num_defect_images": int(sum(defect_pixels(m).any()
                                   for m in data.mask[data.weight > 0])),
      "corruption_scale": scale, "seed": rcfg.seed,
      "attack_goal": rcfg.attack_goal, "attack_gradient": rcfg.attack_gradient,
      "corruptions": {}, "attacks": {}, "generalisation": None,
  }
  steps = 1 + len(names) * len(severities) + len(attack_names) * len(targets)
  bar = ProgressBar(total=steps, start=0, batch_size=num_images)
  store = Finished(Path(workdir) / "robustness" / "finished.json",
                   {"robustness": _identity(rcfg),
                    "members": results["members"], "dataset": results["dataset"],
                    "images": data.index.tolist()})
  done = 0

  def measure(key: str, compute: Callable[[], Any]) -> Any:
    nonlocal done
    value = store.get(key)
    if value is None:
      value = store.put(key, compute())
    done += 1
    bar.update(done)
    return value

  results["clean"] = measure("clean", lambda: evaluator.metrics(data, batch))
  for name in names:
    spec = corruptions_lib.spec(name)
    entry = {"group": spec.group, "monotone": spec.monotone, "severities": {}}
    for severity in severities:
      fn = make_corrupt_fn(name, severity, scale, rcfg.seed)
      entry["severities"][str(severity)] = measure(
          f"{name}/{severity}", lambda: evaluator.metrics(data, batch, fn))
    results["corruptions"][name] = entry
  epsilons = [float(e) for e in rcfg.epsilons]
  for attack_name in attack_names:
    attack_fn, kwargs = build_attack(rcfg, attack_name)
    entry = {"epsilons": epsilons, "kwargs": kwargs, "crafted_on": {}}
    for target in targets:
      metrics, norms = measure(f"{attack_name}/{target}", lambda: evaluator.attack(
          data, rcfg.attack_batch_size, attack_fn, epsilons, rcfg.attack_goal,
          target, rcfg.attack_gradient, rcfg.seed, f"{attack_name}/{target}",
          results["clean"]))
      entry["crafted_on"][target] = {"metrics": metrics, "norms": norms}
    results["attacks"][attack_name] = entry
  bar.close()
  other = rcfg.other_data
  if other.name:
    if open_other is None:
      raise ValueError(f"robustness.other_data names {other.name!r}, but no "
                       "way to open it was given.")
    results["generalisation"] = _generalisation(
        open_other(other), other.split, inp, rcfg.max_images, evaluator,
        members, batch)
  log(f"Robustness sweep done: {steps} conditions on {num_images} images.")
  shown = _example_conditions(names, severities, attack_names, epsilons)
  return results, examples(evaluator, data, rcfg, scale, shown), store


def _example_conditions(names, severities, attack_names, epsilons):
  middle = min(severities, key=lambda s: abs(s - 3)) if severities else None
  shown = [("clean", None)]
  shown += [(f"{n}/{middle}", (n, middle)) for n in names if middle]
  if epsilons:
    shown += [(f"{a}/eps={max(epsilons) * 255:g}/255", (a, max(epsilons)))
              for a in attack_names]
  return shown


def examples(evaluator: Evaluator, data: EvalData, rcfg, scale: str,
             conditions) -> dict[str, dict[str, np.ndarray]]:
  """Images, perturbed images, truth and every model's prediction.

  For `rcfg.num_examples` images (defect images first) under each condition
  (name, spec): spec None = clean, (corruption, severity), or (attack, eps)
  crafted on the ensemble.
  """
  real = np.flatnonzero(data.weight > 0)
  defect = [i for i in real if defect_pixels(data.mask[i]).any()]
  chosen = (defect + [i for i in real if i not in defect])[:rcfg.num_examples]
  n_dev = evaluator.mesh.devices.size
  take = np.asarray(chosen + [chosen[-1]] * (-len(chosen) % n_dev))
  sub = EvalData(data.image[take], data.mask[take], data.index[take],
                 data.weight[take])
  b = evaluator.place(next(sub.batches(len(take))))
  out = {}
  for label, spec in conditions:
    images, masks = b["image"], b["mask"]
    if spec is not None and spec[0] in corruptions_lib.specs():
      images, masks = make_corrupt_fn(spec[0], spec[1], scale, rcfg.seed)(
          images, masks, b["index"])
    elif spec is not None:
      attack_fn, _ = build_attack(rcfg, spec[0])
      goal = (attacks_lib.defects_to_background(masks)
              if rcfg.attack_goal == "defects_to_background" else masks)
      craft = jax.jit(lambda states, x, t, i, eps=spec[1], fn=attack_fn: fn(
          evaluator.ensemble.attack_loss(states, attacks_lib.segmentation_loss,
                                         "ensemble", rcfg.attack_gradient),
          x, t, eps, condition_keys(rcfg.seed, f"{spec[0]}/ensemble", i)))
      images = craft(evaluator.states, images, goal, b["index"])
    n = len(chosen)
    out[label] = {"image": data.image[take][:n],
                  "perturbed": np.asarray(images)[:n],
                  "truth": np.asarray(masks)[:n],
                  "predictions": evaluator.predictions(images)[:, :n]}
  return out


def _identity(rcfg: Settings) -> dict:
  """The settings as the config spelled them (lists, not tuples): what a
  finished condition is valid for."""
  return json.loads(json.dumps(dataclasses.asdict(rcfg)))


def _generalisation(ds, split: str, inp: pipeline.EvalInput, max_images: int,
                    evaluator: Evaluator, members, batch: int) -> dict:
  """Clean metrics on another dataset of the same domain."""
  sig = members[0][2]["signature"]
  if ds.num_classes != sig["num_classes"] or ds.channels != sig["in_channels"]:
    raise ValueError(
        f"robustness.other_data {ds.path}: {ds.num_classes} classes and "
        f"{ds.channels} channels; the model has {sig['num_classes']} and "
        f"{sig['in_channels']}.")
  data = load_eval_data(ds, split, inp, max_images, batch)
  return {"dataset": str(ds.path), "split": split,
          "num_images": int(data.weight.sum()),
          "metrics": evaluator.metrics(data, batch)}
