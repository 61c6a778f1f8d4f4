"""Tests of the embedded Colin27 sample and the generic volume helpers.

Run: .venv/bin/python -m pytest -q tests/test_sample.py
"""

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from data_prep import make_sample
from medsr_jax.data import sample
from medsr_jax.data import volumes
from medsr_jax.errors import InputError

MAX_SAMPLE_BYTES = 10 * 1024 * 1024


# ---------------------------------------------------------------- the shipped files


def test_sample_files_exist_and_are_small():
  names = [sample.T1_FILE, sample.TISSUE_FILE, "NOTICE.md"]
  for name in names:
    assert (sample.SAMPLE_DIR / name).is_file(), name
  total = sum(p.stat().st_size for p in sample.SAMPLE_DIR.rglob("*") if p.is_file())
  assert total < MAX_SAMPLE_BYTES, total


def test_sample_volumes_share_a_grid_and_labels_are_fast_convention():
  t1 = nib.load(str(sample.SAMPLE_DIR / sample.T1_FILE))
  lab = nib.load(str(sample.SAMPLE_DIR / sample.TISSUE_FILE))
  assert t1.shape == lab.shape == (181, 217, 177)
  np.testing.assert_allclose(t1.affine, lab.affine)
  assert t1.get_data_dtype() == np.uint8  # The original intensities, not rescaled.
  labels = np.asanyarray(lab.dataobj)
  assert labels.dtype == np.uint8
  assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
  # Tissue classes are ordered by T1 brightness: CSF < GM < WM.
  data = np.asanyarray(t1.dataobj).astype(np.float64)
  means = [data[labels == c].mean() for c in (1, 2, 3)]
  assert means[0] < means[1] < means[2], means


# ---------------------------------------------------------------- load_sample


@pytest.fixture(scope="module")
def splits():
  return sample.load_sample()


def test_load_sample_shapes_dtypes_ranges(splits):
  assert set(splits) == {"train", "val", "test"}
  counts = {}
  for name, s in splits.items():
    assert isinstance(s, sample.SliceSet)
    n = len(s)
    counts[name] = n
    assert n > 0, name
    assert s.images.shape == (n, 160, 128, 1) and s.images.dtype == np.float32
    assert s.images.min() >= 0.0 and s.images.max() <= 1.0
    assert s.labels.shape == (n, 160, 128) and s.labels.dtype == np.uint8
    assert set(np.unique(s.labels).tolist()) <= {0, 1, 2, 3}
    assert s.slice_index.shape == (n,) and np.issubdtype(s.slice_index.dtype, np.integer)
    assert np.all(np.diff(s.slice_index) > 0)
    assert s.subject == "colin27"
  print("slice counts per split:", counts)
  total = sum(counts.values())
  assert 0.1 * total <= counts["test"] <= 0.3 * total
  assert counts["val"] == sample.VAL_SLICES
  assert counts["train"] > counts["test"]
  # The normalisation is over all kept slices, so 0 and 1 are reached in some split.
  assert min(s.images.min() for s in splits.values()) == 0.0
  assert max(s.images.max() for s in splits.values()) > 0.9


def test_splits_are_disjoint_with_gap(splits):
  names = list(splits)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      ia, ib = splits[a].slice_index, splits[b].slice_index
      assert not set(ia.tolist()) & set(ib.tolist()), (a, b)
      min_distance = np.abs(ia[:, None] - ib[None, :]).min()
      assert min_distance > sample.GAP, (a, b, min_distance)
  # Test is one contiguous central slab; val is one contiguous slab.
  for name in ("test", "val"):
    assert np.all(np.diff(splits[name].slice_index) == 1), name


def test_kept_slices_have_enough_brain(splits):
  for s in splits.values():
    # The rule is on the uncropped slice; the crop only removes background, so the fraction of
    # the (smaller) cropped slice can only be higher.
    assert np.all((s.labels > 0).mean(axis=(1, 2)) >= sample.MIN_BRAIN_FRACTION)


def test_load_sample_is_cached_readonly_and_returns_fresh_dicts(splits):
  again = sample.load_sample((160, 128))
  assert again is not splits and again["train"] is splits["train"]
  with pytest.raises(ValueError):
    again["train"].images[0, 0, 0, 0] = 1.0
  with pytest.raises(dataclasses.FrozenInstanceError):
    again["train"].subject = "x"


def test_load_sample_other_crop_keeps_the_split(splits):
  big = sample.load_sample((240, 200))  # Larger than the 217x181 slices: edge-padded.
  for name in splits:
    np.testing.assert_array_equal(big[name].slice_index, splits[name].slice_index)
    assert big[name].images.shape[1:] == (240, 200, 1)
  # Same pixels: the 217x181 slice sits at (11, 9) in the padded 240x200 one, and the 160x128
  # crop starts at (28, 26) of the 217x181 slice.
  top, left = 11 + 28, 9 + 26
  np.testing.assert_array_equal(big["val"].images[:, top:top + 160, left:left + 128],
                                splits["val"].images)


@pytest.mark.parametrize("bad", [(0, 128), (160,), "ab", (-1, 5)])
def test_load_sample_bad_crop(bad):
  with pytest.raises(InputError):
    sample.load_sample(bad)


def test_split_slabs_layout():
  slabs = sample.split_slabs(range(100, 200))
  assert slabs["test"].tolist() == list(range(140, 160))
  assert slabs["val"].tolist() == list(range(162, 170))  # 160, 161 unused.
  assert slabs["train"].tolist() == list(range(100, 138)) + list(range(172, 200))
  with pytest.raises(InputError):
    sample.split_slabs(range(5))


# ---------------------------------------------------------------- volumes helpers


def test_axial_slices_orientation():
  vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (X, Y, Z)
  s = volumes.axial_slices(vol)
  assert s.shape == (4, 3, 2)
  for k in range(4):
    np.testing.assert_array_equal(s[k], vol[:, :, k].T)
  # The reference's reading of axis 2: np.swapaxes(vol, 0, 2).
  np.testing.assert_array_equal(s, np.swapaxes(vol, 0, 2))
  # 4-D (X, Y, Z, 1) is squeezed.
  np.testing.assert_array_equal(volumes.axial_slices(vol[..., None]), s)
  # Other axes: move to the front, transpose the in-plane pair.
  s0 = volumes.axial_slices(vol, axis=0)
  assert s0.shape == (2, 4, 3)
  np.testing.assert_array_equal(s0[1], vol[1].T)
  s1 = volumes.axial_slices(vol, axis=1)
  np.testing.assert_array_equal(s1[2], vol[:, 2, :].T)


def test_axial_slices_bad_input():
  with pytest.raises(InputError):
    volumes.axial_slices(np.zeros((2, 3)))
  with pytest.raises(InputError):
    volumes.axial_slices(np.zeros((2, 3, 4, 2)))
  with pytest.raises(InputError):
    volumes.axial_slices(np.zeros((2, 3, 4)), axis=3)


def test_minmax_normalise():
  v = np.array([[[2.0, 4.0], [6.0, 10.0]]])
  out = volumes.minmax_normalise(v)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, [[[0.0, 0.25], [0.5, 1.0]]])
  out = volumes.minmax_normalise(np.array([3, 250], dtype=np.uint8))
  np.testing.assert_array_equal(out, [0.0, 1.0])
  with pytest.raises(InputError, match="constant"):
    volumes.minmax_normalise(np.full((3, 4, 5), 7.0))
  with pytest.raises(InputError):
    volumes.minmax_normalise(np.zeros((0, 4, 4)))
  with pytest.raises(InputError):
    volumes.minmax_normalise(np.array([0.0, np.nan, 1.0]))


def test_nonempty_slice_mask():
  s = np.zeros((3, 4, 4))
  s[1, 0, 0] = 5
  s[2] = 10
  np.testing.assert_array_equal(volumes.nonempty_slice_mask(s), [False, True, True])
  np.testing.assert_array_equal(volumes.nonempty_slice_mask(s, threshold=100),
                                [False, False, True])


def test_margin_crop():
  s = np.arange(2 * 208 * 176).reshape(2, 208, 176)
  out = volumes.margin_crop(s, (24, 24))
  assert out.shape == (2, 160, 128)
  np.testing.assert_array_equal(out[1], s[1][24:-24, 24:-24])
  assert volumes.margin_crop(s, (14, 16)).shape == (2, 180, 144)
  assert volumes.margin_crop(s[..., None], (14, 16)).shape == (2, 180, 144, 1)
  np.testing.assert_array_equal(volumes.margin_crop(s, (0, 8)), s[:, :, 8:-8])
  with pytest.raises(InputError):
    volumes.margin_crop(s, (104, 0))
  with pytest.raises(InputError):
    volumes.margin_crop(s, (-1, 0))


def test_center_crop_and_padding():
  s = np.arange(2 * 6 * 5).reshape(2, 6, 5)
  out = volumes.center_crop(s, (4, 3))
  assert out.shape == (2, 4, 3)
  np.testing.assert_array_equal(out, s[:, 1:5, 1:4])
  out = volumes.center_crop(s[..., None], (4, 3))
  assert out.shape == (2, 4, 3, 1)
  # Larger than the slice: edge-padded, centred (odd extra row/column at the bottom/right).
  img = np.array([[[1, 2], [3, 4]]])
  out = volumes.center_crop(img, (4, 5))
  expected = np.array([[1, 1, 2, 2, 2],
                       [1, 1, 2, 2, 2],
                       [3, 3, 4, 4, 4],
                       [3, 3, 4, 4, 4]])
  np.testing.assert_array_equal(out[0], expected)
  # Mixed: pad one axis, crop the other.
  out = volumes.center_crop(s, (8, 3))
  assert out.shape == (2, 8, 3)
  np.testing.assert_array_equal(out[:, 1:7], s[:, :, 1:4])
  np.testing.assert_array_equal(out[:, 0], s[:, 0, 1:4])
  with pytest.raises(InputError):
    volumes.center_crop(s, (0, 3))


# ---------------------------------------------------------------- make_sample


def test_kmeans_1d_and_classify_on_synthetic_volume():
  rng = np.random.default_rng(0)
  truth = rng.integers(1, 4, size=(12, 10, 8))
  t1 = np.choose(truth - 1, [30, 90, 150]).astype(np.uint8)
  t1 = (t1 + rng.integers(-5, 6, size=t1.shape)).astype(np.uint8)
  brain = np.ones(t1.shape, bool)
  brain[:2] = False
  labels, centres = make_sample.classify_tissue(t1, brain)
  np.testing.assert_allclose(centres, [30, 90, 150], atol=2)
  np.testing.assert_array_equal(labels[2:], truth[2:])
  assert np.all(labels[:2] == 0)
  with pytest.raises(InputError):
    make_sample.classify_tissue(t1, np.zeros_like(brain))


def test_make_sample_end_to_end_on_synthetic_files(tmp_path):
  rng = np.random.default_rng(1)
  shape = (20, 24, 16)
  t1 = rng.integers(0, 60, size=shape).astype(np.uint8)
  bet = np.zeros(shape, np.uint8)
  bet[4:16, 4:20, 2:12] = 1
  t1[bet > 0] = rng.choice([40, 100, 160], size=int(bet.sum())).astype(np.uint8)
  t1[:, :, 13:] = 0  # All-zero top and bottom slices are dropped.
  t1[:, :, :1] = 0
  affine = np.diag([1.0, 1.0, 1.0, 1.0])
  affine[:3, 3] = [-10, -12, -8]
  nib.save(nib.Nifti1Image(t1, affine), str(tmp_path / "ch2.nii.gz"))
  nib.save(nib.Nifti1Image(bet, affine), str(tmp_path / "ch2bet.nii.gz"))
  out = tmp_path / "out"
  make_sample.main([f"--src={tmp_path / 'ch2.nii.gz'}", f"--out={out}"])
  first = [(out / n).read_bytes() for n in (make_sample.T1_NAME, make_sample.TISSUE_NAME)]
  make_sample.main([f"--src={tmp_path / 'ch2.nii.gz'}", f"--out={out}"])
  second = [(out / n).read_bytes() for n in (make_sample.T1_NAME, make_sample.TISSUE_NAME)]
  assert first == second  # Byte-for-byte deterministic.
  t1_out = nib.load(str(out / make_sample.T1_NAME))
  lab_out = nib.load(str(out / make_sample.TISSUE_NAME))
  assert t1_out.shape == lab_out.shape == (20, 24, 12)
  np.testing.assert_array_equal(np.asanyarray(t1_out.dataobj), t1[:, :, 1:13])
  assert t1_out.get_data_dtype() == np.uint8
  shifted = affine.copy()
  shifted[2, 3] += 1  # The first kept slice was slice 1.
  np.testing.assert_allclose(t1_out.affine, shifted)
  np.testing.assert_allclose(lab_out.affine, shifted)
  labels = np.asanyarray(lab_out.dataobj)
  kept_t1, kept_bet = t1[:, :, 1:13], bet[:, :, 1:13]
  expected = np.where(kept_bet > 0, np.searchsorted([40, 100, 160], kept_t1) + 1, 0)
  np.testing.assert_array_equal(labels, expected)


def test_make_sample_missing_source(tmp_path):
  with pytest.raises(InputError, match="no such file"):
    make_sample.main([f"--src={tmp_path / 'nope.nii.gz'}", f"--out={tmp_path}"])
