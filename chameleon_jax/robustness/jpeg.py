"""Baseline JPEG compression round trip in JAX (lossy part only).

The loss of JPEG happens in quantising the 8x8 DCT coefficients (and in
chroma subsampling); the entropy coding after it is lossless. So a round trip
encode -> decode equals: colour transform, 4:2:0 chroma subsampling (colour
images), level shift, blockwise DCT-II, quantisation with the IJG tables scaled
by the quality factor, and the inverse of each step. This is what libjpeg
(behind PIL) computes, with its "fancy" chroma upsampling, up to its integer
DCT and rounding, so images differ from PIL's by a grey level or two; the blocking and ringing
artefacts, which the corruption is about, are the same. Runs batched on the
accelerator, where PIL's encoder is a per-image CPU call.

Grey images use the luminance table; images with other than 3 channels
compress every channel as luminance (as a grey JPEG per channel would).

On a CPU backend `jpeg_round_trip` is libjpeg itself (PIL, through a host
callback): there the batched DCT is slower than the codec it imitates
(benchmarks/RESULTS.md, "Corruptions on CPU"), and the codec is the exact
reference. `platform_dependent` picks the branch when
the computation is lowered, so one traced function serves both.
"""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from chameleon_jax.robustness import filters

# ITU-T T.81 Annex K tables (quality 50).
_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.float64).reshape(8, 8)
_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
], np.float64).reshape(8, 8)


def quant_table(base: np.ndarray, quality: int) -> np.ndarray:
  """IJG `jpeg_quality_scaling`: quality 1..100 -> table in [1, 255]."""
  if not 1 <= quality <= 100:
    raise ValueError(f"JPEG quality {quality} must be in 1..100.")
  scale = 5000 / quality if quality < 50 else 200 - 2 * quality
  return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


@functools.lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
  """Orthonormal 8-point DCT-II matrix D: coefficients = D @ block @ D.T."""
  k = np.arange(8)[:, None]
  n = np.arange(8)[None, :]
  d = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
  d[0] /= np.sqrt(2)
  return d


def _quantise_plane(plane: jax.Array, table: np.ndarray) -> jax.Array:
  """(H, W) level-shifted plane, H and W multiples of 8 -> JPEG-quantised."""
  h, w = plane.shape
  d = jnp.asarray(_dct_matrix(), plane.dtype)
  blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
  hi = jax.lax.Precision.HIGHEST
  coef = jnp.einsum("ki,abij,lj->abkl", d, blocks, d, precision=hi)
  q = jnp.asarray(table, plane.dtype)
  coef = jnp.round(coef / q) * q
  blocks = jnp.einsum("ki,abkl,lj->abij", d, coef, d, precision=hi)
  return blocks.transpose(0, 2, 1, 3).reshape(h, w)


@functools.lru_cache(maxsize=64)
def _fancy_upsample(n_out: int) -> np.ndarray:
  """libjpeg's "fancy" 2x chroma upsampling: a triangle filter, 3/4 + 1/4.

  Output 2i is 3/4 of input i and 1/4 of input i-1; output 2i+1 is 3/4 of
  input i and 1/4 of input i+1 (edges replicated).
  """
  n_in = n_out // 2
  out = np.zeros((n_out, n_in), np.float64)
  for i in range(n_in):
    out[2 * i, i] += 0.75
    out[2 * i, max(i - 1, 0)] += 0.25
    out[2 * i + 1, i] += 0.75
    out[2 * i + 1, min(i + 1, n_in - 1)] += 0.25
  return out


def _pad_to(plane: jax.Array, multiple: int) -> jax.Array:
  h, w = plane.shape
  return jnp.pad(plane, ((0, -h % multiple), (0, -w % multiple)), mode="edge")


def jpeg_round_trip(image: jax.Array, quality: int) -> jax.Array:
  """(H, W, C) float in [0, 1] -> the image after JPEG at `quality`.

  Pixels are rounded to 8 bits first (JPEG stores 8-bit samples) and the
  result is 8-bit as a decoder returns it, divided by 255: libjpeg's own
  round trip on CPU backends, `dct_round_trip` on the others.

  Raises:
    ValueError: `quality` outside 1..100.
  """
  quant_table(_LUMA, quality)  # validates quality while tracing
  pixels = jnp.round(jnp.clip(image, 0, 1) * 255).astype(jnp.uint8)
  out = jax.lax.platform_dependent(
      pixels, cpu=functools.partial(_libjpeg_callback, quality=quality),
      default=lambda p: jnp.round(dct_round_trip(p / 255.0, quality) * 255
                                  ).astype(jnp.uint8))
  return out.astype(image.dtype) / 255.0


def _libjpeg_callback(pixels: jax.Array, quality: int) -> jax.Array:
  return jax.pure_callback(
      functools.partial(libjpeg_round_trip, quality=quality),
      jax.ShapeDtypeStruct(pixels.shape, jnp.uint8), pixels,
      vmap_method="expand_dims")


def libjpeg_round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
  """(..., H, W, C) uint8 -> the same after PIL's JPEG encode and decode.

  PIL's defaults, as imagecorruptions calls it: 4:2:0 chroma subsampling for
  3 channels, a grey JPEG for 1, and a grey JPEG per channel otherwise.
  """
  pixels = np.asarray(pixels, np.uint8)
  shape = pixels.shape
  h, w, c = shape[-3:]
  flat = pixels.reshape(-1, h, w, c)
  if c not in (1, 3):
    flat = flat.transpose(0, 3, 1, 2).reshape(-1, h, w, 1)

  def one(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
      return np.asarray(decoded).reshape(image.shape)

  # One image after another: PIL holds the GIL while it encodes into a
  # BytesIO, and a thread pool measured no faster on 2 cores.
  out = np.stack([one(image) for image in flat])
  if c not in (1, 3):
    out = out.reshape(-1, c, h, w).transpose(0, 2, 3, 1)
  return out.reshape(shape)


def dct_round_trip(image: jax.Array, quality: int) -> jax.Array:
  """`jpeg_round_trip` as array math (any backend): see the module docstring."""
  h, w, c = image.shape
  x = jnp.round(jnp.clip(image, 0, 1) * 255)
  luma_q, chroma_q = quant_table(_LUMA, quality), quant_table(_CHROMA, quality)
  if c != 3:
    planes = [_quantise_plane(_pad_to(x[..., i], 8) - 128, luma_q)[:h, :w] + 128
              for i in range(c)]
    out = jnp.stack(planes, -1)
  else:
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    y = _quantise_plane(_pad_to(y, 8) - 128, luma_q)[:h, :w] + 128
    chroma = []
    for plane in (cb, cr):
      padded = _pad_to(plane, 16)
      ph, pw = padded.shape
      small = padded.reshape(ph // 2, 2, pw // 2, 2).mean((1, 3))  # 4:2:0
      small = _quantise_plane(small - 128, chroma_q) + 128
      up = filters.apply_rows_cols(small[..., None], _fancy_upsample(ph),
                                   _fancy_upsample(pw))[..., 0]
      chroma.append(up[:h, :w] - 128)
    cb, cr = chroma
    out = jnp.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr,
                     y + 1.772 * cb], -1)
  return jnp.clip(jnp.round(out), 0, 255) / 255.0
