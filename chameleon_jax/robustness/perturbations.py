"""Perturbations of the production line, beyond ImageNet-C (group "real_world").

What changes between the day a model is trained and a day on the line: the
lamp ages or moves (illumination gradients, vignetting, exposure), the sensor
heats up or is replaced (Poisson-Gaussian noise, dead and hot pixels, gamma),
the part sits a little differently (small shifts and rotations), the lens
drifts out of focus, and images are stored as JPEG at production quality.
Severities 1-5 run from "a normal day" to "needs maintenance"; the
parameters are ours (no published table exists) and are listed per function.
They are relative to the image size, so one set serves every scale.

Registered in the same `CORRUPTIONS` registry, with the same contract as the
ImageNet-C family: one image (H, W, C) in [0, 1], one key; shift_rotate moves
pixels and exposes its sampling grid so masks follow the part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chameleon_jax.robustness import filters
from chameleon_jax.robustness.corruptions import disk_kernel, register
from chameleon_jax.robustness.jpeg import jpeg_round_trip

GROUP = "real_world"


def _random_sign(key: jax.Array) -> jax.Array:
  return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)


@register("illumination_gradient", GROUP, (.1, .2, .3, .45, .6))
def illumination_gradient(key, x, a):
  """Linear gain ramp 1-a .. 1+a across the image in a random direction."""
  h, w = x.shape[:2]
  theta = jax.random.uniform(key, (), minval=0.0, maxval=2 * jnp.pi)
  yy = (jnp.arange(h)[:, None] - (h - 1) / 2) / max(h, w)
  xx = (jnp.arange(w)[None, :] - (w - 1) / 2) / max(h, w)
  ramp = 2 * (yy * jnp.sin(theta) + xx * jnp.cos(theta))  # about -1..1
  return x * (1 + a * ramp)[..., None]


@register("vignetting", GROUP, (.1, .2, .3, .45, .6))
def vignetting(key, x, v):
  """Radial falloff 1 - v (r / r_corner)^2 around a slightly offset centre."""
  h, w = x.shape[:2]
  off = jax.random.uniform(key, (2,), minval=-0.1, maxval=0.1)
  cy, cx = (h - 1) / 2 + off[0] * h, (w - 1) / 2 + off[1] * w
  r2 = (jnp.arange(h)[:, None] - cy) ** 2 + (jnp.arange(w)[None, :] - cx) ** 2
  return x * (1 - v * r2 / ((h / 2) ** 2 + (w / 2) ** 2))[..., None]


@register("sensor_noise", GROUP, ((1000, .005), (500, .01), (200, .02),
                                  (100, .03), (50, .05)))
def sensor_noise(key, x, c):
  """Poisson-Gaussian: Poisson(x * full_well) / full_well + N(0, read_sigma)."""
  full_well, read_sigma = c
  k1, k2 = jax.random.split(key)
  shot = filters.poisson(k1, x * full_well)
  return shot / full_well + read_sigma * jax.random.normal(k2, x.shape)


@register("dead_hot_pixels", GROUP, (.0005, .001, .002, .005, .01))
def dead_hot_pixels(key, x, fraction):
  """A fraction of pixels stuck at 0 (dead) or 1 (hot), all channels."""
  k1, k2 = jax.random.split(key)
  h, w = x.shape[:2]
  stuck = jax.random.uniform(k1, (h, w, 1)) < fraction
  hot = jax.random.bernoulli(k2, 0.5, (h, w, 1)).astype(x.dtype)
  return jnp.where(stuck, hot, x)


@register("gamma", GROUP, (1.15, 1.3, 1.5, 1.75, 2.0))
def gamma(key, x, g):
  """x ** g or x ** (1/g), the direction drawn per image."""
  exponent = jnp.exp(_random_sign(key) * jnp.log(g))
  return jnp.power(jnp.clip(x, 0.0, 1.0), exponent)


@register("exposure", GROUP, (.25, .5, .75, 1.0, 1.5))
def exposure(key, x, ev):
  """Gain 2 ** (+-ev) (over- or under-exposed by ev stops), clipped."""
  return x * jnp.exp2(_random_sign(key) * ev)


def _shift_rotate_grid(key, size, c):
  h, w = size
  shift, degrees = c
  k1, k2 = jax.random.split(key)
  dy, dx = jax.random.uniform(k1, (2,), minval=-shift, maxval=shift) * \
      jnp.asarray([h, w], jnp.float32)
  theta = jnp.deg2rad(jax.random.uniform(k2, (), minval=-degrees,
                                         maxval=degrees))
  yy = jnp.arange(h, dtype=jnp.float32)[:, None] - (h - 1) / 2
  xx = jnp.arange(w, dtype=jnp.float32)[None, :] - (w - 1) / 2
  # Output pixel (y, x) shows the input at R(-theta) (y - dy, x - dx).
  yy, xx = yy - dy, xx - dx
  ys = jnp.cos(theta) * yy + jnp.sin(theta) * xx + (h - 1) / 2
  xs = -jnp.sin(theta) * yy + jnp.cos(theta) * xx + (w - 1) / 2
  return ys, xs


@register("shift_rotate", GROUP, ((.01, 1), (.02, 2), (.03, 3), (.05, 5),
                                  (.08, 8)), grid=_shift_rotate_grid)
def shift_rotate(key, x, c):
  """The part moved: shift up to c[0] of the size, rotation up to c[1] deg.

  Uncovered pixels replicate the edge; the mask follows (`warp_grids`).
  """
  ys, xs = _shift_rotate_grid(key, x.shape[:2], c)
  return filters.bilinear_sample(x, ys, xs, mode="nearest")


@register("defocus", GROUP, (1, 1.5, 2, 3, 4))
def defocus(key, x, radius):
  """The lens drifted: an anti-aliased disk of `radius` pixels."""
  del key
  return filters.filter2d(x, disk_kernel(radius, 0.5), mode="mirror")


@register("jpeg_production", GROUP, (90, 80, 70, 60, 50))
def jpeg_production(key, x, quality):
  """JPEG at the qualities cameras and archives use in production."""
  del key
  return jpeg_round_trip(x, int(quality))
