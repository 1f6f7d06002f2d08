"""Image operations in JAX shared by corruptions and perturbations.

Every function here works on ONE image `(H, W, C)` float32 in [0, 1] (the
corruptions vmap them over a batch). Shapes and kernel sizes are static, so
the NumPy parts (kernels, resampling matrices) are computed once at trace time.

Linear 1-D filters and resizes are applied as dense `(n_out, n_in)` matrices
with the boundary rule folded in. On CPU a matmul runs near peak while a
depthwise convolution does not, and the matrix makes every boundary mode exact
by construction (row i holds the weights that output pixel i takes from each
input pixel). Boundary modes use SciPy's names:

  nearest  a a a | a b c d | d d d      (skimage.filters.gaussian default)
  reflect  c b a | a b c d | d c b      (half-sample symmetric)
  mirror   d c b | a b c d | c b a      (OpenCV BORDER_REFLECT_101)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("nearest", "reflect", "mirror")
_HI = jax.lax.Precision.HIGHEST


def map_index(index: np.ndarray, n: int, mode: str) -> np.ndarray:
  """Maps integer positions outside [0, n) back inside by boundary `mode`."""
  index = np.asarray(index)
  if mode == "nearest":
    return np.clip(index, 0, n - 1)
  if mode == "reflect":
    period = 2 * n
    index = np.mod(index, period)
    return np.where(index >= n, period - 1 - index, index)
  if mode == "mirror":
    if n == 1:
      return np.zeros_like(index)
    period = 2 * n - 2
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)
  raise ValueError(f"Unknown boundary mode {mode!r}; expected {MODES}.")


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
  """SciPy's `gaussian_filter1d` weights: radius int(truncate * sigma + 0.5)."""
  if sigma <= 0:
    return np.ones(1)
  radius = int(truncate * float(sigma) + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  weights = np.exp(-0.5 * (x / float(sigma)) ** 2)
  return weights / weights.sum()


@functools.lru_cache(maxsize=256)
def _filter_matrix(n: int, kernel: tuple[float, ...], mode: str) -> np.ndarray:
  k = np.asarray(kernel, np.float64)
  radius = len(k) // 2
  out = np.zeros((n, n), np.float64)
  rows = np.arange(n)
  for t, weight in enumerate(k):
    np.add.at(out, (rows, map_index(rows + t - radius, n, mode)), weight)
  return out


def filter_matrix(n: int, kernel: np.ndarray, mode: str) -> np.ndarray:
  """(n, n) matrix of a centred 1-D correlation with `kernel` under `mode`."""
  if len(kernel) % 2 == 0:
    raise ValueError(f"Kernel length {len(kernel)} must be odd.")
  return _filter_matrix(n, tuple(float(v) for v in kernel), mode)


# Rows with at most this many non-zero weights are applied as gathers
# (memory-bound, ~7x faster for bilinear zooms); denser ones as a matmul.
_SPARSE_TAPS = 8


def apply_rows_cols(image: jax.Array, rows: np.ndarray,
                    cols: np.ndarray) -> jax.Array:
  """out[i, j, c] = sum_{h, w} rows[i, h] image[h, w, c] cols[j, w]."""
  return _apply_axis(_apply_axis(image, rows, 0), cols, 1)


def _apply_axis(image: jax.Array, matrix: np.ndarray, axis: int) -> jax.Array:
  matrix = np.asarray(matrix)
  taps = int((matrix != 0).sum(1).max())
  if taps > _SPARSE_TAPS:
    spec = "ih,hwc->iwc" if axis == 0 else "jw,iwc->ijc"
    return jnp.einsum(spec, jnp.asarray(matrix, image.dtype), image,
                      precision=_HI)
  order = np.argsort(matrix == 0, axis=1, kind="stable")[:, :taps]
  weights = np.take_along_axis(matrix, order, axis=1)
  shape = [1, 1, 1]
  shape[axis] = matrix.shape[0]
  out = 0.0
  for t in range(taps):
    w = jnp.asarray(weights[:, t].reshape(shape), image.dtype)
    out = out + jnp.take(image, order[:, t], axis=axis) * w
  return out


def separable_filter(image: jax.Array, kernel_h: np.ndarray,
                     kernel_w: np.ndarray | None = None,
                     mode: str = "nearest") -> jax.Array:
  """Correlates each channel with kernel_h along H and kernel_w along W."""
  h, w = image.shape[:2]
  kernel_w = kernel_h if kernel_w is None else kernel_w
  return apply_rows_cols(image, filter_matrix(h, kernel_h, mode),
                         filter_matrix(w, kernel_w, mode))


def gaussian_blur(image: jax.Array, sigma: float | tuple[float, float],
                  mode: str = "nearest", truncate: float = 4.0) -> jax.Array:
  """`scipy.ndimage.gaussian_filter` over H and W (per channel)."""
  sh, sw = (sigma, sigma) if np.isscalar(sigma) else sigma
  return separable_filter(image, gaussian_kernel1d(sh, truncate),
                          gaussian_kernel1d(sw, truncate), mode)


def box_blur(image: jax.Array, size: int, mode: str = "mirror") -> jax.Array:
  """`cv2.blur(image, (size, size))` (mean over a size x size window)."""
  return separable_filter(image, np.full(size, 1.0 / size), mode=mode)


def filter2d(image: jax.Array, kernel: np.ndarray,
             mode: str = "mirror") -> jax.Array:
  """2-D correlation of every channel with `kernel` (odd sizes), `mode` edges.

  Used for the kernels that do not separate (defocus disks). Large kernels
  go through the FFT of the padded image (circular convolution whose wrapped
  part is cropped away); small ones through a convolution with channels folded
  into the batch, so grey, RGB and multispectral images are served alike.
  """
  kh, kw = kernel.shape
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f"filter2d needs odd kernel sizes, got {kernel.shape}.")
  h, w, c = image.shape
  rows = map_index(np.arange(-(kh // 2), h + kh // 2), h, mode)
  cols = map_index(np.arange(-(kw // 2), w + kw // 2), w, mode)
  padded = image[rows][:, cols]
  if kh * kw > 49:  # Large kernels (defocus disks): FFT, ~10x faster on CPU.
    ph, pw = padded.shape[:2]
    flipped = np.zeros((ph, pw))
    flipped[:kh, :kw] = kernel[::-1, ::-1]
    spectrum = jnp.fft.rfft2(jnp.asarray(flipped, image.dtype))
    out = jnp.fft.irfft2(jnp.fft.rfft2(padded, axes=(0, 1)) *
                         spectrum[..., None], s=(ph, pw), axes=(0, 1))
    return out[kh - 1:kh - 1 + h, kw - 1:kw - 1 + w].astype(image.dtype)
  lhs = jnp.transpose(padded, (2, 0, 1))[..., None]  # (C, H', W', 1)
  rhs = jnp.asarray(kernel, image.dtype)[:, :, None, None]
  out = jax.lax.conv_general_dilated(
      lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=_HI)
  return jnp.transpose(out[..., 0], (1, 2, 0))


@functools.lru_cache(maxsize=256)
def box_resize_matrix(n_out: int, n_in: int) -> np.ndarray:
  """(n_out, n_in) weights of PIL's BOX downscaling (`precompute_coeffs`).

  Output pixel i averages, with equal weights, the input pixels whose centres
  fall in its footprint ((j + 0.5 - centre) / scale in (-0.5, 0.5]).
  """
  scale = n_in / n_out
  support = 0.5 * max(scale, 1.0)
  out = np.zeros((n_out, n_in), np.float64)
  for i in range(n_out):
    centre = (i + 0.5) * scale
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), n_in)
    for j in range(lo, hi):
      x = (j - centre + 0.5) / max(scale, 1.0)
      if -0.5 < x <= 0.5:
        out[i, j] = 1.0
  return out / out.sum(1, keepdims=True)


@functools.lru_cache(maxsize=256)
def nearest_resize_matrix(n_out: int, n_in: int) -> np.ndarray:
  """(n_out, n_in) selection matrix of nearest-neighbour resampling (PIL)."""
  src = np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int),
                   n_in - 1)
  return np.eye(n_in)[src]


def bilinear_sample(image: jax.Array, ys: jax.Array, xs: jax.Array,
                    mode: str = "nearest") -> jax.Array:
  """Samples `image` (H, W, C) at float positions ys, xs (any equal shape).

  Order-1 interpolation as `scipy.ndimage.map_coordinates(order=1)`: pixel
  centres sit at integer positions, neighbours outside the image come from
  the boundary `mode`.
  """
  h, w = image.shape[:2]
  y0, x0 = jnp.floor(ys), jnp.floor(xs)
  fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)

  def at(yi, xi):
    return image[_map_index_jnp(yi, h, mode), _map_index_jnp(xi, w, mode)]

  top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
  bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
  return top * (1 - fy) + bottom * fy


def _map_index_jnp(index: jax.Array, n: int, mode: str) -> jax.Array:
  if mode == "nearest":
    return jnp.clip(index, 0, n - 1)
  if mode == "reflect":
    index = jnp.mod(index, 2 * n)
    return jnp.where(index >= n, 2 * n - 1 - index, index)
  if mode == "mirror":
    if n == 1:
      return jnp.zeros_like(index)
    index = jnp.mod(index, 2 * n - 2)
    return jnp.where(index >= n, 2 * n - 2 - index, index)
  raise ValueError(f"Unknown boundary mode {mode!r}; expected {MODES}.")


def shift_edge(image: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
  """out[i, j] = image[i - dy, j - dx], edge pixels replicated (integer shift)."""
  h, w = image.shape[:2]
  rows = jnp.clip(jnp.arange(h) - dy, 0, h - 1)
  cols = jnp.clip(jnp.arange(w) - dx, 0, w - 1)
  return image[rows][:, cols]


def zoom_center(image: jax.Array, factor: float) -> jax.Array:
  """Zooms into the centre by `factor` >= 1, same output size, bilinear.

  The continuous version of imagecorruptions' `clipped_zoom` (crop the
  central 1/factor, `scipy.ndimage.zoom(order=1)` it back, trim).
  """
  h, w = image.shape[:2]
  ys = (np.arange(h) - (h - 1) / 2) / factor + (h - 1) / 2
  xs = (np.arange(w) - (w - 1) / 2) / factor + (w - 1) / 2
  return apply_rows_cols(image, _linear_matrix(ys, h), _linear_matrix(xs, w))


def _linear_matrix(positions: np.ndarray, n: int) -> np.ndarray:
  p = np.clip(positions, 0, n - 1)
  lo = np.floor(p).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  frac = p - lo
  out = np.zeros((len(p), n), np.float64)
  rows = np.arange(len(p))
  np.add.at(out, (rows, lo), 1 - frac)
  np.add.at(out, (rows, hi), frac)
  return out


def luminance(image: jax.Array) -> jax.Array:
  """(H, W, 1) grey: ITU-R 601 weights for RGB, the channel mean otherwise."""
  if image.shape[-1] == 3:
    return image @ jnp.asarray([0.299, 0.587, 0.114], image.dtype)[:, None]
  return image.mean(-1, keepdims=True)


def motion_blur(image: jax.Array, radius: int, sigma: float,
                angle_deg: jax.Array) -> jax.Array:
  """imagecorruptions' `_motion_blur`: a one-sided Gaussian trail.

  `2 * radius + 1` copies shifted along `angle_deg` (edge replicated),
  weighted by a half Gaussian of width `sigma`; shifts beyond the image are
  dropped, as the reference's early `break` does. `angle_deg` may be traced.
  """
  width = 2 * radius + 1
  weights = np.exp(-np.arange(width) ** 2 / (2.0 * sigma ** 2))
  weights = weights / weights.sum()
  theta = jnp.deg2rad(angle_deg)
  py, px = width * jnp.sin(theta), width * jnp.cos(theta)
  hypot = jnp.hypot(py, px)
  h, w = image.shape[:2]
  weights = jnp.asarray(weights, image.dtype)

  # A loop, not an unrolled sum: unrolled, XLA:CPU fused the 2r+1 gathers
  # into every consumer of the result and re-ran them per consumer element
  # (benchmarks/RESULTS.md, "Corruptions on CPU"). The loop's carry is
  # materialised.
  def add_copy(i, carry):
    out, alive = carry
    dy = -jnp.ceil(i * py / hypot - 0.5).astype(jnp.int32)
    dx = -jnp.ceil(i * px / hypot - 0.5).astype(jnp.int32)
    alive = alive & (jnp.abs(dy) < h) & (jnp.abs(dx) < w)
    out = out + jnp.where(alive, weights[i], 0.0) * shift_edge(image, dy, dx)
    return out, alive

  out, _ = jax.lax.fori_loop(0, width, add_copy,
                             (jnp.zeros_like(image), jnp.asarray(True)))
  return out


def plasma_fractal(key: jax.Array, mapsize: int, decay: float) -> jax.Array:
  """Diamond-square fractal (mapsize x mapsize, a power of 2) in [0, 1].

  The algorithm of the ImageNet-C fog: each level averages its four
  neighbours and adds uniform noise whose amplitude shrinks by `decay`.
  """
  if mapsize & (mapsize - 1):
    raise ValueError(f"plasma_fractal mapsize {mapsize} is not a power of 2.")
  grid = jnp.zeros((mapsize, mapsize), jnp.float32)
  step, wibble = mapsize, 100.0
  while step >= 2:
    half = step // 2
    key, k1, k2, k3 = jax.random.split(key, 4)

    def noisy_mean(total, k, amp=wibble):
      return total / 4 + amp * jax.random.uniform(k, total.shape, minval=-amp,
                                                  maxval=amp)

    corners = grid[0::step, 0::step]
    squares = corners + jnp.roll(corners, -1, axis=0)
    squares = squares + jnp.roll(squares, -1, axis=1)
    grid = grid.at[half::step, half::step].set(noisy_mean(squares, k1))
    centres = grid[half::step, half::step]
    left = centres + jnp.roll(centres, 1, axis=0)
    left = left + corners + jnp.roll(corners, -1, axis=1)
    grid = grid.at[0::step, half::step].set(noisy_mean(left, k2))
    top = centres + jnp.roll(centres, 1, axis=1)
    top = top + corners + jnp.roll(corners, -1, axis=0)
    grid = grid.at[half::step, 0::step].set(noisy_mean(top, k3))
    step, wibble = half, wibble / decay
  grid = grid - grid.min()
  return grid / grid.max()


def next_power_of_two(n: int) -> int:
  """The smallest power of two >= n (FFT sizes)."""
  return 1 << max(0, int(n - 1).bit_length())


def poisson(key: jax.Array, lam: jax.Array, exact_below: float = 12.0,
            terms: int = 40) -> jax.Array:
  """Poisson(lam) samples (float32), fast on every backend.

  `jax.random.poisson` runs a rejection loop that costs ~100 ms per 224 px
  RGB image on a CPU. Here: exact inversion of the CDF for lam below
  `exact_below` (a fixed `terms`-step scan: P(X > 40 | lam = 12) < 1e-9), and
  the Gaussian approximation round(lam + sqrt(lam) z) above it (skewness
  1/sqrt(lam) < 0.29 ignored), where pixel noise is indistinguishable.
  Each value takes one branch, so one uniform draw u serves both (z is
  Phi^-1(u)): random numbers are the cost on a CPU.
  """
  u = jax.random.uniform(key, lam.shape, minval=jnp.finfo(jnp.float32).tiny)
  small = jnp.minimum(lam, exact_below)
  p = jnp.exp(-small)
  cdf = p
  count = jnp.zeros_like(lam)
  for k in range(terms):
    count = count + (u > cdf)
    p = p * (small * (1.0 / (k + 1)))
    cdf = cdf + p
  z = jax.scipy.special.ndtri(u)
  approx = jnp.maximum(jnp.round(lam + jnp.sqrt(lam) * z), 0.0)
  return jnp.where(lam < exact_below, count, approx)
