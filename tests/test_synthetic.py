import numpy as np

from chameleon_jax.data import synthetic


def test_deterministic_from_seed():
  spec = synthetic.SyntheticSpec(num_images=5, seed=11)
  a = list(synthetic.generate(spec))
  b = list(synthetic.generate(spec))
  for (ia, xa, ma), (ib, xb, mb) in zip(a, b):
    assert ia == ib and np.array_equal(xa, xb) and np.array_equal(ma, mb)
  c = synthetic.render(synthetic.SyntheticSpec(seed=12), 0)
  assert not np.array_equal(c[0], a[0][1])


def test_realistic_imbalance_and_classes():
  spec = synthetic.SyntheticSpec(num_images=400, seed=0,
                                 max_defects_per_image=1)
  fractions, classes = [], set()
  for _, image, mask in synthetic.generate(spec):
    assert image.dtype == np.uint8 and image.shape == (96, 96, 1)
    fractions.append((mask > 0).mean())
    classes |= set(np.unique(mask).tolist())
  fractions = np.array(fractions)
  assert 0.63 < np.mean(fractions == 0) < 0.77  # ~70% defect-free.
  defect = fractions[fractions > 0]
  # One defect per image: its area lies in 0.1%-2% of the image (the crack
  # pen and blob rasterisation round areas, so allow a small margin).
  assert defect.min() >= 0.0005 and defect.max() <= 0.03
  assert np.median(defect) < 0.01
  assert classes == {0, 1, 2, 3}


def test_variable_sizes_and_colour():
  spec = synthetic.SyntheticSpec(num_images=20, channels=3, min_size=(40, 50),
                                 max_size=(80, 120))
  shapes = {image.shape for _, image, _ in synthetic.generate(spec)}
  assert len(shapes) > 5
  for h, w, c in shapes:
    assert 40 <= h <= 80 and 50 <= w <= 120 and c == 3


def test_binary_source_merges_defect_classes_at_a_fixed_fraction():
  from chameleon_jax.data import sources
  kwargs = dict(num_images=60, seed=3, min_defect_fraction=0.005,
                max_defect_fraction=0.005, max_defects_per_image=1)
  info, items = sources.synthetic_source(binary=True, **kwargs)
  _, multi = sources.synthetic_source(**kwargs)
  assert info.class_names == ("background", "defect")
  fractions = []
  for item, reference in zip(items, multi):
    assert np.array_equal(item.mask, (reference.mask > 0).astype(np.uint8))
    assert set(np.unique(item.mask)) <= {0, 1}
    if item.mask.any():
      fractions.append(item.mask.mean())
  # Every defect image holds one defect of ~0.5% of its pixels (rasterised).
  assert fractions and 0.003 < np.median(fractions) < 0.008
