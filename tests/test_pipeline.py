"""Grain pipeline: shapes, determinism, exact resume, crops, eval padding."""

import numpy as np
import pytest

from chameleon_jax.data import pipeline, transforms

AUG = transforms.AugmentConfig(crop_size=(16, 16))


def _iter(ds, **kwargs):
  args = dict(split="train", local_batch_size=4, seed=0, size=(32, 32),
              size_policy="resize", augment=AUG)
  args.update(kwargs)
  return pipeline.train_iterator(ds, **args)


def test_batches_have_fixed_shape_and_range(tiny_dataset):
  batch = next(_iter(tiny_dataset))
  assert batch["image"].shape == (4, 16, 16, 1)
  assert batch["image"].dtype == np.float32
  assert batch["mask"].shape == (4, 16, 16) and batch["mask"].dtype == np.int32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_same_seed_same_batches_and_exact_resume(tiny_dataset):
  a = _iter(tiny_dataset)
  first = [next(a) for _ in range(30)]  # Crosses an epoch boundary (84 items).
  b = _iter(tiny_dataset)
  for _ in range(17):
    next(b)
  state = b.get_state()
  c = _iter(tiny_dataset)
  c.set_state(state)
  for expected in first[17:]:
    got = next(c)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["mask"], expected["mask"])
  other = next(_iter(tiny_dataset, seed=1))
  assert not np.array_equal(other["image"], first[0]["image"])


def test_worker_processes_give_the_same_batches(tiny_dataset):
  plain = _iter(tiny_dataset)
  workers = _iter(tiny_dataset, num_workers=2)
  for _ in range(5):
    np.testing.assert_array_equal(next(plain)["image"], next(workers)["image"])


def test_foreground_crops_are_centred_on_defects(tiny_dataset):
  def fg_share(fraction):
    aug = transforms.AugmentConfig(crop_size=(8, 8), flip=False,
                                   rotate90=False,
                                   foreground_crop_fraction=fraction)
    it = _iter(tiny_dataset, augment=aug, local_batch_size=8)
    masks = np.concatenate([next(it)["mask"] for _ in range(40)])
    return np.mean([(m > 0).any() for m in masks])
  # About 30% of images have defects; forced crops land on them.
  assert fg_share(1.0) > fg_share(0.0) + 0.1


def test_processes_read_their_rows_of_the_same_global_batch(tiny_dataset):
  single = _iter(tiny_dataset, local_batch_size=8)
  parts = [_iter(tiny_dataset, local_batch_size=4, process_index=p,
                 process_count=2) for p in range(2)]
  for _ in range(12):  # Crosses an epoch boundary.
    expected = next(single)
    got = [next(part) for part in parts]
    for key in ("image", "mask"):
      np.testing.assert_array_equal(
          np.concatenate([g[key] for g in got]), expected[key])


def test_defect_image_fraction_is_exact_per_batch(tiny_dataset):
  items = tiny_dataset.items("train")
  defect_ids = {i for i, a in enumerate(items) if a["foreground_fraction"] > 0}
  none = transforms.AugmentConfig(crop_size=None, flip=False, rotate90=False,
                                  brightness=0, contrast=0, noise_std=0)
  it = _iter(tiny_dataset, local_batch_size=8, augment=none,
             defect_image_fraction=0.5)
  for _ in range(10):
    batch = next(it)
    has_defect = [(m > 0).any() for m in batch["mask"]]
    assert has_defect == [True] * 4 + [False] * 4
  # Two processes together still see the same global batches.
  parts = [_iter(tiny_dataset, local_batch_size=4, augment=none,
                 defect_image_fraction=0.5, process_index=p, process_count=2)
           for p in range(2)]
  single = _iter(tiny_dataset, local_batch_size=8, augment=none,
                 defect_image_fraction=0.5)
  for _ in range(3):
    np.testing.assert_array_equal(
        np.concatenate([next(p)["image"] for p in parts]), next(single)["image"])
  assert len(defect_ids) > 4
  with pytest.raises(ValueError, match="must be in"):
    _iter(tiny_dataset, defect_image_fraction=1.5)


def test_defect_class_groups_serve_the_rarest_class():
  items = [{"foreground_fraction": 0.0, "classes_present": []},
           {"foreground_fraction": 0.1, "classes_present": [1]},
           {"foreground_fraction": 0.1, "classes_present": [1]},
           {"foreground_fraction": 0.1, "classes_present": [1, 2]},
           {"foreground_fraction": 0.1, "classes_present": [3]},
           {"foreground_fraction": 0.1, "classes_present": [1, 3]}]
  # Class 1 is in 4 images, 3 in 2, 2 in 1: image 3 serves 2, image 5 serves 3.
  assert pipeline.defect_class_groups(items) == {1: [1, 2], 2: [3], 3: [4, 5]}


def test_defect_class_balance_takes_each_class_in_turn(tiny_dataset):
  groups = pipeline.defect_class_groups(tiny_dataset.items("train"))
  sizes = sorted(len(g) for g in groups.values())
  assert len(groups) == 3 and sizes[0] < sizes[-1]  # Unequal classes.
  counts = {c: 0 for c in groups}
  for classes in (a["classes_present"] for a in tiny_dataset.items("train")):
    for c in classes:
      counts[c] += 1
  none = transforms.AugmentConfig(crop_size=None, flip=False, rotate90=False,
                                  brightness=0, contrast=0, noise_std=0)

  def group_counts(balance):
    it = _iter(tiny_dataset, local_batch_size=8, augment=none,
               defect_image_fraction=0.5, defect_class_balance=balance)
    seen = {c: 0 for c in groups}
    for _ in range(15):  # 60 defect rows: 2 epochs of the largest group.
      for mask in next(it)["mask"][:4]:
        present = np.unique(mask[mask > 0]).tolist()
        seen[min(present, key=lambda c: (counts[c], c))] += 1
    return seen

  assert list(group_counts(True).values()) == [20, 20, 20]
  assert max(group_counts(False).values()) > 20  # Proportional to sizes.
  with pytest.raises(ValueError, match="defect_image_fraction"):
    _iter(tiny_dataset, defect_class_balance=True)


def test_eval_batches_pad_with_zero_weight(tiny_dataset):
  n = tiny_dataset.num_examples("val")
  batches = list(pipeline.eval_batches(tiny_dataset, split="val",
                                       local_batch_size=8, size=(32, 32),
                                       size_policy="pad"))
  weights = np.concatenate([b["weight"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  assert weights.sum() == n and len(weights) == 8 * -(-n // 8)
  assert sorted(index[weights > 0]) == list(range(n))
  assert (batches[-1]["mask"][batches[-1]["weight"] == 0] == 255).all()


@pytest.mark.parametrize("policy", transforms.SIZE_POLICIES)
def test_size_policies(policy):
  image = np.arange(40 * 60, dtype=np.uint8).reshape(40, 60, 1)
  mask = (np.arange(40 * 60).reshape(40, 60) % 3).astype(np.uint8)
  x, m = transforms.fit_size(image, mask, (32, 32), policy)
  assert x.shape == (32, 32, 1) and m.shape == (32, 32)
  if policy == "pad":  # Aspect kept: 40x60 -> 21x32, then padded (ignored).
    assert (m[21:] == transforms.IGNORE_INDEX).all()
    assert (m[:21] != transforms.IGNORE_INDEX).all()
    # Edge replication, no artificial black frame next to the image.
    np.testing.assert_array_equal(x[21:], np.broadcast_to(x[20], x[21:].shape))
  if policy == "crop":  # Centre crop keeps pixels exactly.
    np.testing.assert_array_equal(x[:, :, 0], image[4:36, 14:46, 0])
  assert set(np.unique(m)) <= {0, 1, 2, transforms.IGNORE_INDEX}
  with pytest.raises(ValueError, match="Unknown size policy"):
    transforms.fit_size(image, mask, (32, 32), "stretch")
