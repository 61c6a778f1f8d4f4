"""The `folder` dataset of data_prep: NIfTI, Analyze and DICOM series with labels matched by name.

  .venv/bin/python -m pytest -q tests/test_data_prep_folder.py

The DICOM series are written with pydicom (single-frame MR, int16 with rescale slope/intercept,
file names out of slice order, an oblique orientation) and read back here with pydicom alone to
check the slices, their order and the world geometry of the records (affine, axis codes,
spacing).
"""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep import build
from data_prep import readers
from medsr_jax.data import manifest
from medsr_jax.data import records
from medsr_jax.data import volumes
from medsr_jax.io import tfrecord
from tests import dataset_fixtures as fx

ROW_DIR = (1.0, 0.0, 0.0)
COL_DIR = (0.0, 0.6, -0.8)  # oblique: orthonormal to ROW_DIR


def _vol(seed, shape):
  t1, tis = fx.brain_block(shape[:2], [60 + seed + 4 * k for k in range(shape[2])], step=4)
  return t1.astype(np.float64) * (1 + seed), tis


def _records(out):
  m = manifest.read_manifest(str(out))
  recs = {}
  for sp in m.splits.values():
    for shard in sp.shards:
      for r in tfrecord.read_records(os.path.join(out, shard.file)):
        rec = records.decode_slice(r)
        recs.setdefault(rec.subject, []).append(rec)
  return m, recs


def _dicom_slices(folder):
  """(rows x cols slices in position order, datasets): read with pydicom only."""
  dss = [pydicom.dcmread(os.path.join(folder, f)) for f in sorted(os.listdir(folder))]
  normal = np.cross(ROW_DIR, COL_DIR)
  dss.sort(key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient, float), normal)))
  slices = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
                     for d in dss])
  return slices, dss


@pytest.fixture(name='mixed_folder')
def fixture_mixed_folder(tmp_path):
  src = tmp_path / 'src'
  v1, l1 = _vol(1, (40, 48, 5))
  fx.write_nifti(str(src / 'sub01.nii.gz'), v1, np.float32, zooms=(1.2, 1.1, 3.0))
  fx.write_nifti(str(src / 'sub01_seg.nii.gz'), l1, np.uint8, zooms=(1.2, 1.1, 3.0))
  v2, l2 = _vol(2, (40, 48, 5))
  fx.write_analyze(str(src / 'sub02.img'), v2, np.int16, big_endian=False)
  fx.write_nifti(str(src / 'labels' / 'sub02.nii.gz'), l2, np.uint8)
  v3, l3 = _vol(3, (40, 48, 6))
  fx.write_dicom_series(str(src / 'sub03'), v3, spacing=(0.9, 0.8, 2.5), row_dir=ROW_DIR,
                        col_dir=COL_DIR, name='sub03')
  fx.write_nifti(str(src / 'sub03_seg.nii.gz'), l3, np.uint8)
  (src / 'notes.txt').write_text('not a volume')
  split = tmp_path / 'split.json'
  split.write_text(json.dumps({'train': ['sub01', 'sub02'], 'test': ['sub03']}))
  return src, split


def test_folder_reads_nifti_analyze_and_dicom_with_matched_labels(tmp_path, mixed_folder):
  src, split = mixed_folder
  found = readers.reader('folder').discover(str(src), readers.ReaderOptions())
  assert [(v.volume, os.path.basename(v.label)) for v in found.volumes] == [
      ('sub01', 'sub01_seg.nii.gz'), ('sub02', 'sub02.nii.gz'), ('sub03', 'sub03_seg.nii.gz')]
  assert found.has_labels and found.layout == 'dicom+volumes'
  assert len(found.volumes[2].dicom_files) == 6

  out = tmp_path / 'out'
  assert build.main(['--dataset=folder', f'--src={src}', f'--out={out}', f'--split=file:{split}',
                     '--workers=1', '--quiet']) == 0
  m, recs = _records(out)
  assert m.complete and m.modalities == ['image'] and m.has_labels
  assert m.splits['train'].subjects == ['sub01', 'sub02'] and m.splits['val'].subjects == []
  assert m.settings['selection'] == {'rule': 'all'} and m.settings['crop'] == {'kind': 'none'}

  for sid, path, lab in (('sub01', 'sub01.nii.gz', 'sub01_seg.nii.gz'),
                         ('sub02', 'sub02.img', 'labels/sub02.nii.gz')):
    img = nib.load(str(src / path))
    slices = volumes.axial_slices(np.squeeze(img.get_fdata()))
    want = volumes.minmax_normalise(slices)
    want_lab = volumes.axial_slices(np.asarray(nib.load(str(src / lab)).dataobj))
    got = recs[sid]
    assert [r.slice_index for r in got] == list(range(5))
    for k, r in enumerate(got):
      np.testing.assert_array_equal(r.image[..., 0], want[k])
      np.testing.assert_array_equal(r.label, want_lab[k])
      np.testing.assert_allclose(r.affine, img.affine, atol=1e-5)
  np.testing.assert_allclose(recs['sub01'][0].spacing, (1.1, 1.2, 3.0), rtol=1e-6)

  # DICOM: slices in position order (file names are not), rescaled values, world geometry.
  slices, dss = _dicom_slices(str(src / 'sub03'))
  want = volumes.minmax_normalise(slices)
  got = recs['sub03']
  assert len(got) == 6
  want_lab = volumes.axial_slices(np.asarray(nib.load(str(src / 'sub03_seg.nii.gz')).dataobj))
  for k, r in enumerate(got):
    np.testing.assert_array_equal(r.image[..., 0], want[k])
    np.testing.assert_array_equal(r.label, want_lab[k])
  rec = got[0]
  np.testing.assert_allclose(rec.spacing, (0.8, 0.9, 2.5), rtol=1e-6)  # (row, column, slice)
  for k in (0, 5):
    ipp = np.asarray(dss[k].ImagePositionPatient, float)
    dr, dc = (float(x) for x in dss[k].PixelSpacing)
    for i, j in ((0, 0), (7, 3), (19, 39)):  # (column, row) of the DICOM image
      lps = ipp + i * dc * np.asarray(ROW_DIR) + j * dr * np.asarray(COL_DIR)
      world = rec.affine @ np.array([i, j, k, 1.0])
      np.testing.assert_allclose(world[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3)
  assert rec.orientation == ''.join(nib.aff2axcodes(rec.affine)) == 'LIP'


def test_folder_options_subjects_by_dir_axis_crop_and_selection(tmp_path):
  src = tmp_path / 'src'
  va, _ = _vol(1, (24, 28, 4))
  va[:, :, 0] = 0  # an empty slice
  fx.write_nifti(str(src / 'a' / 'x.nii.gz'), va)
  fx.write_nifti(str(src / 'a' / 'y.nii.gz'), _vol(2, (24, 28, 4))[0])
  fx.write_nifti(str(src / 'b' / 'z.nii.gz'), _vol(3, (24, 28, 4))[0])
  found = readers.reader('folder').discover(
      str(src), readers.ReaderOptions(subject_from='dir', labels=False))
  assert [(v.subject, v.volume) for v in found.volumes] == [('a', 'a/x'), ('a', 'a/y'),
                                                           ('b', 'b/z')]
  out = tmp_path / 'out'
  assert build.main(['--dataset=folder', f'--src={src}', f'--out={out}', '--subject_from=dir',
                     '--select=nonempty', '--crop=30x20', '--pad=edge', '--no_labels',
                     '--split=random:0', '--workers=1', '--quiet']) == 0
  m, recs = _records(out)
  assert not m.has_labels and m.slice_shape == [30, 20, 1]
  assert sorted(recs) == ['a', 'b']
  x = [r for r in recs['a'] if r.slice_index in (1, 2, 3)][:3]
  assert len(recs['a']) == 3 + 4  # x lost its empty slice 0
  want = volumes.center_crop(volumes.minmax_normalise(volumes.axial_slices(va)[1:]), (30, 20))
  for r, w in zip(x, want):
    np.testing.assert_array_equal(r.image[..., 0], w)
    assert r.label is None

  out2 = tmp_path / 'out_axis0'
  assert build.main(['--dataset=folder', f'--src={src / "b"}', f'--out={out2}', '--axis=0',
                     '--workers=1', '--quiet']) == 0
  _, recs2 = _records(out2)
  got = recs2['z']
  assert len(got) == 24 and got[0].image.shape == (4, 28, 1)  # slices of axes (1, 2), transposed
  np.testing.assert_allclose(got[0].spacing, (1.0, 1.0, 1.0))
