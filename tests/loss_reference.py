"""Independent float64 NumPy implementations of the loss zoo, for tests.

Written from the published definitions (../shared/reference/losses.md and the
papers), element by element, without sharing code with chameleon_jax.
Conventions: pred (B, ..., K) logits; multiclass targets (B, ...) ints;
binary targets (B, ...) with pred (B, ..., 1); multilabel targets (B, ..., K).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

IGNORE = 255


def softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def sigmoid(z):
  return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def onehot(pred, target, mode):
  """(P, G, V) float64 arrays shaped like pred; G, P zeroed where invalid."""
  pred = np.asarray(pred, np.float64)
  if mode == "multiclass":
    p = softmax(pred)
    valid = (target != IGNORE)[..., None] * np.ones(pred.shape[-1])
    g = np.zeros_like(pred)
    for c in range(pred.shape[-1]):
      g[..., c] = (target == c)
  else:
    t = target[..., None] if mode == "binary" else target
    p = sigmoid(pred)
    valid = (t != IGNORE).astype(np.float64)
    g = np.where(t == IGNORE, 0, t).astype(np.float64)
  return p, g * valid, valid


def select(x, mode, include_background):
  return x[..., 1:] if mode == "multiclass" and not include_background else x


def units(x, reduce_over):
  """Sums over the reduced axes -> (K,) or (B, K)."""
  axes = tuple(range(x.ndim - 1)) if reduce_over == "batch" else tuple(
      range(1, x.ndim - 1))
  return x.sum(axes)


def reduce_units(loss, empty, empty_target, weights=None):
  loss = np.where(empty & (empty_target != "penalize"), 0.0, loss)
  include = np.where(empty & (empty_target == "exclude"), 0.0, 1.0)
  w = include if weights is None else include * weights
  return float((loss * w).sum() / max(w.sum(), 1e-12))


def region(pred, target, mode="multiclass", include_background=False,
           reduce_over="batch", nr=1e-5, dr=1e-5, empty_target="penalize",
           kind="dice", alpha=0.3, beta=0.7, gamma=4 / 3, class_weights=None):
  p, g, v = onehot(pred, target, mode)
  p = p * v
  p, g = select(p, mode, include_background), select(g, mode, include_background)
  tp, sp, sg = units(p * g, reduce_over), units(p, reduce_over), units(g, reduce_over)
  sp2 = units(p * p, reduce_over)
  fp, fn = sp - tp, sg - tp
  if kind == "dice":
    loss = 1 - (2 * tp + nr) / (sp + sg + dr)
  elif kind == "squared":
    loss = 1 - (2 * tp + nr) / (sp2 + sg + dr)
  elif kind == "log":
    loss = -np.log((2 * tp + nr) / (sp + sg + dr))
  elif kind == "jaccard":
    loss = 1 - (2 * tp + nr) / (2 * (tp + fp + fn) + dr)
  elif kind == "tversky":
    loss = 1 - (tp + nr) / (tp + alpha * fp + beta * fn + dr)
  elif kind == "focal_tversky":
    loss = (1 - (tp + nr) / (tp + alpha * fp + beta * fn + dr)) ** (1 / gamma)
  w = None
  if class_weights is not None:
    w = select(np.asarray(class_weights, np.float64), mode, include_background)
  return reduce_units(loss, sg == 0, empty_target, w)


def generalized_dice(pred, target, mode="multiclass", include_background=False,
                     reduce_over="batch", nr=1e-5, dr=1e-5, weight_type="square"):
  p, g, v = onehot(pred, target, mode)
  p = select(p * v, mode, include_background)
  g = select(g, mode, include_background)
  tp, sp, sg = units(p * g, reduce_over), units(p, reduce_over), units(g, reduce_over)
  tp, sp, sg = np.atleast_2d(tp), np.atleast_2d(sp), np.atleast_2d(sg)
  out = []
  for row in range(sg.shape[0]):
    with np.errstate(divide="ignore"):
      w = {"square": 1 / sg[row] ** 2, "simple": 1 / sg[row],
           "uniform": np.ones_like(sg[row])}[weight_type]
    finite = np.isfinite(w)
    w[~finite] = w[finite].max() if finite.any() else 0.0
    out.append(1 - (2 * (w * tp[row]).sum() + nr)
               / ((w * (sp[row] + sg[row])).sum() + dr))
  return float(np.mean(out))


def cross_entropy(pred, target, class_weights=None, smoothing=0.0):
  logp = np.log(softmax(pred))
  k = logp.shape[-1]
  num = den = 0.0
  for idx in zip(*np.nonzero(target != IGNORE)):
    t = target[idx]
    w = 1.0 if class_weights is None else class_weights[t]
    num += w * ((1 - smoothing) * -logp[idx][t] + smoothing / k * -logp[idx].sum())
    den += w
  return num / max(den, 1e-12)


def binary_cross_entropy(pred, target, mode="binary", smoothing=0.0):
  p, g, v = onehot(pred, target, mode)
  t = g * (1 - smoothing) + smoothing / 2
  loss = -(t * np.log(p) + (1 - t) * np.log(1 - p)) * v
  return float(loss.sum() / max(v.sum(), 1e-12))


def focal(pred, target, mode, gamma=2.0, alpha=None):
  p, g, v = onehot(pred, target, mode)
  if mode == "multiclass":
    pt = (p * g).sum(-1)
    loss = -(1 - pt) ** gamma * np.log(np.where(v[..., 0] > 0, pt, 1.0))
    if alpha is not None:
      loss = loss * (g @ np.asarray(alpha, np.float64))
    v = v[..., 0]
  else:
    pt = p * g + (1 - p) * (1 - g)
    loss = -(1 - pt) ** gamma * np.log(pt)
    if alpha is not None:
      loss = loss * (alpha * g + (1 - alpha) * (1 - g))
  return float((loss * v).sum() / max(v.sum(), 1e-12))


def _lovasz_grad(gt_sorted):
  gts = gt_sorted.sum()
  inter = gts - np.cumsum(gt_sorted)
  union = gts + np.cumsum(1 - gt_sorted)
  jac = 1 - inter / union
  jac[1:] = jac[1:] - jac[:-1]
  return jac


def lovasz_hinge_flat(logits, labels):
  """Berman et al.'s reference algorithm on valid pixels only."""
  if logits.size == 0:
    return 0.0
  signs = 2 * labels - 1
  errors = 1 - logits * signs
  order = np.argsort(-errors, kind="stable")
  return float(np.maximum(errors[order], 0) @ _lovasz_grad(labels[order]))


def lovasz(pred, target, mode="binary", per_image=False, present_only=False,
           include_background=False):
  pred = np.asarray(pred, np.float64)
  """Berman et al.'s reference: per image (per_image=True) the loss of each
  image, then their mean; multiclass `present_only` averages the classes
  present within each image (an image with none: 0)."""
  batches = [slice(i, i + 1) for i in range(len(pred))] if per_image else [slice(None)]
  out = []
  for b in batches:
    if per_image and mode != "binary":
      out.append(lovasz(pred[b], target[b], mode, False, present_only,
                        include_background))
      continue
    if mode == "binary":
      t = target[b].ravel()
      x = pred[b][..., 0].ravel()
      keep = t != IGNORE
      out.append(lovasz_hinge_flat(x[keep], t[keep].astype(np.float64)))
    else:
      p = softmax(pred[b]).reshape(-1, pred.shape[-1])
      t = target[b].ravel()
      keep = t != IGNORE
      p, t = p[keep], t[keep]
      first = 0 if include_background else 1
      for c in range(first, pred.shape[-1]):
        fg = (t == c).astype(np.float64)
        if present_only and fg.sum() == 0:
          continue
        if fg.size == 0:
          out.append(0.0)
          continue
        errors = np.abs(fg - p[:, c])
        order = np.argsort(-errors, kind="stable")
        out.append(float(errors[order] @ _lovasz_grad(fg[order])))
  return float(np.mean(out)) if out else 0.0


def boundary(pred, target, mode="multiclass", include_background=False,
             max_distance=20):
  p, g, v = onehot(pred, target, mode)
  p, g, v = (select(x, mode, include_background) for x in (p, g, v))
  phi = np.zeros_like(g)
  for b in range(g.shape[0]):
    for c in range(g.shape[-1]):
      m = g[b, ..., c] > 0
      out = (ndimage.distance_transform_cdt(~m, metric="chessboard")
             if m.any() else np.full(m.shape, max_distance))
      inside = (ndimage.distance_transform_cdt(m, metric="chessboard")
                if (~m).any() else np.full(m.shape, max_distance))
      phi[b, ..., c] = (np.minimum(out, max_distance)
                        - np.minimum(inside, max_distance)) / max_distance
  return float((phi * p * v).sum() / max(v.sum(), 1e-12))
