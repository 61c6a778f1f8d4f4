"""Reads and writes the medical image files that `medsr_jax.infer` super-resolves.

Formats (chosen by the file name's extension):
  .png            8- or 16-bit grayscale (Pillow); RGB(A) only when all colour channels are equal.
  .npy            a plain numpy array (never unpickled).
  .nii, .nii.gz   NIfTI-1/2 volumes (nibabel).
  .hdr, .img      Analyze 7.5 pairs (nibabel; either file of the pair may be named), e.g. the
                  OASIS-1 `*_masked_gfc.img` volumes, 4-D (X, Y, Z, 1) big-endian int16.

`read_image(path)` returns an `Image` with the values as stored on disk (float64, scaling applied)
and what is needed to write a result the same way; `write_image(path, data, like, zoom_factors)`
writes an up-scaled result in `like`'s format: same PNG bit depth, same NIfTI/Analyze data type,
voxel sizes divided by the zoom factors and, for NIfTI, sform and qform moved so that the output
overlays the input in a viewer. Writes are atomic (a temporary file in the same directory, then
`os.replace`); a failed write leaves no output behind.

Bad files raise `medsr_jax.errors.InputError` with one line naming the file.
Volumes are read with `get_fdata()` (float64) as in the thesis' loaders (reference spec §4.1).

  from medsr_jax.io import images
  img = images.read_image('sub01.nii.gz')          # img.data: (X, Y, Z) float64
  images.write_image('sub01_x4.nii.gz', sr, like=img, zoom_factors=(4, 4, 1))
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from medsr_jax.errors import InputError

KINDS = ('png', 'npy', 'nifti', 'analyze')

# Extension -> kind; longest first so that '.nii.gz' wins over '.gz'.
_EXTENSIONS = (('.nii.gz', 'nifti'), ('.nii', 'nifti'), ('.hdr', 'analyze'), ('.img', 'analyze'),
               ('.png', 'png'), ('.npy', 'npy'))

MIN_SIDE = 2  # every in-plane side must have at least this many pixels


@dataclasses.dataclass
class Image:
  """A 2-D image or 3-D volume read from disk.

  Attributes:
    data: float64 values as stored (after NIfTI/Analyze scaling), 2-D or 3-D; a volume stored
      with trailing singleton axes, like OASIS' (X, Y, Z, 1), is squeezed to 3-D.
    kind: 'png', 'npy', 'nifti' or 'analyze'.
    path: the file that was read (for Analyze, the file the user named).
    disk_shape: the shape on disk before squeezing (written back the same way).
    dtype: the on-disk data type (PNG: uint8 / uint16; NIfTI/Analyze: the header's type).
    bit_depth: PNG bit depth (8 or 16), else None.
    header: the nibabel header (volumes), else None.
    affine: the nibabel affine (volumes), else None.
    image_class: the nibabel image class that read the file (volumes), else None.
    scaled: True when a volume stores integers with a slope/intercept other than (1, 0).
  """
  data: np.ndarray
  kind: str
  path: str
  disk_shape: tuple[int, ...]
  dtype: np.dtype
  bit_depth: Optional[int] = None
  header: Any = None
  affine: Optional[np.ndarray] = None
  image_class: Any = None
  scaled: bool = False


def image_kind(path: str) -> str:
  """The format of `path` from its extension; InputError if it is not one we read."""
  name = os.fspath(path).lower()
  for ext, kind in _EXTENSIONS:
    if name.endswith(ext):
      return kind
  known = ', '.join(ext for ext, _ in _EXTENSIONS)
  raise InputError(f'{path}: unsupported file type (expected one of {known})')


def extension(path: str) -> str:
  """The recognised extension of `path`, lower case ('.nii.gz', '.png', ...)."""
  name = os.fspath(path).lower()
  for ext, _ in _EXTENSIONS:
    if name.endswith(ext):
      return ext
  image_kind(path)  # raises
  return ''


def analyze_pair(path: str) -> tuple[str, str]:
  """(header, image) file names of the Analyze pair that `path` belongs to."""
  path = os.fspath(path)
  stem, ext = os.path.splitext(path)
  # Keep the user's case: 'X.IMG' pairs with 'X.HDR'.
  hdr_ext = '.HDR' if ext.isupper() else '.hdr'
  img_ext = '.IMG' if ext.isupper() else '.img'
  return stem + hdr_ext, stem + img_ext


def one_line(e: BaseException) -> str:
  """An exception as one line, 'Type: message', for InputError messages."""
  text = ' '.join(str(e).split())
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


def check_file(path: str) -> None:
  """InputError unless `path` is an existing, readable regular file."""
  if not os.path.exists(path):
    raise InputError(f'{path}: file not found')
  if not os.path.isfile(path):
    raise InputError(f'{path}: not a regular file')
  if not os.access(path, os.R_OK):
    raise InputError(f'{path}: file is not readable (permission denied)')


def nibabel_path(path: str, kind: str) -> str:
  """The file nibabel loads for `path`: an Analyze pair's header (InputError naming the missing
  file if the pair is incomplete), else `path` itself."""
  if kind != 'analyze':
    return path
  hdr, img = analyze_pair(path)
  for f in (hdr, img):
    if not os.path.isfile(f):
      raise InputError(f'{path}: the Analyze pair is incomplete, {f} not found')
  return hdr


def squeeze_trailing(data: np.ndarray) -> np.ndarray:
  """Drops trailing singleton axes beyond the third: OASIS' (X, Y, Z, 1) -> (X, Y, Z)."""
  while data.ndim > 3 and data.shape[-1] == 1:
    data = data[..., 0]
  return data


def check_finite(data: np.ndarray, path: str, what: str = 'value') -> None:
  """InputError naming `path` and counting the NaN, then infinite, `what`s of `data`."""
  if data.dtype.kind not in 'fc':
    return
  n_nan = int(np.count_nonzero(np.isnan(data)))
  if n_nan:
    raise InputError(f'{path}: contains {n_nan} NaN {what}(s)')
  n_inf = int(np.count_nonzero(np.isinf(data)))
  if n_inf:
    raise InputError(f'{path}: contains {n_inf} infinite {what}(s)')


# ----------------------------------------------------------------------------------------------
# Reading.


def _read_png(path: str) -> tuple[np.ndarray, np.dtype, int]:
  from PIL import Image as PILImage  # pylint: disable=g-import-not-at-top
  try:
    with PILImage.open(path) as im:
      if im.format != 'PNG':
        raise InputError(f'{path}: not a PNG file (Pillow reads it as {im.format})')
      mode = im.mode
      if mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        arr = np.asarray(im)
        if arr.dtype.kind == 'i' and (arr.min() < 0 or arr.max() > 65535):
          raise InputError(f'{path}: PNG values outside the 16-bit range')
        return arr.astype(np.uint16), np.dtype(np.uint16), 16
      if mode in ('1', 'L'):
        return np.asarray(im.convert('L')), np.dtype(np.uint8), 8
      if mode in ('P', 'PA'):
        im = im.convert('RGBA')
        mode = 'RGBA'
      if mode in ('RGB', 'RGBA', 'LA'):
        arr = np.asarray(im)
        colour, alpha = (arr[..., :-1], arr[..., -1]) if mode in ('RGBA', 'LA') else (arr, None)
        if alpha is not None and np.any(alpha != alpha.max(initial=0)):
          raise InputError(f'{path}: PNG has a transparency channel; save it as grayscale')
        if not np.all(colour == colour[..., :1]):
          raise InputError(f'{path}: colour PNG (its channels differ); only grayscale images are '
                           'supported')
        return colour[..., 0], arr.dtype, 8 * arr.dtype.itemsize
      raise InputError(f'{path}: unsupported PNG mode {mode!r}')
  except InputError:
    raise
  except Exception as e:  # Pillow raises many types for broken files.
    raise InputError(f'{path}: cannot read PNG ({one_line(e)})') from e


def _read_npy(path: str) -> tuple[np.ndarray, np.dtype]:
  try:
    arr = np.load(path, allow_pickle=False)
  except Exception as e:  # ValueError (pickled / object), OSError, EOFError, ...
    raise InputError(f'{path}: cannot read .npy ({one_line(e)})') from e
  if not isinstance(arr, np.ndarray):
    raise InputError(f'{path}: not a single .npy array')
  if arr.dtype.kind not in 'biuf':
    raise InputError(f'{path}: unsupported array type {arr.dtype} (need real numbers)')
  return arr, arr.dtype


def _read_volume(path: str, kind: str):
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  load_path = nibabel_path(path, kind)
  try:
    vol = nib.load(load_path)
    data = np.asarray(vol.get_fdata(dtype=np.float64))
    dtype = np.dtype(vol.header.get_data_dtype())
  except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors, ...
    name = 'NIfTI' if kind == 'nifti' else 'Analyze'
    raise InputError(f'{path}: cannot read {name} file ({one_line(e)})') from e
  slope = getattr(vol.dataobj, 'slope', 1.0)
  inter = getattr(vol.dataobj, 'inter', 0.0)
  scaled = dtype.kind in 'iu' and (float(slope) != 1.0 or float(inter) != 0.0)
  return data, dtype, vol, scaled


def read_image(path: str, *, axis: int = 2) -> Image:
  """Reads and validates a 2-D image or 3-D volume.

  Args:
    path: the file (.png, .npy, .nii, .nii.gz, .hdr or .img).
    axis: for volumes, the slice axis; the other two are in-plane and must be >= 2 long.

  Raises:
    InputError: missing or unreadable file, unsupported format, not 2-D/3-D, NaN/Inf values,
      constant values, or an in-plane side shorter than 2.
  """
  path = os.fspath(path)
  kind = image_kind(path)
  check_file(path)

  bit_depth = header = affine = image_class = None
  scaled = False
  if kind == 'png':
    arr, dtype, bit_depth = _read_png(path)
  elif kind == 'npy':
    arr, dtype = _read_npy(path)
  else:
    arr, dtype, vol, scaled = _read_volume(path, kind)
    header, affine, image_class = vol.header, np.asarray(vol.affine), type(vol)

  disk_shape = tuple(arr.shape)
  data = squeeze_trailing(np.asarray(arr, dtype=np.float64))
  image = Image(data=data, kind=kind, path=path, disk_shape=disk_shape, dtype=dtype,
                bit_depth=bit_depth, header=header, affine=affine, image_class=image_class,
                scaled=scaled)
  validate(image, axis=axis)
  return image


def in_plane_axes(ndim: int, axis: int) -> tuple[int, int]:
  """The two in-plane axes of a 2-D image (0, 1) or of a volume sliced along `axis`."""
  if ndim == 2:
    return 0, 1
  a = axis % 3
  return tuple(i for i in range(3) if i != a)  # type: ignore[return-value]


def validate(image: Image, *, axis: int = 2) -> None:
  """Raises InputError unless `image.data` is a finite, non-constant 2-D image or 3-D volume."""
  data, path = image.data, image.path
  if data.ndim not in (2, 3):
    raise InputError(f'{path}: expected a 2-D image or a 3-D volume, got {data.ndim}-D data of '
                     f'shape {image.disk_shape}')
  if data.size == 0:
    raise InputError(f'{path}: empty data of shape {image.disk_shape}')
  check_finite(data, path)
  lo, hi = float(data.min()), float(data.max())
  if lo == hi:
    raise InputError(f'{path}: every value is {lo:g} (constant image), nothing to super-resolve')
  if data.ndim == 3 and not -3 <= axis <= 2:
    raise InputError(f'slice axis must be 0, 1 or 2 for a volume, got {axis}')
  sides = [data.shape[i] for i in in_plane_axes(data.ndim, axis)]
  if min(sides) < MIN_SIDE:
    what = 'image' if data.ndim == 2 else f'volume sliced along axis {axis % 3}'
    raise InputError(f'{path}: {what} has in-plane size {sides[0]}x{sides[1]}; each side must be '
                     f'at least {MIN_SIDE}')


# ----------------------------------------------------------------------------------------------
# Writing.


def _to_dtype(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """Casts; integer types are rounded and clipped to their range first."""
  dtype = np.dtype(dtype)
  if dtype.kind in 'iu':
    info = np.iinfo(dtype)
    return np.clip(np.rint(data), info.min, info.max).astype(dtype)
  if dtype.kind == 'b':
    return data >= 0.5
  return data.astype(dtype)


def scaled_affine(affine: np.ndarray, zoom_factors: Sequence[float]) -> np.ndarray:
  """The affine of a grid up-scaled by `zoom_factors` that overlays the old one.

  New voxel i' along a scaled axis has its centre at old index (i' + 0.5) / s - 0.5 (half-pixel
  centres, as in the bicubic degradation), so new = old @ [diag(1/s), (1/s - 1) / 2].
  """
  f = np.ones(3)
  f[:len(zoom_factors[:3])] = np.asarray(zoom_factors[:3], dtype=np.float64)
  m = np.eye(4)
  m[:3, :3] = np.diag(1.0 / f)
  m[:3, 3] = 0.5 / f - 0.5
  return np.asarray(affine, dtype=np.float64) @ m


def temp_name(path: str, suffix: str = '') -> str:
  """An unused file name next to `path` (not created, so the writer's umask applies)."""
  directory = os.path.dirname(os.path.abspath(path))
  return os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp{suffix}')


@contextlib.contextmanager
def temp_path(path: str, suffix: str) -> Iterator[str]:
  """A temporary file name next to `path`, removed again if it still exists at exit."""
  tmp = temp_name(path, suffix)
  try:
    yield tmp
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _restore_disk_shape(data: np.ndarray, like: Image) -> np.ndarray:
  """Re-adds the trailing singleton axes that `read_image` squeezed away."""
  extra = len(like.disk_shape) - data.ndim
  return data.reshape(data.shape + (1,) * extra) if extra > 0 else data


def _write_png(path: str, data: np.ndarray, like: Image) -> None:
  from PIL import Image as PILImage  # pylint: disable=g-import-not-at-top
  arr = _to_dtype(data, np.uint16 if like.bit_depth == 16 else np.uint8)
  with temp_path(path, '.png') as tmp:
    PILImage.fromarray(arr).save(tmp, format='PNG')
    os.replace(tmp, path)


def _write_npy(path: str, data: np.ndarray) -> None:
  with temp_path(path, '.npy') as tmp:
    with open(tmp, 'wb') as f:
      np.save(f, data.astype(np.float32), allow_pickle=False)
    os.replace(tmp, path)


def _new_volume(data: np.ndarray, like: Image, zoom_factors: Sequence[float]):
  """A nibabel image of `like`'s class with the scaled grid and `like`'s data type."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  hdr = like.header.copy()
  arr = _restore_disk_shape(data, like)
  if like.scaled:  # let nibabel choose slope/intercept for the new values
    arr = arr.astype(np.float64)
  else:
    arr = _to_dtype(arr, like.dtype)
  hdr.set_data_dtype(like.dtype)
  zooms = list(hdr.get_zooms())
  for i, f in enumerate(zoom_factors):
    if i < len(zooms):
      zooms[i] = zooms[i] / float(f)
  hdr.set_data_shape(arr.shape)
  hdr.set_zooms(zooms[:arr.ndim])
  affine = scaled_affine(like.affine, zoom_factors)
  out = like.image_class(arr, affine, header=hdr)
  if isinstance(out, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and the .hdr/.img pairs
    old = like.header
    qform, qcode = old.get_qform(coded=True)
    sform, scode = old.get_sform(coded=True)
    base = old.get_base_affine()
    out.set_qform(scaled_affine(qform if qform is not None else base, zoom_factors),
                  code=int(qcode))
    out.set_sform(scaled_affine(sform if sform is not None else base, zoom_factors),
                  code=int(scode))
  return out


def _write_nifti(path: str, data: np.ndarray, like: Image, zoom_factors) -> None:
  out = _new_volume(data, like, zoom_factors)
  suffix = '.nii.gz' if path.lower().endswith('.gz') else '.nii'
  with temp_path(path, suffix) as tmp:
    out.to_filename(tmp)
    os.replace(tmp, path)


def _write_analyze(path: str, data: np.ndarray, like: Image, zoom_factors) -> None:
  """Writes the .img, then the .hdr; an SPM .mat sidecar only if the input had one."""
  out = _new_volume(data, like, zoom_factors)
  hdr_path, img_path = analyze_pair(path)
  mat_path = os.path.splitext(hdr_path)[0] + '.mat'
  keep_mat = os.path.isfile(os.path.splitext(analyze_pair(like.path)[0])[0] + '.mat')
  with temp_path(hdr_path, '.hdr') as tmp_hdr:
    stem = tmp_hdr[:-len('.hdr')]
    tmp_img, tmp_mat = stem + '.img', stem + '.mat'
    placed = []
    try:
      out.to_filename(tmp_hdr)  # nibabel writes tmp_img (and, for SPM classes, tmp_mat) too
      moves = [(tmp_img, img_path)]
      if keep_mat and os.path.exists(tmp_mat):
        moves.append((tmp_mat, mat_path))
      moves.append((tmp_hdr, hdr_path))
      for src, dst in moves:
        os.replace(src, dst)
        placed.append(dst)
    except BaseException:
      for dst in placed:
        os.remove(dst)
      raise
    finally:
      for tmp in (tmp_img, tmp_mat):
        if os.path.exists(tmp):
          os.remove(tmp)
  if not keep_mat and os.path.isfile(mat_path):
    os.remove(mat_path)  # a stale sidecar would override the new header's geometry


def write_image(path: str, data: np.ndarray, like: Image,
                zoom_factors: Sequence[float]) -> None:
  """Writes `data` in the format of `like`, atomically.

  Args:
    path: the output file; its extension must name `like.kind`'s format.
    data: values in `like`'s intensity range, 2-D or 3-D like `like.data`.
    like: the image read from the input; gives format, PNG bit depth, header, data type, affine.
    zoom_factors: per axis of `data`, how much bigger the output grid is than `like`'s
      (e.g. (4, 4, 1) for a volume super-resolved x4 in its axial slices).

  PNG: same bit depth, values rounded and clipped; colour input is written as grayscale.
  .npy: float32. NIfTI / Analyze: the input header's data type (rounded and clipped for integer
  types, or re-scaled by nibabel if the input used a slope/intercept), voxel sizes divided by the
  zoom factors; sform and qform (NIfTI) and the SPM origin (Analyze, whole voxels only) follow
  `scaled_affine` so the output overlays the input.
  """
  path = os.fspath(path)
  data = np.asarray(data, dtype=np.float64)
  if image_kind(path) != like.kind:
    raise InputError(f'{path}: output must be a {like.kind} file like the input {like.path}')
  if len(zoom_factors) != data.ndim:
    raise ValueError(f'zoom_factors {tuple(zoom_factors)} do not match {data.ndim}-D data')
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise InputError(f'{path}: output directory {directory} does not exist')
  if like.kind == 'png' and data.ndim != 2:
    raise ValueError(f'PNG output must be 2-D, got shape {data.shape}')
  try:
    if like.kind == 'png':
      _write_png(path, data, like)
    elif like.kind == 'npy':
      _write_npy(path, _restore_disk_shape(data, like))
    elif like.kind == 'nifti':
      _write_nifti(path, data, like, zoom_factors)
    else:
      _write_analyze(path, data, like, zoom_factors)
  except OSError as e:  # permission denied, disk full, ...
    raise InputError(f'{path}: cannot write ({one_line(e)})') from e
