"""Tiny datasets in each public dataset's real folder layout and file format, for tests.

Every writer takes a root folder and makes a few subjects from the embedded Colin27 sample
(`medsr_jax.data.sample`: a real T1 scan and its tissue labels 0 bg, 1 CSF, 2 GM, 3 WM), cut or
padded to the dataset's in-plane size and kept to a few slices so that the files stay small:

  write_oasis(root, subjects=...)          OAS1_xxxx_MR1/PROCESSED/MPRAGE/T88_111/*_masked_gfc.img
                                           (Analyze 7.5, big-endian int16, 176x208xZx1) + FSL_SEG
  write_brats(root, subjects=...)          HGG|LGG/<name>/<name>_{t1ce,t1,t2,flair,seg}.nii.gz, or
                                           a flat layout (BraTS 2020 names)
  write_acdc(root, patients=...)           training/patientNNN/patientNNN_frameNN[_gt].nii.gz
  write_covid_zenodo(root, cases=...)      COVID-19-CT-Seg_20cases/*_org_*.nii.gz + masks in
                                           Lung_and_Infection_Mask/ (or Lung_Mask/, Infection_Mask/)
  write_covid_challenge(root, train=..., validation=...)   Train|Validation/<id>_{ct,seg}.nii.gz
  write_nifti / write_analyze / write_dicom_series         single volumes for the `folder` reader

Each returns what it wrote ({subject or volume id: {'image': path(s), 'label': path}}), so tests
can read the files back independently (nibabel / pydicom) and compare. Subjects differ: each takes
other slices of the sample and scales intensities differently. Everything is deterministic.

Used by tests/test_data_prep*.py; reusable by any test that needs a dataset on disk.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Sequence

import nibabel as nib
import numpy as np

from medsr_jax.data import sample

OASIS_SHAPE = (176, 208)
BRATS_SHAPE = (240, 240)
COVID_SHAPE = (512, 512)
DICOM_UID_PREFIX = '1.2.826.0.1.3680043.8.498.'


@functools.lru_cache(maxsize=1)
def sample_arrays() -> tuple[np.ndarray, np.ndarray]:
  """(t1, tissue): the embedded sample, uint8 (181, 217, 177) each (read-only)."""
  t1 = np.asarray(nib.load(str(sample.SAMPLE_DIR / sample.T1_FILE)).dataobj, dtype=np.uint8)
  lab = np.asarray(nib.load(str(sample.SAMPLE_DIR / sample.TISSUE_FILE)).dataobj, dtype=np.uint8)
  t1.setflags(write=False)
  lab.setflags(write=False)
  return t1, lab


def _fit(a: np.ndarray, size: int, axis: int, fill) -> np.ndarray:
  """Centre-crops or centre-pads `a` along `axis` to `size`."""
  n = a.shape[axis]
  if n >= size:
    start = (n - size) // 2
    return np.take(a, np.arange(start, start + size), axis=axis)
  before = (size - n) // 2
  pad = [(0, 0)] * a.ndim
  pad[axis] = (before, size - n - before)
  return np.pad(a, pad, constant_values=fill)


def brain_block(xy: Sequence[int], z_slices: Sequence[int], step: int = 1,
                fill_image=0) -> tuple[np.ndarray, np.ndarray]:
  """(t1, tissue) arrays (X, Y, Z) from the sample: axial slices `z_slices`, in-plane
  subsampled by `step`, then centre-cropped / padded to `xy`."""
  t1, lab = sample_arrays()
  z = np.asarray(z_slices)
  img = t1[::step, ::step, z].astype(np.int32)
  tis = lab[::step, ::step, z]
  for axis, size in enumerate(xy):
    img = _fit(img, size, axis, fill_image)
    tis = _fit(tis, size, axis, 0)
  return img, tis


def _affine(zooms: Sequence[float], shape: Sequence[int]) -> np.ndarray:
  aff = np.diag([float(zooms[0]), float(zooms[1]), float(zooms[2]), 1.0])
  aff[:3, 3] = [-0.5 * zooms[i] * shape[i] for i in range(3)]
  return aff


def write_nifti(path: str, data: np.ndarray, dtype=np.int16,
                zooms: Sequence[float] = (1.0, 1.0, 1.0),
                affine: Optional[np.ndarray] = None) -> str:
  """Writes `data` as NIfTI-1 (.nii or .nii.gz by the name) with `dtype`; returns the path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  arr = np.asarray(data).astype(dtype)
  img = nib.Nifti1Image(arr, _affine(zooms, arr.shape) if affine is None else affine)
  img.header.set_zooms(tuple(zooms)[:arr.ndim])
  img.header.set_data_dtype(dtype)
  img.to_filename(path)
  return path


def write_analyze(path: str, data: np.ndarray, dtype=np.int16,
                  zooms: Sequence[float] = (1.0, 1.0, 1.0), big_endian: bool = True) -> str:
  """Writes an Analyze 7.5 pair (`path` = the .img) as OASIS does: (X, Y, Z, 1), big-endian."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  arr = np.asarray(data).astype(dtype)
  if arr.ndim == 3:
    arr = arr[..., None]
  hdr = nib.AnalyzeHeader(endianness='>' if big_endian else '<')
  hdr.set_data_dtype(dtype)
  hdr.set_data_shape(arr.shape)
  hdr.set_zooms(tuple(zooms) + (1.0,))
  nib.AnalyzeImage(arr, None, header=hdr).to_filename(path)
  return path


# ----------------------------------------------------------------------------------------------
# OASIS-1.


def write_oasis(root: str, subjects: Sequence[str] = ('OAS1_0001_MR1', 'OAS1_0009_MR1'),
                n_slices: int = 6, empty_slices: Sequence[int] = (0,), disc: str = 'disc1',
                with_labels: bool = True) -> dict[str, dict[str, str]]:
  """OASIS-1 subjects: masked T1 (int16, value = T1 x (2 + i)) and FAST labels.

  Slices listed in `empty_slices` are all zero (brain mask empty), as at the ends of real
  T88 volumes, so the 'nonempty' selection has something to drop.
  """
  out = {}
  for i, sid in enumerate(subjects):
    z = [60 + 9 * i + 3 * k for k in range(n_slices)]
    t1, tis = brain_block(OASIS_SHAPE, z)
    img = np.where(tis > 0, t1 * (2 + i), 0)
    for k in empty_slices:
      img[:, :, k] = 0
      tis[:, :, k] = 0
    base = os.path.join(root, disc, sid)
    stem = f'{sid}_mpr_n4_anon_111_t88'
    image = write_analyze(os.path.join(base, 'PROCESSED', 'MPRAGE', 'T88_111',
                                       f'{stem}_masked_gfc.img'), img, np.int16)
    # The unmasked image lives in the same folder in the real release: it must not be read.
    write_analyze(os.path.join(base, 'PROCESSED', 'MPRAGE', 'T88_111', f'{stem}_gfc.img'),
                  np.ones((2, 2, 2)), np.int16)
    entry = {'image': image, 'label': None}
    if with_labels:
      entry['label'] = write_analyze(os.path.join(base, 'FSL_SEG', f'{stem}_masked_gfc_fseg.img'),
                                     tis, np.uint8)
    out[sid] = entry
  return out


# ----------------------------------------------------------------------------------------------
# BraTS.

BRATS_MODALITIES = ('t1ce', 't1', 't2', 'flair')


def brats_channels(t1: np.ndarray, tis: np.ndarray, i: int) -> dict[str, np.ndarray]:
  """Four distinct int16 'modalities' made from one T1 block."""
  brain = tis > 0
  return {'t1': t1 * brain * (3 + i),
          't1ce': (t1 + 60 * (tis == 3)) * brain * 2,
          't2': (255 - t1) * brain,
          'flair': (t1 // 2 + 40) * brain}


def write_brats(root: str, subjects: Sequence[str] = ('HGG_Brats17_TCIA_607_1',
                                                      'LGG_Brats17_TCIA_202_1'),
                n_slices: int = 6, tumour_slices: Sequence[int] = (1, 2, 3),
                small_label_slice: Optional[int] = 4, layout: str = 'graded',
                xy: Sequence[int] = BRATS_SHAPE,
                skip_modalities: Sequence[str] = ()) -> dict[str, dict[str, object]]:
  """BraTS subjects with the four modalities and a seg volume (labels 1, 2, 4).

  'graded' ids are '<HGG|LGG>_<folder name>' (the reference's encoding); 'flat' ids are the folder
  names. The seg has tissue-derived 'tumour' labels on `tumour_slices` (CSF -> 1, GM -> 2,
  WM -> 4) and 10 voxels of label 1 on `small_label_slice` (sum 10 <= 100: not selected).
  """
  out: dict[str, dict[str, object]] = {}
  for i, sid in enumerate(subjects):
    z = [50 + 7 * i + 4 * k for k in range(n_slices)]
    t1, tis = brain_block(xy, z)
    seg = np.zeros_like(tis)
    for k in tumour_slices:
      if k < n_slices:
        seg[:, :, k] = np.choose(tis[:, :, k], [0, 1, 2, 4])
    if small_label_slice is not None and small_label_slice < n_slices:
      x0 = xy[0] // 3
      seg[x0:x0 + 10, xy[1] // 2, small_label_slice] = 1
    if layout == 'graded':
      grade, name = sid.split('_', 1)
      folder = os.path.join(root, grade, name)
    else:
      name = sid
      folder = os.path.join(root, name)
    chans = brats_channels(t1, tis, i)
    images = {}
    for m in BRATS_MODALITIES:
      if m in skip_modalities:
        continue
      images[m] = write_nifti(os.path.join(folder, f'{name}_{m}.nii.gz'), chans[m], np.int16)
    label = write_nifti(os.path.join(folder, f'{name}_seg.nii.gz'), seg, np.uint8)
    out[sid] = {'image': images, 'label': label}
  return out


# ----------------------------------------------------------------------------------------------
# ACDC.


def write_acdc(root: str, patients: Sequence[str] = ('patient001', 'patient049'),
               frames: Sequence[int] = (1, 12), n_slices: int = 5,
               xy: Sequence[int] = (150, 170), small: Sequence[str] = (),
               small_xy: Sequence[int] = (120, 150),
               labelled_slices: Sequence[int] = (1, 2, 3)) -> dict[str, dict[str, str]]:
  """ACDC patients under `training/`: two labelled frames each (+ a `_4d` file and Info.cfg).

  The gt (1 RV, 2 myocardium, 3 LV stand-ins: the tissue classes) covers `labelled_slices`; the
  last slice gets 5 voxels of label 1 (sum <= 100: not selected). Patients in `small` have the
  in-plane size `small_xy` (narrower than the 128 crop). Returns {'<pid>_frameNN': ...}.
  """
  out = {}
  for i, pid in enumerate(patients):
    folder = os.path.join(root, 'training', pid)
    size = small_xy if pid in small else xy
    for j, frame in enumerate(frames):
      z = [70 + 5 * i + 2 * j + 6 * k for k in range(n_slices)]
      t1, tis = brain_block(size, z, step=1)
      img = t1 * (4 + j)
      gt = np.zeros_like(tis)
      for k in labelled_slices:
        gt[:, :, k] = tis[:, :, k]
      gt[10:15, 10, n_slices - 1] = 1
      name = f'{pid}_frame{frame:02d}'
      zooms = (1.4, 1.4, 10.0)
      out[name] = {
          'image': write_nifti(os.path.join(folder, f'{name}.nii.gz'), img, np.int16, zooms),
          'label': write_nifti(os.path.join(folder, f'{name}_gt.nii.gz'), gt, np.uint8, zooms)}
    write_nifti(os.path.join(folder, f'{pid}_4d.nii.gz'), np.zeros((2, 2, 2), np.int16))
    with open(os.path.join(folder, 'Info.cfg'), 'w', encoding='utf-8') as f:
      f.write(f'ED: {frames[0]}\nES: {frames[-1]}\nGroup: NOR\n')
  return out


# ----------------------------------------------------------------------------------------------
# COVID-CT.


def _ct_block(i: int, n_slices: int, xy: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """A CT-like int16 volume (-1024 outside, 'HU' inside) and lung / infection labels."""
  z = [60 + 11 * i + 5 * k for k in range(n_slices)]
  t1, tis = brain_block(xy, z, fill_image=0)
  ct = np.where(tis > 0, t1 * 4 - 900, -1024)
  half = xy[0] // 2
  lab = np.zeros(tis.shape, np.uint8)
  lab[:half][tis[:half] > 0] = 1   # "left lung"
  lab[half:][tis[half:] > 0] = 2   # "right lung"
  lab[tis == 3] = 3                # "infection"
  lab[:, :, 0] = 0                 # no mask on the first slice
  return ct, lab


def write_covid_zenodo(root: str, cases: Sequence[str] = ('coronacases_001',
                                                          'radiopaedia_4_85506_1'),
                       n_slices: int = 3, xy: Sequence[int] = COVID_SHAPE,
                       masks: str = 'combined') -> dict[str, dict[str, str]]:
  """The Zenodo 20-case layout: images with their release names, masks by case id.

  masks='combined' writes Lung_and_Infection_Mask/ (1, 2 lungs, 3 infection); 'separate' writes
  Lung_Mask/ (1, 2) and Infection_Mask/ (1) only.
  """
  out = {}
  for i, case in enumerate(cases):
    ct, lab = _ct_block(i, n_slices, xy)
    if case.startswith('coronacases_'):
      image_name = case.replace('coronacases_', 'coronacases_org_')
    else:
      image_name = 'radiopaedia_org_covid-19-pneumonia-' + case[len('radiopaedia_'):] + '-dcm'
    image = write_nifti(os.path.join(root, 'COVID-19-CT-Seg_20cases', image_name + '.nii.gz'),
                        ct, np.int16, (0.7, 0.7, 5.0))
    entry = {'image': image}
    if masks == 'combined':
      entry['label'] = write_nifti(os.path.join(root, 'Lung_and_Infection_Mask', case + '.nii.gz'),
                                   lab, np.uint8, (0.7, 0.7, 5.0))
    else:
      side = np.where(np.arange(xy[0])[:, None, None] < xy[0] // 2, 1, 2)
      lung = np.where(lab == 3, side, lab).astype(np.uint8)
      entry['lung'] = write_nifti(os.path.join(root, 'Lung_Mask', case + '.nii.gz'), lung,
                                  np.uint8, (0.7, 0.7, 5.0))
      entry['infection'] = write_nifti(os.path.join(root, 'Infection_Mask', case + '.nii.gz'),
                                       (lab == 3).astype(np.uint8), np.uint8, (0.7, 0.7, 5.0))
      entry['label'] = None
    entry['expected_label'] = lab
    out[case] = entry
  return out


def write_covid_challenge(root: str, train: Sequence[str] = ('volume-covid19-A-0003',),
                          validation: Sequence[str] = ('volume-covid19-A-0089',),
                          n_slices: int = 3, xy: Sequence[int] = COVID_SHAPE,
                          validation_labels: bool = True) -> dict[str, dict[str, str]]:
  """The COVID-19-20 challenge layout: Train/ and Validation/ with `<id>_ct` and `<id>_seg`."""
  out = {}
  for i, (folder, sid) in enumerate([('Train', s) for s in train] +
                                    [('Validation', s) for s in validation]):
    ct, lab = _ct_block(i, n_slices, xy)
    seg = (lab == 3).astype(np.uint8)
    entry = {'image': write_nifti(os.path.join(root, folder, f'{sid}_ct.nii.gz'), ct, np.int16,
                                  (0.8, 0.8, 5.0)), 'label': None}
    if folder == 'Train' or validation_labels:
      entry['label'] = write_nifti(os.path.join(root, folder, f'{sid}_seg.nii.gz'), seg,
                                   np.uint8, (0.8, 0.8, 5.0))
    out[sid] = entry
  return out


# ----------------------------------------------------------------------------------------------
# DICOM.


def write_dicom_series(folder: str, volume: np.ndarray, *, spacing=(0.9, 0.8, 2.5),
                       row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
                       origin=(-40.0, -30.0, 10.0), slope: float = 2.0,
                       intercept: float = -100.0, name: str = 'series',
                       positions: Optional[Sequence[float]] = None,
                       shuffle_names: bool = True) -> list[str]:
  """Writes an (X, Y, Z) volume as a single-frame MR DICOM series, one file per slice.

  File k holds slice ``volume[:, :, k].T`` (rows x columns) stored as int16 =
  (value - intercept) / slope, at ImagePositionPatient origin + positions[k] * normal (default
  positions k * spacing[2]). PixelSpacing = (row spacing, column spacing) = (spacing[1],
  spacing[0]). With `shuffle_names` the file names do not follow the slice order.
  """
  # pylint: disable=g-import-not-at-top
  from pydicom.dataset import FileDataset, FileMetaDataset
  from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
  os.makedirs(folder, exist_ok=True)
  vol = np.asarray(volume, dtype=np.float64)
  nz = vol.shape[2]
  normal = np.cross(row_dir, col_dir)
  pos = [k * spacing[2] for k in range(nz)] if positions is None else list(positions)
  study = generate_uid(DICOM_UID_PREFIX, [name, 'study'])
  series = generate_uid(DICOM_UID_PREFIX, [name, 'series'])
  order = list(range(nz))
  if shuffle_names:
    order = order[1::2] + order[0::2]
  files = []
  for k in range(nz):
    sop = generate_uid(DICOM_UID_PREFIX, [name, str(k)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = os.path.join(folder, f'IM{order.index(k):04d}.dcm')
    ds = FileDataset(path, {}, file_meta=meta, preamble=b'\0' * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.PatientID, ds.InstanceNumber = 'MR', name, k + 1
    pixels = np.rint((vol[:, :, k].T - intercept) / slope).astype(np.int16)
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    ds.SliceThickness = float(spacing[2])
    ds.ImageOrientationPatient = [float(x) for x in list(row_dir) + list(col_dir)]
    ds.ImagePositionPatient = [float(x) for x in np.asarray(origin) + pos[k] * normal]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 'MONOCHROME2'
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype('<i2').tobytes()
    ds.save_as(path, enforce_file_format=True)
    files.append(path)
  return files
