"""Tests of the per-element transforms (medsr_jax.data.transforms) and the MS-GAN test pairs.

  .venv/bin/python -m pytest -q tests/test_transforms.py
"""

import pickle

import numpy as np
import pytest

from medsr_jax.data import degradation, pipeline, sources, transforms
from medsr_jax.errors import InputError


def _rng(seed=0):
  return np.random.default_rng(seed)


# ---------------------------------------------------------------- crops


@pytest.mark.parametrize('include_last,expected', [(True, {0, 1, 2}), (False, {0, 1})])
def test_random_crop_corner_range(include_last, expected):
  rng = _rng()
  tops = {transforms.random_crop_corner((6, 6), 4, rng, include_last=include_last)[0]
          for _ in range(200)}
  assert tops == expected


def test_random_crop_corner_full_size_and_errors():
  assert transforms.random_crop_corner((5, 7), (5, 7), _rng(), include_last=False) == (0, 0)
  with pytest.raises(InputError):
    transforms.random_crop_corner((5, 7), 6, _rng())
  with pytest.raises(InputError):
    transforms.random_crop_corner((5, 7), (0, 3), _rng())


def test_random_patch_pads_small_slices():
  image = _rng(1).random((3, 2, 1), dtype=np.float32)
  patch = transforms.random_patch(image, 4, _rng())
  np.testing.assert_array_equal(patch, np.pad(image, ((0, 1), (1, 1), (0, 0)), mode='edge'))


def test_random_patch_is_pad_corner_crop_with_the_same_draws():
  for shape, size, last in [((40, 30, 2), 16, True), ((40, 30, 1), (12, 30), False),
                            ((5, 9, 1), 8, True), ((8, 8, 3), 8, False)]:
    image = _rng(2).random(shape, dtype=np.float32)
    rng_a, rng_b = _rng(3), _rng(3)
    for _ in range(5):
      got = transforms.random_patch(image, size, rng_a, include_last=last)
      padded = transforms.pad_to_at_least(image, size)
      corner = transforms.random_crop_corner(padded.shape, size, rng_b, include_last=last)
      want = transforms.crop(padded, corner, size)
      assert got.flags.c_contiguous and got.dtype == np.float32
      np.testing.assert_array_equal(got, want)
    assert rng_a.random() == rng_b.random()


def test_fast_degradation_is_bit_identical_to_the_degradation_module():
  # `degrade_hwc_float32` / `resize_bicubic_hwc_float32` (the pipelines' per-element path) give
  # exactly `degradation.degrade` / `resize_bicubic`: same float64 products, same casts.
  rng = _rng(4)
  for (h, w, c), out in [((96, 96, 1), (24, 24)), ((96, 96, 2), (41, 41)),
                         ((50, 37, 4), (13, 29)), ((24, 24, 1), (40, 40)), ((9, 5, 3), (1, 2))]:
    hr = rng.random((h, w, c), dtype=np.float32)
    views = [hr, np.asfortranarray(hr), hr[::-1], hr.transpose(1, 0, 2).copy().transpose(1, 0, 2)]
    for x in views:
      want = degradation.resize_bicubic(x, out)
      got = transforms.resize_bicubic_hwc_float32(x, out)
      assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
      for blur in (False, True):
        for sigma in (0.0, 0.05):
          want = degradation.degrade(x, 1.0, blur=blur, noise_sigma=sigma, rng=_rng(5), lr_hw=out)
          got = transforms.degrade_hwc_float32(x, out, blur=blur, noise_sigma=sigma, rng=_rng(5))
          assert got.shape == want.shape and got.tobytes() == want.tobytes(), (out, blur, sigma)
  with pytest.raises(InputError, match='rng'):
    transforms.degrade_hwc_float32(hr, (4, 4), noise_sigma=0.1)
  # Other dtypes and layouts still go through `degradation.degrade`.
  synth = transforms.LrSynthesis(blur=True)
  hr64 = rng.random((20, 20), dtype=np.float64)
  np.testing.assert_array_equal(
      synth(hr64, (5, 5), None),
      degradation.degrade(hr64, 1, blur=True, lr_hw=(5, 5)).astype(np.float32))


# ---------------------------------------------------------------- lesion ROI


def _blob(shape=(240, 240), centre=(150, 70), radius=10):
  rows, cols = np.mgrid[:shape[0], :shape[1]]
  return (((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) <= radius ** 2).astype(np.uint8)


def test_lesion_centre_fuses_labels():
  label = np.zeros((10, 10), np.uint8)
  label[2, 3] = 1
  label[4, 7] = 4
  assert transforms.lesion_centre(label) == (3.0, 5.0)
  assert transforms.lesion_centre(np.zeros((4, 4), np.uint8)) is None


def test_roi_crop_centres_the_brats_roi_on_the_lesion():
  label = _blob() * 2
  image = _rng().random((240, 240, 4), dtype=np.float32)
  roi, roi_label = transforms.roi_crop(image, label, transforms.ROI_SIZES['brats'])
  assert roi.shape == (120, 120, 4) and roi_label.shape == (120, 120)
  np.testing.assert_array_equal(roi, image[150 - 60:150 + 60, 70 - 60:70 + 60])
  assert transforms.lesion_centre(roi_label) == (60.0, 60.0)  # pixel (h // 2, w // 2)


def test_roi_window_is_clamped_and_defaults_to_the_centre():
  assert transforms.roi_window((240, 240), 120, (5.0, 236.0)) == (0, 120)
  assert transforms.roi_window((240, 200), (160, 120), None) == (40, 40)
  with pytest.raises(InputError):
    transforms.roi_window((100, 100), 120, None)


def test_roi_crop_explicit_centre_and_padding():
  image = _rng().random((60, 50, 1), dtype=np.float32)
  roi, _ = transforms.roi_crop(image, None, 20, centre=(30.0, 10.0))
  np.testing.assert_array_equal(roi, image[20:40, 0:20])
  big, lab = transforms.roi_crop(image, np.ones((60, 50), np.uint8), 80)
  assert big.shape == (80, 80, 1) and lab.shape == (80, 80)
  assert lab.sum() == 60 * 50  # zero-padded label keeps all lesion pixels


# ---------------------------------------------------------------- channels


def test_select_channels_orders_by_name():
  image = np.stack([np.full((2, 2), v, np.float32) for v in range(4)], axis=-1)
  have = ['t1ce', 't1', 't2', 'flair']
  out = transforms.select_channels(image, have, ['flair', 't1ce'])
  np.testing.assert_array_equal(out[0, 0], [3, 0])
  np.testing.assert_array_equal(transforms.select_channels(image, have, ()), image)
  with pytest.raises(InputError, match='dwi'):
    transforms.select_channels(image, have, ['dwi'])
  with pytest.raises(InputError):
    transforms.select_channels(image[..., :3], have, ['t1'])


# ---------------------------------------------------------------- k-space noise


def test_kspace_noise_matches_its_definition():
  x = _rng(2).random((12, 10, 2))
  sigma = 0.3
  rng = _rng(7)
  noise = rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)
  expected = np.abs(np.fft.ifft2(np.fft.fft2(x, axes=(0, 1), norm='ortho') + sigma * noise,
                                 axes=(0, 1), norm='ortho'))
  got = transforms.add_kspace_noise(x, sigma, _rng(7))
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
  np.testing.assert_array_equal(transforms.add_kspace_noise(x, 0.0, _rng()), x)


@pytest.mark.parametrize('norm,scale', [('ortho', 1.0), ('backward', 1 / 64)])
def test_kspace_noise_sigma_convention(norm, scale):
  x = np.full((64, 64, 1), 0.5, np.float32)
  y = transforms.add_kspace_noise(x, 0.05, _rng(3), output='real', norm=norm)
  assert y.dtype == np.float32
  # 'real' is image-domain white noise of std sigma (ortho) or sigma / sqrt(H W) (backward).
  assert abs((y - x).std() / (0.05 * scale) - 1) < 0.05
  assert abs((y - x).mean()) < 0.05 * scale * 0.05


def test_kspace_noise_magnitude_is_rician():
  y = transforms.add_kspace_noise(np.zeros((128, 128)), 0.1, _rng(4))
  assert y.min() >= 0
  assert abs(y.mean() / (0.1 * np.sqrt(np.pi / 2)) - 1) < 0.03  # Rayleigh mean on zero signal


@pytest.mark.parametrize('kwargs', [dict(sigma=-1.0), dict(sigma=0.1, output='abs'),
                                    dict(sigma=0.1, norm='forward')])
def test_kspace_noise_rejects_bad_settings(kwargs):
  with pytest.raises(InputError):
    transforms.add_kspace_noise(np.zeros((4, 4)), rng=_rng(), **kwargs)


def test_lr_synthesis_order():
  hr = _rng(5).random((16, 16, 1), dtype=np.float32)
  synth = transforms.LrSynthesis(blur=True, noise_sigma=0.02, kspace_sigma=0.05)
  got = synth(hr, (4, 4), _rng(9))
  rng = _rng(9)
  expected = degradation.add_gaussian_noise(
      degradation.gaussian_blur_3x3(degradation.resize_bicubic(hr, (4, 4))), 0.02, rng)
  expected = transforms.add_kspace_noise(expected, 0.05, rng)
  np.testing.assert_allclose(got, expected, atol=1e-7)
  assert pickle.loads(pickle.dumps(synth)) == synth


def test_fixed_scale_pairs_with_kspace_noise():
  src = sources.ArraySliceSource(_rng(6).random((4, 40, 32, 1), dtype=np.float32))
  kwargs = dict(global_batch_size=4, lr_patch=6, scale=4, seed=3)
  clean = pipeline.make_train_dataset(src, **kwargs)[0]
  noisy = pipeline.make_train_dataset(src, kspace_sigma=0.05, **kwargs)[0]
  np.testing.assert_array_equal(clean['hr'], noisy['hr'])
  assert 0.02 < np.abs(noisy['lr'] - clean['lr']).mean() < 0.08


# ---------------------------------------------------------------- MS-GAN triples


def test_msgan_triple_shapes_and_values():
  image = _rng(8).random((240, 240, 1), dtype=np.float32)
  label = _blob(centre=(100, 130))
  triple = transforms.MsganTriple(transforms.ROI_SIZES['brats'], 4)
  out = triple({'image': image, 'label': label})
  hr = image[40:160, 70:190]
  np.testing.assert_array_equal(out['hr'], hr)
  np.testing.assert_allclose(out['hr2'], degradation.resize_bicubic(hr, (60, 60)), atol=1e-7)
  np.testing.assert_allclose(out['lr'], degradation.resize_bicubic(hr, (30, 30)), atol=1e-7)
  lge = transforms.MsganTriple(transforms.ROI_SIZES['lge_cmr'], 4)(image)
  assert (lge['lr'].shape, lge['hr2'].shape, lge['hr'].shape) == (
      (40, 30, 1), (80, 60, 1), (160, 120, 1))


def test_msgan_stream_is_seeded_and_noise_only_on_lr():
  images = _rng(9).random((3, 100, 100, 1), dtype=np.float32)

  class _Labelled:
    def __len__(self):
      return 3

    def __getitem__(self, i):
      return {'image': images[i], 'label': _blob((100, 100), (40 + 10 * i, 50))}

  triple = transforms.MsganTriple((40, 40), 4, transforms.LrSynthesis(kspace_sigma=0.05))
  a = pipeline.local_batches(pipeline.transformed_stream(_Labelled(), triple, 5),
                             global_batch_size=2)
  b = pipeline.local_batches(pipeline.transformed_stream(_Labelled(), triple, 5),
                             global_batch_size=2)
  for k in range(2):
    for key in ('lr', 'hr2', 'hr'):
      np.testing.assert_array_equal(a[k][key], b[k][key])
  clean = transforms.MsganTriple((40, 40), 4)
  x = a[0]
  assert x['lr'].shape == (2, 10, 10, 1) and x['hr2'].shape == (2, 20, 20, 1)
  for n in range(2):
    ref = clean({'image': x['hr'][n], 'label': None})
    np.testing.assert_allclose(x['hr2'][n], ref['hr2'], atol=1e-7)
    assert not np.allclose(x['lr'][n], ref['lr'], atol=1e-3)


def test_msgan_test_pairs():
  images = _rng(10).random((2, 240, 240, 1), dtype=np.float32)
  labels = np.stack([_blob(centre=(100, 100)), _blob(centre=(200, 30))])
  lr, hr = pipeline.msgan_test_pairs(images, labels, (120, 120))
  assert lr.shape == (2, 30, 30, 1) and hr.shape == (2, 120, 120, 1)
  np.testing.assert_array_equal(hr[0], images[0, 40:160, 40:160])
  np.testing.assert_array_equal(hr[1], images[1, 120:240, 0:120])  # clamped
  np.testing.assert_allclose(lr, degradation.resize_bicubic(hr, (30, 30)), atol=1e-7)
  _, hr_c = pipeline.msgan_test_pairs(images, None, (120, 120), centres=[(60, 60), (60, 60)])
  np.testing.assert_array_equal(hr_c[0], images[0, :120, :120])
