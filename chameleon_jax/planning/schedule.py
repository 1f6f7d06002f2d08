"""The planner's rules about the model, memory and time.

For each candidate width the model is evaluated abstractly at the training
input size (estimate.py): its memory gives the largest batch that fits
MEMORY_SHARE of one device, its FLOPs times the machine's measured seconds
per GFLOP give a step time, and the budget gives the steps that fit. The
widest candidate that fits PASSES passes over the training defect images in
the budget is chosen, the narrowest where none does. The step count written
is a cap: the training loop measures the real step time and trains what
fits (train/budget.py).
"""

from __future__ import annotations

import math

from chameleon_jax.planning import estimate
from chameleon_jax.planning.facts import PlanError
from chameleon_jax.planning.planner_state import Planner
from chameleon_jax.planning.rules import PASSES_WANTED as PASSES

# First-level widths of the plain UNet, doubling per level: cpu_unet's 8
# (RESULTS, "cpu_unet": twice the images per second of a 16-wide UNet on
# XLA:CPU) and two wider ones for machines that can afford them.
FIRST_WIDTHS = (8, 16, 32)
BATCH_TARGET = 16  # BatchNorm's statistics need batches of about 16.
BATCHNORM_MIN_BATCH = 8  # Below: GroupNorm (statistics per image).
MEMORY_SHARE = 0.5  # Of one device's memory; the rest: pipeline, eval, XLA.
# A wider candidate only where the data can feed it: at most this many
# parameters per training image (the narrowest is always allowed). Small
# datasets overfit large models, and the FLOP-based step time (below) is
# least reliable for wide layers on small images (the estimate that missed:
# RESULTS, "Planner and sweeps").
PARAMS_PER_TRAIN_IMAGE = 20_000
TRAIN_SHARE = 0.8  # Of the budget; compilation and validations take the rest.
DEFAULT_BUDGET_MINUTES = 25.0
LEARNING_RATE = {"batch": 5e-3, "group": 2e-3}  # cpu_unet; the template's.
CLASSIFIER_ENCODER = "resnet18"


def _batch(cost: estimate.Cost, devices: int, memory: int) -> int:
  """The largest global batch <= BATCH_TARGET (a multiple of `devices`)
  whose per-device training step fits MEMORY_SHARE of `memory`; 0: none."""
  candidates = sorted({b for b in (16, 8, 4, 2, 1) if b % devices == 0} |
                      {devices}, reverse=True)
  for batch in candidates:
    if batch <= max(BATCH_TARGET, devices) and \
        cost.train_bytes(batch // devices) <= MEMORY_SHARE * memory:
      return batch
  return 0


def _round_up(value: float, multiple: int) -> int:
  return int(math.ceil(value / multiple) * multiple)


def model_and_batch(p: Planner) -> None:
  """Architecture, width, normalisation, batch sizes, learning rate."""
  f, m = p.facts, p.machine
  crop = tuple(p.value("data.crop_size") or ())
  canvas = tuple(p.value("data.image_size"))
  train_size = crop or canvas
  budget_s = 60.0 * p.budget_minutes
  train = f.splits["train"]
  fraction = p.value("data.defect_image_fraction")
  share = fraction if fraction and fraction > 0 else train.defect / train.images
  norm_stats = {"input_mean": p.derived["input_mean"],
                "input_std": p.derived["input_std"]}
  if f.task == "classification":
    candidates = [("classifier", {"encoder": CLASSIFIER_ENCODER,
                                  "norm": "group"})]
  else:
    # As deep as the canvas rule's stride (the canvas is a multiple of it;
    # levels() of the rounded-up canvas can be one level deeper).
    depth = int(math.log2(p.derived["stride"])) + 1
    candidates = [("unet", {"widths": tuple(w * 2 ** i for i in range(depth)),
                            "norm": "batch"}) for w in FIRST_WIDTHS]
  rows, chosen = [], None
  for name, kwargs in candidates:
    cost = estimate.cost(name, tuple(sorted(kwargs.items())), f.num_classes,
                         f.channels, tuple(train_size))
    batch = _batch(cost, m.devices, m.memory_bytes)
    if not batch:
      rows.append(f"{kwargs}: no batch fits")
      continue
    if chosen is not None and \
        cost.params > PARAMS_PER_TRAIN_IMAGE * train.images:
      rows.append(f"{kwargs.get('widths', kwargs.get('encoder'))}: "
                  f"{cost.params / 1e6:.2f} M params, more than "
                  f"{PARAMS_PER_TRAIN_IMAGE:,} per training image "
                  f"({train.images})")
      continue
    step_s = m.seconds_per_gflop * 3 * cost.forward_gflops * batch / m.devices
    fits = budget_s * TRAIN_SHARE / step_s
    wanted = PASSES * train.defect / (batch * share)
    rows.append(f"{kwargs.get('widths', kwargs.get('encoder'))}: "
                f"{cost.params / 1e6:.2f} M params, batch {batch}, "
                f"~{step_s:.2f} s/step -> {fits:.0f} steps fit, "
                f"{wanted:.0f} wanted")
    if chosen is None or fits >= wanted:
      chosen = (name, kwargs, cost, batch, step_s, fits, wanted)
  if chosen is None:
    raise PlanError(
        f"no candidate model trains at {train_size[0]}x{train_size[1]} with "
        f"a batch of {m.devices} in {MEMORY_SHARE:.0%} of this device's "
        f"{m.memory_bytes / 2**30:.2f} GiB ({'; '.join(rows)}). Give "
        "data.crop_size a smaller value, or plan for a larger machine "
        "(plan.machine_profile).")
  name, kwargs, cost, batch, step_s, fits, wanted = chosen
  evidence = (f"machine {m.device_kind} x {m.devices}, "
              f"{m.seconds_per_gflop:g} s/GFLOP, "
              f"{m.memory_bytes / 2**30:.1f} GiB; budget "
              f"{p.budget_minutes:g} min; candidates: " + "; ".join(rows))
  norm = kwargs["norm"]
  if name == "unet" and batch < BATCHNORM_MIN_BATCH:
    norm = "group"
  p.choose("model.name", name, "a plain UNet, as deep as the canvas allows "
           "(segmentation) / a ResNet-18 classifier (classification)",
           evidence)
  p.choose("model.kwargs", {**kwargs, "norm": norm, **norm_stats},
           f"the widest candidate whose {PASSES} passes over the training "
           "defect images fit the budget (the narrowest where none does) "
           f"with at most {PARAMS_PER_TRAIN_IMAGE:,} parameters per training "
           "image; "
           f"BatchNorm from batches of {BATCHNORM_MIN_BATCH}; input "
           "statistics of the data", evidence)
  p.choose("train.batch_size", batch, f"the largest batch <= {BATCH_TARGET} "
           f"whose training step fits {MEMORY_SHARE:.0%} of device memory "
           "(abstract evaluation)", evidence)
  eval_cost = estimate.cost(name, tuple(sorted(kwargs.items())),
                            f.num_classes, f.channels, tuple(canvas))
  eval_batch = next((b for b in (16, 8, 4, 2, 1) if b % m.devices == 0 and
                     eval_cost.eval_bytes(b // m.devices) <=
                     MEMORY_SHARE * m.memory_bytes), m.devices)
  p.choose("eval.batch_size", eval_batch, "the largest batch <= 16 whose "
           f"forward pass at the canvas fits {MEMORY_SHARE:.0%} of device "
           "memory", f"canvas {canvas}: {eval_cost.activation_bytes / 2**20:.0f}"
           " MiB of values per image")
  p.choose("train.learning_rate", LEARNING_RATE[norm],
           f"{LEARNING_RATE[norm]:g} with {norm} normalisation (cpu_unet: "
           "5e-3 for short schedules with BatchNorm)", f"norm {norm}")
  p.derived.update(step_s=step_s, fits=fits, wanted=wanted)


def schedule(p: Planner) -> None:
  """The budget, a step cap, warmup, validation spacing, input workers."""
  fits, wanted = p.derived["fits"], p.derived["wanted"]
  p.choose("train.time_budget_minutes", p.budget_minutes, "the run's "
           "wall-clock budget; the training loop measures this machine and "
           "trains what fits", f"budget {p.budget_minutes:g} min "
           f"(default {DEFAULT_BUDGET_MINUTES:g})")
  planned = min(fits, wanted)
  cap = max(100, _round_up(2 * planned, 100))
  evidence = (f"~{p.derived['step_s']:.2f} s/step: {fits:.0f} steps fit "
              f"{TRAIN_SHARE:.0%} of the budget; {PASSES} passes want "
              f"{wanted:.0f}")
  p.choose("train.steps", cap, "a cap of twice the steps planned (min(fit, "
           "wanted)); the budget decides within it", evidence)
  warmup = int(min(100, max(20, round(0.05 * planned))))
  p.choose("train.warmup_steps", warmup, "5 % of the planned steps, 20-100 "
           "(>= 19: the budget's pace check times warmup's second half)",
           evidence)
  every = math.ceil(cap / 3)
  p.choose("train.eval_every", every, "three validations (the budget "
           "re-spaces them to the steps that fit)", evidence)
  p.choose("train.checkpoint_every", every, "with every validation",
           evidence)
  workers = max(1, min(4, p.machine.cpu_count - 1))
  p.choose("data.num_workers", workers, "one input worker per core but one, "
           "at most 4", f"{p.machine.cpu_count} cores")
