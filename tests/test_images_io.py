"""Tests for medsr_jax.io.images: readers, writers, affine scaling, atomic writes, validation.

  .venv/bin/python -m pytest -q tests/test_images_io.py
"""

import os

import nibabel as nib
import numpy as np
from PIL import Image as PILImage
import pytest

from medsr_jax.errors import InputError
from medsr_jax.io import images


def _leftovers(directory):
  return sorted(p.name for p in directory.iterdir() if '.tmp' in p.name)


def _nifti(path, data, affine=None, dtype=None, qcode=1, scode=2):
  affine = np.array([[0., -1.5, 0., 20.], [2., 0., 0., -30.], [0., 0., 3., 5.], [0., 0., 0., 1.]]
                    ) if affine is None else affine
  img = nib.Nifti1Image(data, affine)
  if dtype is not None:
    img.set_data_dtype(dtype)
  img.set_qform(affine, code=qcode)
  img.set_sform(affine, code=scode)
  img.to_filename(str(path))
  return affine


# ------------------------------------------------------------------------------------------------
# PNG


@pytest.mark.parametrize('dtype,depth', [(np.uint8, 8), (np.uint16, 16)])
def test_png_round_trip_keeps_bit_depth(tmp_path, dtype, depth):
  arr = (np.arange(20).reshape(4, 5) * (3 if depth == 8 else 3000)).astype(dtype)
  PILImage.fromarray(arr).save(tmp_path / 'a.png')
  img = images.read_image(str(tmp_path / 'a.png'))
  assert img.kind == 'png' and img.bit_depth == depth and img.data.dtype == np.float64
  np.testing.assert_array_equal(img.data, arr.astype(np.float64))

  top = np.iinfo(dtype).max
  out = np.full((8, 10), 7.4)
  out[0, 0], out[0, 1], out[0, 2] = -5.0, top + 100.0, 2.6
  images.write_image(str(tmp_path / 'b.png'), out, like=img, zoom_factors=(2, 2))
  back = np.asarray(PILImage.open(tmp_path / 'b.png'))
  assert back.dtype == dtype and back.shape == (8, 10)
  assert back[0, 0] == 0 and back[0, 1] == top and back[0, 2] == 3 and back[1, 1] == 7
  assert _leftovers(tmp_path) == []


def test_png_rgb_with_equal_channels_is_grayscale(tmp_path):
  gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
  PILImage.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / 'rgb.png')
  img = images.read_image(str(tmp_path / 'rgb.png'))
  np.testing.assert_array_equal(img.data, gray)
  assert img.bit_depth == 8


def test_png_colour_is_rejected(tmp_path):
  rgb = np.zeros((3, 4, 3), np.uint8)
  rgb[..., 0] = 200
  rgb[0, 0] = 5
  PILImage.fromarray(rgb).save(tmp_path / 'colour.png')
  with pytest.raises(InputError, match=r'colour\.png.*colour PNG'):
    images.read_image(str(tmp_path / 'colour.png'))


# ------------------------------------------------------------------------------------------------
# .npy


def test_npy_round_trip_float32(tmp_path):
  arr = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float64)
  np.save(tmp_path / 'a.npy', arr)
  img = images.read_image(str(tmp_path / 'a.npy'))
  assert img.kind == 'npy' and img.data.shape == (5, 6)
  images.write_image(str(tmp_path / 'b.npy'), np.ones((10, 12)) * 1.5, like=img,
                     zoom_factors=(2, 2))
  back = np.load(tmp_path / 'b.npy')
  assert back.dtype == np.float32 and back.shape == (10, 12) and back[0, 0] == 1.5


def test_npy_object_array_is_never_unpickled(tmp_path):
  np.save(tmp_path / 'obj.npy', np.array([{'a': 1}, None], dtype=object), allow_pickle=True)
  with pytest.raises(InputError, match=r'obj\.npy: cannot read'):
    images.read_image(str(tmp_path / 'obj.npy'))


# ------------------------------------------------------------------------------------------------
# NIfTI


def test_scaled_affine_overlays_the_input():
  a = np.array([[0., -1.5, 0.2, 20.], [2., 0., 0., -30.], [0., 0.1, 3., 5.], [0., 0., 0., 1.]])
  s = 4
  new = images.scaled_affine(a, (s, s, 1))
  for i in range(3):  # the s new voxels of old voxel i average to old voxel i's centre
    idx = np.array([[s * i + k, s * i + k, 2, 1] for k in range(s)], dtype=float)
    mean_new = (new @ idx.T).mean(axis=1)
    old = a @ np.array([i, i, 2, 1.])
    np.testing.assert_allclose(mean_new, old, atol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0),
                             np.linalg.norm(a[:3, :3], axis=0) / [s, s, 1])


def test_nifti_4d_int16_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  vol = rng.integers(-100, 900, size=(6, 5, 3, 1)).astype(np.int16)
  affine = _nifti(tmp_path / 'v.nii.gz', vol)
  img = images.read_image(str(tmp_path / 'v.nii.gz'))
  assert img.kind == 'nifti' and img.data.shape == (6, 5, 3) and img.disk_shape == (6, 5, 3, 1)
  assert img.dtype == np.int16
  np.testing.assert_array_equal(img.data, vol[..., 0])

  out = np.full((12, 10, 3), 40000.0)  # above int16: clipped
  out[0, 0, 0] = 12.6
  images.write_image(str(tmp_path / 'o.nii.gz'), out, like=img, zoom_factors=(2, 2, 1))
  o = nib.load(tmp_path / 'o.nii.gz')
  assert o.shape == (12, 10, 3, 1) and o.get_data_dtype() == np.int16
  data = np.asarray(o.dataobj)
  assert data[0, 0, 0, 0] == 13 and data[1, 1, 1, 0] == 32767
  np.testing.assert_allclose(o.header.get_zooms(), (1.0, 0.75, 3.0, 1.0))
  want = images.scaled_affine(affine, (2, 2, 1))
  q, qcode = o.header.get_qform(coded=True)
  s, scode = o.header.get_sform(coded=True)
  assert (int(qcode), int(scode)) == (1, 2)
  np.testing.assert_allclose(q, want, atol=1e-5)
  np.testing.assert_allclose(s, want, atol=1e-5)
  assert _leftovers(tmp_path) == []


def test_nifti_with_slope_is_rescaled_not_truncated(tmp_path):
  vol = np.linspace(0.0, 3.0, 60).reshape(5, 4, 3)
  img = nib.Nifti1Image((vol * 1000).astype(np.int16), np.eye(4))
  img.header.set_slope_inter(0.001, 0.0)
  img.to_filename(str(tmp_path / 's.nii'))
  read = images.read_image(str(tmp_path / 's.nii'))
  assert read.scaled
  np.testing.assert_allclose(read.data, vol, atol=1e-3)
  out = np.linspace(0.0, 3.0, 240).reshape(10, 8, 3)
  images.write_image(str(tmp_path / 'o.nii'), out, like=read, zoom_factors=(2, 2, 1))
  back = nib.load(tmp_path / 'o.nii')
  assert back.get_data_dtype() == np.int16
  np.testing.assert_allclose(back.get_fdata(), out, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Analyze


def _analyze(path, data, zooms=(1.0, 1.0, 1.0, 1.0)):
  hdr = nib.AnalyzeHeader(endianness='>')  # OASIS-1 style: big-endian int16
  hdr.set_data_dtype(np.int16)
  hdr.set_data_shape(data.shape)
  hdr.set_zooms(zooms[:data.ndim])
  nib.AnalyzeImage(data, None, header=hdr).to_filename(str(path))


def test_analyze_pair_either_name_and_round_trip(tmp_path):
  vol = (np.arange(6 * 5 * 4).reshape(6, 5, 4, 1) % 97).astype(np.int16)
  _analyze(tmp_path / 'oasis.hdr', vol, zooms=(1.0, 1.0, 1.0, 1.0))
  for name in ('oasis.img', 'oasis.hdr'):
    img = images.read_image(str(tmp_path / name))
    assert img.kind == 'analyze' and img.data.shape == (6, 5, 4)
    np.testing.assert_array_equal(img.data, vol[..., 0])
  assert img.dtype == np.dtype('>i2')

  out = np.arange(12 * 10 * 4, dtype=np.float64).reshape(12, 10, 4) % 500
  images.write_image(str(tmp_path / 'sr.img'), out, like=img, zoom_factors=(2, 2, 1))
  assert (tmp_path / 'sr.hdr').exists() and (tmp_path / 'sr.img').exists()
  back = nib.load(tmp_path / 'sr.hdr')
  assert back.shape == (12, 10, 4, 1) and back.get_data_dtype() == np.dtype('>i2')
  np.testing.assert_allclose(back.header.get_zooms()[:3], (0.5, 0.5, 1.0))
  np.testing.assert_array_equal(np.asarray(back.dataobj)[..., 0], out)
  np.testing.assert_allclose(back.affine, images.scaled_affine(img.affine, (2, 2, 1)), atol=1e-6)
  assert not (tmp_path / 'sr.mat').exists()  # the input had no SPM sidecar
  assert _leftovers(tmp_path) == []


def test_analyze_spm_mat_sidecar_is_scaled(tmp_path):
  affine = np.array([[0., 0., 2., -10.], [1.5, 0., 0., 4.], [0., 1., 0., 7.], [0., 0., 0., 1.]])
  vol = np.arange(4 * 5 * 6).reshape(4, 5, 6).astype(np.int16)
  nib.Spm2AnalyzeImage(vol, affine).to_filename(str(tmp_path / 'in.img'))
  assert (tmp_path / 'in.mat').exists()
  img = images.read_image(str(tmp_path / 'in.img'), axis=1)
  np.testing.assert_allclose(img.affine, affine, atol=1e-6)
  images.write_image(str(tmp_path / 'out.img'), np.ones((8, 5, 12)) * 3, like=img,
                     zoom_factors=(2, 1, 2))
  assert (tmp_path / 'out.mat').exists()
  back = nib.load(tmp_path / 'out.hdr')
  np.testing.assert_allclose(back.affine, images.scaled_affine(affine, (2, 1, 2)), atol=1e-6)
  assert _leftovers(tmp_path) == []


def test_analyze_missing_header(tmp_path):
  vol = np.arange(24).reshape(2, 3, 4).astype(np.int16)
  _analyze(tmp_path / 'x.hdr', vol)
  os.remove(tmp_path / 'x.hdr')
  with pytest.raises(InputError, match=r'x\.hdr not found'):
    images.read_image(str(tmp_path / 'x.img'))


def test_failed_analyze_write_leaves_nothing(tmp_path, monkeypatch):
  vol = np.arange(24).reshape(2, 3, 4).astype(np.int16)
  _analyze(tmp_path / 'x.hdr', vol)
  img = images.read_image(str(tmp_path / 'x.hdr'))
  real_replace, calls = os.replace, []

  def flaky_replace(src, dst):
    calls.append(dst)
    if len(calls) == 2:  # the .img is in place, the .hdr fails
      raise OSError('disk full')
    real_replace(src, dst)

  monkeypatch.setattr(images.os, 'replace', flaky_replace)
  with pytest.raises(InputError, match=r'out\.hdr: cannot write.*disk full'):
    images.write_image(str(tmp_path / 'out.hdr'), np.ones((4, 6, 4)), like=img,
                       zoom_factors=(2, 2, 1))
  assert len(calls) == 2
  assert not (tmp_path / 'out.hdr').exists() and not (tmp_path / 'out.img').exists()
  assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# Validation


def test_bad_files(tmp_path):
  cases = {
      'missing.png': (None, r'missing\.png: file not found'),
      'notes.txt': (b'hello', r'notes\.txt: unsupported file type'),
      'garbage.nii.gz': (b'\x00\x01not a nifti' * 10, r'garbage\.nii\.gz: cannot read NIfTI'),
      'garbage.png': (b'\x89PNG broken', r'garbage\.png: cannot read PNG'),
      'garbage.npy': (b'nonsense', r'garbage\.npy: cannot read \.npy'),
  }
  for name, (content, pattern) in cases.items():
    if content is not None:
      (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=pattern):
      images.read_image(str(tmp_path / name))


@pytest.mark.parametrize('arr,pattern', [
    (np.arange(5.0), r'expected a 2-D image or a 3-D volume, got 1-D'),
    (np.ones((3, 3, 2, 2)), r'got 4-D'),
    (np.array([[1.0, np.nan], [2.0, 3.0]]), r'1 NaN value'),
    (np.array([[1.0, np.inf], [2.0, -np.inf]]), r'2 infinite value'),
    (np.full((4, 4), 3.0), r'every value is 3 \(constant image\)'),
    (np.array([[1.0, 2.0, 3.0]]), r'in-plane size 1x3'),
    (np.arange(6.0).reshape(3, 2, 1).repeat(2, axis=2).reshape(3, 1, 4), r'in-plane size 3x1'),
    (np.array([1 + 1j, 2j]), r'unsupported array type complex'),
])
def test_bad_arrays(tmp_path, arr, pattern):
  np.save(tmp_path / 'a.npy', arr)
  with pytest.raises(InputError, match=r'a\.npy: .*' + pattern):
    images.read_image(str(tmp_path / 'a.npy'))


def test_axis_decides_which_sides_are_in_plane(tmp_path):
  np.save(tmp_path / 'v.npy', np.random.default_rng(0).random((1, 4, 5)))
  images.read_image(str(tmp_path / 'v.npy'), axis=0)  # in-plane 4x5: fine
  with pytest.raises(InputError, match='in-plane size 1x4'):
    images.read_image(str(tmp_path / 'v.npy'), axis=2)


def test_output_checks(tmp_path):
  np.save(tmp_path / 'a.npy', np.arange(16.0).reshape(4, 4))
  img = images.read_image(str(tmp_path / 'a.npy'))
  with pytest.raises(InputError, match='output directory .* does not exist'):
    images.write_image(str(tmp_path / 'nope' / 'b.npy'), np.ones((8, 8)), img, (2, 2))
  with pytest.raises(InputError, match='must be a npy file'):
    images.write_image(str(tmp_path / 'b.png'), np.ones((8, 8)), img, (2, 2))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.npy']
