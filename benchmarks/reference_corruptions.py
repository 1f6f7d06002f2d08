"""Runs the reference `imagecorruptions` (1.1.2) on given images: PSNR and cost.

Not part of the toolkit: it runs in a separate virtual environment that holds
the reference package, because the package (2020) pins nothing and needs
OpenCV and scikit-image. Set one up once:

  python3.11 -m venv /tmp/refvenv
  /tmp/refvenv/bin/pip install --no-deps imagecorruptions==1.1.2
  /tmp/refvenv/bin/pip install numpy==2.4.6 scipy==1.17.1 pillow==13.0.0 \
      scikit-image==0.26.0 opencv-python-headless==5.0.0.93

Two shims adapt the 2020 code to today's NumPy/scikit-image without changing
what it computes: `np.float_` (removed in NumPy 2) and skimage's
`multichannel=True` (now `channel_axis=-1`).

  /tmp/refvenv/bin/python benchmarks/reference_corruptions.py IMAGES.npy OUT.json [NAME...]

IMAGES.npy: (N, H, W, 3) uint8. OUT.json: {name: {"ms_per_image": float,
"psnr": [5 floats]}}; `benchmarks/robustness.py` calls this itself.
"""

import json
import sys
import time

import numpy as np

np.float_ = np.float64  # NumPy 2 removed the alias the package still uses.

import skimage.filters  # noqa: E402

_gaussian = skimage.filters.gaussian


def _gaussian_compat(image, *args, multichannel=None, **kwargs):
  if multichannel:
    kwargs["channel_axis"] = -1
  return _gaussian(image, *args, **kwargs)


skimage.filters.gaussian = _gaussian_compat

from imagecorruptions import corrupt, get_corruption_names  # noqa: E402
import imagecorruptions.corruptions as _impl  # noqa: E402

_impl.gaussian = _gaussian_compat


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def main(images_path: str, out_path: str, *names: str) -> None:
  images = np.load(images_path)
  np.random.seed(0)
  results = {}
  for name in names or get_corruption_names("all"):
    values, seconds = [], 0.0
    for severity in range(1, 6):
      scores = []
      for image in images:
        start = time.perf_counter()
        out = np.uint8(corrupt(image, severity=severity, corruption_name=name))
        seconds += time.perf_counter() - start
        scores.append(psnr(image, out))
      values.append(float(np.mean(scores)))
    results[name] = {"ms_per_image": 1e3 * seconds / (5 * len(images)),
                     "psnr": values}
    print(f"{name:18s} {results[name]['ms_per_image']:8.2f} ms  PSNR "
          + " ".join(f"{v:5.1f}" for v in values), file=sys.stderr)
  with open(out_path, "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main(*sys.argv[1:])
