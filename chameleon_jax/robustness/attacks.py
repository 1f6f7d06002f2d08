"""White-box attacks as `jax.grad` transforms: FGSM, BIM (iterative FGSM), PGD.

Conventions (those of torchattacks/foolbox/RobustBench, see
`../shared/reference/attacks.md`): images live in pixel space [0, 1] and the
model normalises inside; untargeted attacks ascend the loss, targeted attacks
descend the loss towards the target. An attack is a pure function

    attack(loss_fn, x, target, eps, key) -> x_adv

of a per-example loss `loss_fn(x, target) -> (B,)`, so it jits, batches, and
`multi_eps` vmaps it over several epsilons in one call. The gradient is that
of the SUM of per-example losses, so every example gets its own gradient
whatever the batch.

One iteration, in this order (documented because libraries differ for L2):
  L-inf:  x <- clip_[0,1]( proj_{|x - x0|_inf <= eps}( x + alpha * sign(g) ) )
  L2:     x <- clip_[0,1]( proj_{|x - x0|_2 <= eps}( x + alpha * g / (|g|_2 + 1e-10) ) )
i.e. step -> project -> clip (torchattacks and foolbox; cleverhans and ART
clip before projecting, which differs by up to 8e-3 per pixel for L2).
Random start: L-inf uniform in the eps-ball; L2 a Gaussian direction scaled
to a radius uniform in [0, eps] (torchattacks); both clipped to [0, 1].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from chameleon_jax.data.labels import IGNORE_INDEX
from chameleon_jax.registry import ATTACKS

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
Attack = Callable[[LossFn, jax.Array, jax.Array, jax.Array, jax.Array],
                  jax.Array]
NORMS = ("linf", "l2")


# --- per-example losses an attack differentiates --------------------------------

def classification_loss(logits_fn: Callable[[jax.Array], jax.Array]) -> LossFn:
  """Cross-entropy per example; `target` holds (B,) integer labels."""

  def loss(x, labels):
    logp = jax.nn.log_softmax(logits_fn(x).astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]

  return loss


def segmentation_loss(logits_fn: Callable[[jax.Array], jax.Array],
                      ignore_index: int = IGNORE_INDEX) -> LossFn:
  """Per-image mean pixel cross-entropy over valid pixels (B,).

  Pixels labelled `ignore_index` contribute nothing (their gradient is zero);
  an image without a valid pixel has loss 0.
  """

  def loss(x, masks):
    logp = jax.nn.log_softmax(logits_fn(x).astype(jnp.float32), axis=-1)
    valid = masks != ignore_index
    safe = jnp.where(valid, masks, 0)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, nll, 0.0)
    axes = tuple(range(1, nll.ndim))
    return nll.sum(axes) / jnp.maximum(valid.sum(axes), 1)

  return loss


def defects_to_background(masks: jax.Array,
                          ignore_index: int = IGNORE_INDEX) -> jax.Array:
  """Target of the quality-control attack: every labelled pixel background.

  Used with `targeted=True`: the attack makes defects disappear.
  """
  return jnp.where(masks == ignore_index, ignore_index, 0).astype(masks.dtype)


# --- the attacks ---------------------------------------------------------------

def _per_example_l2(v: jax.Array) -> jax.Array:
  axes = tuple(range(1, v.ndim))
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))


def _project(delta: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
  if norm == "linf":
    return jnp.clip(delta, -eps, eps)
  scale = jnp.minimum(1.0, eps / jnp.maximum(_per_example_l2(delta), 1e-12))
  return delta * scale


def _direction(grad: jax.Array, norm: str) -> jax.Array:
  if norm == "linf":
    return jnp.sign(grad)
  return grad / (_per_example_l2(grad) + 1e-10)


def _random_start(key: jax.Array, x: jax.Array, eps: jax.Array,
                  norm: str) -> jax.Array:
  if key.shape:  # One key per example: draws independent of the batch.
    if key.shape != x.shape[:1]:
      raise ValueError(f"{key.shape[0]} attack keys for {x.shape[0]} images.")
    return jax.vmap(lambda k, xi: _random_start(k, xi[None], eps, norm)[0])(
        key, x)
  if norm == "linf":
    return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
  k_dir, k_rad = jax.random.split(key)
  direction = jax.random.normal(k_dir, x.shape, x.dtype)
  direction = direction / jnp.maximum(_per_example_l2(direction), 1e-12)
  radius = jax.random.uniform(k_rad, (x.shape[0],) + (1,) * (x.ndim - 1),
                              x.dtype)
  return direction * radius * eps


def pgd(loss_fn: LossFn, x: jax.Array, target: jax.Array, eps, key=None, *,
        steps: int = 10, alpha=None, alpha_ratio: float = 0.25,
        norm: str = "linf", random_start: bool = True,
        targeted: bool = False) -> jax.Array:
  """Projected gradient descent (Madry et al. 2018) in the `norm` ball.

  Args:
    loss_fn: per-example loss `(x, target) -> (B,)`.
    x: clean images in [0, 1], (B, ...).
    target: true labels/masks (untargeted) or target labels/masks (targeted).
    eps: radius of the ball (a scalar; may be traced, see `multi_eps`).
    key: PRNG key for `random_start`: one for the batch, or one per example
      (B,) so that an example's start does not depend on its batch.
    steps: iterations (a static int).
    alpha: step size; default `alpha_ratio * eps` (2/255 at eps 8/255).
    norm: "linf" or "l2".
    random_start: start from a random point of the ball (PGD) or from x (BIM).
    targeted: descend the loss towards `target` instead of ascending it.
  """
  if norm not in NORMS:
    raise ValueError(f"Attack norm {norm!r}; expected one of {NORMS}.")
  if steps < 1:
    raise ValueError(f"Attack steps must be >= 1, got {steps}.")
  eps = jnp.asarray(eps, x.dtype)
  alpha = alpha_ratio * eps if alpha is None else jnp.asarray(alpha, x.dtype)
  sign = -1.0 if targeted else 1.0
  grad_fn = jax.grad(lambda z: sign * jnp.sum(loss_fn(z, target)))

  if random_start:
    if key is None:
      raise ValueError("random_start=True needs a PRNG key.")
    start = jnp.clip(x + _random_start(key, x, eps, norm), 0.0, 1.0)
  else:
    start = x

  def body(_, adv):
    adv = adv + alpha * _direction(grad_fn(adv), norm)
    adv = x + _project(adv - x, eps, norm)
    return jnp.clip(adv, 0.0, 1.0)

  # Unrolled: XLA:CPU runs the convolutions of a while-loop body ~4x slower
  # than the same ops outside a loop (benchmarks/RESULTS.md); compile time
  # grows with `steps` instead.
  return jax.lax.fori_loop(0, steps, body, start, unroll=True)


def fgsm(loss_fn: LossFn, x: jax.Array, target: jax.Array, eps, key=None, *,
         norm: str = "linf", targeted: bool = False) -> jax.Array:
  """One step of size eps: clip(x + eps * sign(grad), 0, 1) (FGM for "l2")."""
  del key
  return pgd(loss_fn, x, target, eps, steps=1, alpha=eps, norm=norm,
             random_start=False, targeted=targeted)


def bim_steps(eps: float) -> int:
  """Kurakin et al.'s step count for BIM: min(eps*255 + 4, 1.25 * eps*255)."""
  return max(1, int(min(eps * 255 + 4, 1.25 * eps * 255)))


def multi_eps(attack: Attack, loss_fn: LossFn, x: jax.Array,
              target: jax.Array, epsilons: jax.Array,
              key: jax.Array | None = None) -> jax.Array:
  """Runs `attack` for every eps in one call: (E, B, ...) adversarial images.

  eps = 0 returns x itself (every step is projected back onto x).
  """
  return jax.vmap(lambda e: attack(loss_fn, x, target, e, key))(
      jnp.asarray(epsilons, x.dtype))


# --- registry: configs name attacks, these builders fix their options ------------

@ATTACKS.register("fgsm")
def build_fgsm(norm: str = "linf", targeted: bool = False) -> Attack:
  """FGSM (Goodfellow et al. 2015); FGM with norm="l2"."""
  return lambda loss_fn, x, t, eps, key=None: fgsm(
      loss_fn, x, t, eps, norm=norm, targeted=targeted)


@ATTACKS.register("bim")
def build_bim(steps: int = 10, alpha_ratio: float = 0.25, norm: str = "linf",
              targeted: bool = False) -> Attack:
  """Iterative FGSM (Kurakin et al. 2017): PGD without random start."""
  return lambda loss_fn, x, t, eps, key=None: pgd(
      loss_fn, x, t, eps, steps=steps, alpha_ratio=alpha_ratio, norm=norm,
      random_start=False, targeted=targeted)


@ATTACKS.register("pgd")
def build_pgd(steps: int = 10, alpha_ratio: float = 0.25, norm: str = "linf",
              random_start: bool = True, targeted: bool = False) -> Attack:
  """PGD (Madry et al. 2018). L2 defaults as torchattacks: pass alpha_ratio=0.2."""
  return lambda loss_fn, x, t, eps, key=None: pgd(
      loss_fn, x, t, eps, key, steps=steps, alpha_ratio=alpha_ratio, norm=norm,
      random_start=random_start, targeted=targeted)
