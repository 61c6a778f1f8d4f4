"""Reads one 3-D volume (NIfTI, Analyze or a DICOM series) with its geometry, or fails clearly.

Every reader of `data_prep` loads its files through this module, so that bad input gives the same
one-line `InputError` naming the file whatever the dataset:

  vol = read_volume('/data/BraTS/HGG/Brats17_X/Brats17_X_t1.nii.gz')   # vol.data (X, Y, Z) float64
  lab = read_label('/data/.../Brats17_X_seg.nii.gz', like=vol)          # lab.data integer array
  vol = read_dicom_series(['/dicom/s1/001.dcm', ...], name='/dicom/s1')

Images are read as the reference does (`nibabel.load(p).get_fdata()`, float64; spec §4.1); label
volumes keep their stored integer type (a 512x512x300 CT mask is not blown up to float64). A
volume stored with trailing singleton axes, like OASIS' (X, Y, Z, 1), is squeezed to 3-D.

DICOM series (pydicom) become the same (X, Y, Z) arrays as a NIfTI converter would write: voxel
(i, j, k) is column i, row j of the k-th slice in order along the slice normal, so that
``data[:, :, k].T`` is the slice as stored (rows x columns). The affine maps voxels to RAS+ world
millimetres (DICOM's LPS with the first two axes negated), like nibabel's for NIfTI files.

Errors (all `InputError`, naming the file): missing, unreadable or truncated file, not 3-D, NaN or
infinite voxels, label values that are not integers in [0, 255] or a label grid that differs from
its image; for DICOM a series whose slices differ in size, pixel spacing or orientation, whose
slice positions are missing, repeated or unevenly spaced, or whose pixel data cannot be decoded.

Tests: `.venv/bin/python -m pytest -q tests/test_data_prep_bad.py tests/test_data_prep_folder.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.io import images

# Relative tolerance on DICOM slice gaps (uneven gaps beyond it are an error) and absolute
# tolerance on direction cosines / pixel spacing when comparing slices of one series.
SLICE_GAP_RTOL = 0.01
GEOMETRY_ATOL = 1e-4


@dataclasses.dataclass
class Volume:
  """A 3-D volume and its geometry.

  Attributes:
    data: (X, Y, Z) array; float64 for images, the stored integer type for labels.
    affine: (4, 4) voxel-to-world (RAS+ mm) affine.
    zooms: voxel sizes (mm) along the three array axes.
    path: the file (or DICOM series folder) it was read from.
  """
  data: np.ndarray
  affine: np.ndarray
  zooms: tuple[float, float, float]
  path: str


def _load_nibabel(path: str):
  """The nibabel image of a NIfTI / Analyze file (its data not read yet)."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  kind = images.image_kind(path)
  if kind not in ('nifti', 'analyze'):
    raise InputError(f'{path}: not a NIfTI (.nii, .nii.gz) or Analyze (.hdr/.img) volume')
  images.check_file(path)
  load_path = images.nibabel_path(path, kind)
  try:
    return nib.load(load_path, mmap=False)
  except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors, ...
    raise InputError(f'{path}: cannot read volume ({images.one_line(e)})') from e


def _squeeze3(arr: np.ndarray, path: str, disk_shape: Sequence[int]) -> np.ndarray:
  arr = images.squeeze_trailing(arr)
  if arr.ndim != 3:
    raise InputError(f'{path}: expected a 3-D volume, got shape {tuple(disk_shape)}')
  return arr


def _geometry(img) -> tuple[np.ndarray, tuple[float, float, float]]:
  affine = np.asarray(img.affine, dtype=np.float64)
  zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
  zooms = zooms + (1.0,) * (3 - len(zooms))
  return affine, zooms  # type: ignore[return-value]


def check_finite(data: np.ndarray, path: str) -> None:
  """InputError if `data` has NaN or infinite values."""
  images.check_finite(data, path, what='voxel')


def read_volume(path: str) -> Volume:
  """Reads a NIfTI / Analyze image volume as float64 (`get_fdata`), checked finite and 3-D."""
  path = os.fspath(path)
  img = _load_nibabel(path)
  try:
    data = np.asarray(img.get_fdata(dtype=np.float64))
  except Exception as e:  # truncated data, bad compression, ...
    raise InputError(f'{path}: cannot read volume data ({images.one_line(e)})') from e
  data = _squeeze3(data, path, img.shape)
  check_finite(data, path)
  affine, zooms = _geometry(img)
  return Volume(data=data, affine=affine, zooms=zooms, path=path)


def check_label_values(data: np.ndarray, path: str) -> np.ndarray:
  """The label array as int64 if all values are integers in [0, 255], else InputError."""
  if data.dtype.kind == 'f':
    check_finite(data, path)
    if np.any(data != np.round(data)):
      raise InputError(f'{path}: label volume has non-integer values')
  if data.size and (data.min() < 0 or data.max() > 255):
    raise InputError(f'{path}: label values must lie in [0, 255], got [{data.min()}, {data.max()}]')
  return data.astype(np.int64) if data.dtype.kind not in 'iu' else data


def read_label(path: str, like: Optional[Volume] = None) -> Volume:
  """Reads a label volume (stored integer values), checked against the image `like`'s grid."""
  path = os.fspath(path)
  img = _load_nibabel(path)
  try:
    data = np.asarray(img.dataobj)  # scaling applied if the header asks for it
    if data.dtype.kind not in 'iuf':
      data = data.astype(np.float64)
  except Exception as e:
    raise InputError(f'{path}: cannot read volume data ({images.one_line(e)})') from e
  data = _squeeze3(data, path, img.shape)
  data = check_label_values(data, path)
  if like is not None and data.shape != like.data.shape:
    raise InputError(f'{path}: label shape {data.shape} does not match its image {like.path} '
                     f'of shape {like.data.shape}')
  affine, zooms = _geometry(img)
  return Volume(data=data, affine=affine, zooms=zooms, path=path)


# ----------------------------------------------------------------------------------------------
# DICOM series.


def is_dicom_file(path: str) -> bool:
  """True if `path` has the DICOM part-10 preamble ('DICM' at byte 128)."""
  try:
    with open(path, 'rb') as f:
      head = f.read(132)
  except OSError:
    return False
  return len(head) == 132 and head[128:132] == b'DICM'


def _tag(ds, name: str, path: str):
  value = getattr(ds, name, None)
  if value is None or (hasattr(value, '__len__') and len(value) == 0):
    raise InputError(f'{path}: DICOM attribute {name} is missing')
  return value


def _floats(value, n: int, name: str, path: str) -> np.ndarray:
  try:
    out = np.asarray([float(v) for v in value], dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise InputError(f'{path}: DICOM attribute {name} is not numeric') from e
  if out.shape != (n,):
    raise InputError(f'{path}: DICOM attribute {name} must have {n} values, got {out.size}')
  return out


def read_dicom_header(path: str):
  """The pydicom dataset of one file, without pixel data (InputError if not readable)."""
  import pydicom  # pylint: disable=g-import-not-at-top
  images.check_file(path)
  try:
    return pydicom.dcmread(path, stop_before_pixels=True)
  except Exception as e:
    raise InputError(f'{path}: cannot read DICOM file ({images.one_line(e)})') from e


def read_dicom_series(files: Sequence[str], name: str) -> Volume:
  """Reads the slices `files` of one DICOM series into an (X, Y, Z) float64 volume.

  Args:
    files: the files of the series, any order (sorted here along the slice normal).
    name: the series' name in messages (e.g. its folder).

  Raises:
    InputError: unreadable file, missing geometry, slices that differ in size, pixel spacing or
      orientation, repeated or unevenly spaced slice positions, undecodable pixel data.
  """
  import pydicom  # pylint: disable=g-import-not-at-top
  if not files:
    raise InputError(f'{name}: empty DICOM series')
  slices = []
  for f in files:
    images.check_file(f)
    try:
      ds = pydicom.dcmread(f)
    except Exception as e:
      raise InputError(f'{f}: cannot read DICOM file ({images.one_line(e)})') from e
    if int(getattr(ds, 'NumberOfFrames', 1) or 1) > 1:
      raise InputError(f'{f}: multi-frame DICOM files are not supported (convert to NIfTI)')
    if int(getattr(ds, 'SamplesPerPixel', 1)) != 1:
      raise InputError(f'{f}: only grayscale DICOM images are supported')
    rows, cols = int(_tag(ds, 'Rows', f)), int(_tag(ds, 'Columns', f))
    iop = _floats(_tag(ds, 'ImageOrientationPatient', f), 6, 'ImageOrientationPatient', f)
    ipp = _floats(_tag(ds, 'ImagePositionPatient', f), 3, 'ImagePositionPatient', f)
    spacing = _floats(_tag(ds, 'PixelSpacing', f), 2, 'PixelSpacing', f)
    slices.append((f, ds, rows, cols, iop, ipp, spacing))

  f0, _, rows0, cols0, iop0, _, sp0 = slices[0]
  for f, _, rows, cols, iop, _, sp in slices[1:]:
    if (rows, cols) != (rows0, cols0):
      raise InputError(f'{name}: inconsistent DICOM series, {f} is {rows}x{cols} but {f0} is '
                       f'{rows0}x{cols0}')
    if not np.allclose(iop, iop0, atol=GEOMETRY_ATOL):
      raise InputError(f'{name}: inconsistent DICOM series, {f} has another orientation '
                       f'(ImageOrientationPatient) than {f0}')
    if not np.allclose(sp, sp0, atol=GEOMETRY_ATOL):
      raise InputError(f'{name}: inconsistent DICOM series, {f} has pixel spacing {sp.tolist()} '
                       f'but {f0} has {sp0.tolist()}')
  row_dir, col_dir = iop0[:3], iop0[3:]
  normal = np.cross(row_dir, col_dir)
  if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
    raise InputError(f'{f0}: ImageOrientationPatient is not two orthonormal directions')
  slices.sort(key=lambda s: float(np.dot(s[5], normal)))
  pos = np.asarray([float(np.dot(s[5], normal)) for s in slices])
  if len(slices) > 1:
    gaps = np.diff(pos)
    if np.any(gaps <= GEOMETRY_ATOL):
      i = int(np.argmin(gaps))
      raise InputError(f'{name}: inconsistent DICOM series, {slices[i][0]} and '
                       f'{slices[i + 1][0]} have the same slice position')
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > SLICE_GAP_RTOL * step + GEOMETRY_ATOL)
    if bad.size:
      i = int(bad[0])
      raise InputError(f'{name}: inconsistent DICOM series, uneven slice spacing ({gaps[i]:.4g} '
                       f'mm before {slices[i + 1][0]}, {step:.4g} mm elsewhere; missing slice?)')
  else:
    step = float(getattr(slices[0][1], 'SliceThickness', 1.0) or 1.0)

  data = np.empty((cols0, rows0, len(slices)), dtype=np.float64)
  for k, (f, ds, *_rest) in enumerate(slices):
    try:
      pixels = ds.pixel_array
    except Exception as e:  # compressed syntax without a decoder, truncated pixel data, ...
      raise InputError(f'{f}: cannot decode DICOM pixel data ({images.one_line(e)})') from e
    if pixels.shape != (rows0, cols0):
      raise InputError(f'{f}: DICOM pixel data has shape {pixels.shape}, expected '
                       f'{(rows0, cols0)}')
    slope = float(getattr(ds, 'RescaleSlope', 1.0) or 1.0)
    inter = float(getattr(ds, 'RescaleIntercept', 0.0) or 0.0)
    data[:, :, k] = (pixels.astype(np.float64) * slope + inter).T
  check_finite(data, name)

  # Voxel (i, j, k) -> LPS: ipp_0 + i * dc * row_dir + j * dr * col_dir + k * step * normal,
  # with (dr, dc) = PixelSpacing (row spacing, column spacing).
  lps = np.eye(4)
  lps[:3, 0] = row_dir * sp0[1]
  lps[:3, 1] = col_dir * sp0[0]
  lps[:3, 2] = normal * step
  lps[:3, 3] = slices[0][5]
  affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
  zooms = (float(sp0[1]), float(sp0[0]), float(step))
  return Volume(data=data, affine=affine, zooms=zooms, path=name)
