"""Thesis preprocessing per dataset x method: slice selection, normalisation, crop, labels.

A `Protocol` turns one loaded volume into slice records (reference spec §4.1, §4.2):

  1. slices along axis 2 as the reference reads them: slice k = ``vol[:, :, k].T`` (H = Y, W = X);
  2. slice selection, per protocol:
       'nonempty'  sum of the (first-channel) image slice > 0
       'label'     sum of the stored label values of the slice > threshold (100): the reference's
                   "tumour / mask present" rule, on the raw labels (BraTS before 4 -> 3)
       'lesion'    at least one label voxel > 0, all labels fused (thesis §3.3.1: "the whole
                   tumour ... by fusing all the labels"; a single tumour voxel is enough)
       'all'       every slice;
  3. normalisation, computed in float64, clipped to [0, 1], stored as float32:
       'minmax'       per volume and channel over the *selected* slices, before the crop:
                      ``(v - min) / (max - min)`` (a constant volume is bad input);
       'dataset_max'  ``v / D`` with one divisor D for the whole dataset (thesis §3.3.1: "dividing
                      each dataset's maximum value"): the maximum of channel 0 over the selected
                      slices of every volume the build uses, found by a first pass over the
                      volumes (`scan_volume`, run by data_prep.build) and recorded in the
                      manifest's settings as 'intensity_divisor'. Values above D cannot occur;
                      negative raw values (none in BraTS) are clipped to 0;
  4. labels: remapped (BraTS 4 -> 3) and stored as uint8;
  5. the crop of the method:
       'margin' (m0, m1)  ``img[m0:-m0, m1:-m1]`` (the reference's SingleImageRandomCrop(0, m))
       'centre' (h, w)    the central h x w window starting at ((H-h)//2, (W-w)//2); a slice
                          smaller than the window keeps its size along that axis ('none', the
                          reference's CentreCrop) or is edge-padded first ('edge')
       'none'             the whole slice;
  6. protocol msgan only: the record's `lesion_centre`, the mean (row, col) of the stored label's
     pixels > 0 (thesis §3.3.1: "averaging the location of all masked pixels").

Defaults (`DEFAULTS`; H x W; min-max normalisation unless said otherwise):

  dataset    rdst (ch. 5)                              miassr (ch. 4)
  oasis      nonempty, margin (24, 24) -> 160x128       nonempty, margin (14, 16) -> 180x144
  brats      label > 100, centre 192x192 (issue 4;      nonempty (t1ce), margin (30, 35) -> 180x170
             the reference's margin (30, 35) gives
             180x170, whose LR 45x42 does not tile
             into 8-windows; thesis §5.3.2 says 192x192)
  acdc       label > 100, centre 128x128 (no pad)       all slices, centre 128x128 (no pad)
  covid_ct   label > 100, centre 512x512 (no pad)       all slices, margin (90, 50) -> 332x412
  folder     all slices, no crop                        all slices, no crop
             ('nonempty' would drop CT slices: air is negative; pass --select for MR)

  msgan (ch. 3, MS-GAN / lesion-focused SR; BraTS only, `MSGAN_DATASETS`):
  brats      t1ce only; lesion (any label > 0); no crop -> whole 240x240 slices (the 120x120 ROI
             is cut at training time, so a lesion near the border is never clamped by a crop);
             'dataset_max' normalisation; lesion_centre per record; labels 4 -> 3; the default
             split is slice-level, `--split=slices:0` (data_prep/splits.py)

Each record carries the subject, the slice index along the slicing axis, the in-plane (row,
column) voxel size and slice thickness, the source volume's affine and axis codes, the channel
names, the raw [lo, hi] of each channel that became [0, 1] (its [min, max], or [0, D] for
'dataset_max') and (when labelled) the uint8 label slice.
The per-volume facts the record schema has no field for (every channel's range, the crop
offset, the uncropped slice size, the source files) go to the shard's `.volumes.json`.

Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py tests/test_data_prep_msgan.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import numpy as np

from data_prep import readers
from medsr_jax.data import records
from medsr_jax.data import volumes
from medsr_jax.errors import InputError

PROTOCOLS = ('rdst', 'miassr', 'msgan')
SELECT_RULES = ('nonempty', 'label', 'lesion', 'all')
MSGAN_DATASETS = ('brats',)
MSGAN_MODALITIES = ('t1ce',)
CROP_KINDS = ('margin', 'centre', 'none')
PAD_MODES = ('none', 'edge')
LABEL_THRESHOLD = 100.0


@dataclasses.dataclass(frozen=True)
class Protocol:
  """Preprocessing settings of one dataset x method (see the module docstring)."""
  dataset: str
  name: str
  select: str = 'nonempty'
  label_threshold: float = LABEL_THRESHOLD
  crop: str = 'none'
  crop_size: tuple[int, int] = (0, 0)   # margins (m0, m1) or window (h, w)
  pad: str = 'none'
  label_map: tuple[tuple[int, int], ...] = ()
  axis: int = 2
  normalise: str = 'minmax'
  lesion_centre: bool = False           # store each record's lesion centre

  @property
  def needs_scan(self) -> bool:
    """True when the build must read every volume once before writing (dataset maximum)."""
    return self.normalise == 'dataset_max'

  def settings(self) -> dict[str, Any]:
    """JSON form for the manifest."""
    select: dict[str, Any] = {'rule': self.select}
    if self.select == 'label':
      select.update(threshold=self.label_threshold, on='sum of the stored label values')
    elif self.select == 'nonempty':
      select.update(on='sum of the first channel > 0')
    elif self.select == 'lesion':
      select.update(on='any stored label value > 0 (all labels fused)')
    crop: dict[str, Any] = {'kind': self.crop}
    if self.crop == 'margin':
      crop['margins'] = list(self.crop_size)
    elif self.crop == 'centre':
      crop.update(size=list(self.crop_size), pad=self.pad)
    if self.normalise == 'dataset_max':
      norm = {'kind': 'dataset_max', 'range': [0.0, 1.0], 'dtype': 'float32',
              'over': 'one divisor (settings.intensity_divisor): the maximum of channel 0 over '
                      'the selected slices of every volume used; values < 0 clipped to 0'}
    else:
      norm = {'kind': 'minmax', 'range': [0.0, 1.0], 'dtype': 'float32',
              'over': 'per volume and channel, the selected slices, before the crop'}
    out = {
        'axis': self.axis,
        'slice': f'slice k = moveaxis(vol, {self.axis}, 0)[k].T (axis 2: vol[:, :, k].T)',
        'selection': select,
        'normalisation': norm,
        'crop': crop,
        'label_map': {str(a): b for a, b in self.label_map},
    }
    if self.lesion_centre:
      out['lesion_centre'] = 'per record: mean (row, col) of the stored label pixels > 0'
    return out


_BRATS_MAP = ((4, 3),)
DEFAULTS: dict[tuple[str, str], Protocol] = {
    ('oasis', 'rdst'): Protocol('oasis', 'rdst', 'nonempty', crop='margin', crop_size=(24, 24)),
    ('oasis', 'miassr'): Protocol('oasis', 'miassr', 'nonempty', crop='margin',
                                  crop_size=(14, 16)),
    ('brats', 'rdst'): Protocol('brats', 'rdst', 'label', crop='centre', crop_size=(192, 192),
                                label_map=_BRATS_MAP),
    ('brats', 'miassr'): Protocol('brats', 'miassr', 'nonempty', crop='margin',
                                  crop_size=(30, 35), label_map=_BRATS_MAP),
    ('acdc', 'rdst'): Protocol('acdc', 'rdst', 'label', crop='centre', crop_size=(128, 128)),
    ('acdc', 'miassr'): Protocol('acdc', 'miassr', 'all', crop='centre', crop_size=(128, 128)),
    ('covid_ct', 'rdst'): Protocol('covid_ct', 'rdst', 'label', crop='centre',
                                   crop_size=(512, 512)),
    ('covid_ct', 'miassr'): Protocol('covid_ct', 'miassr', 'all', crop='margin',
                                     crop_size=(90, 50)),
    ('folder', 'rdst'): Protocol('folder', 'rdst', 'all'),
    ('folder', 'miassr'): Protocol('folder', 'miassr', 'all'),
    ('brats', 'msgan'): Protocol('brats', 'msgan', 'lesion', crop='none', label_map=_BRATS_MAP,
                                 normalise='dataset_max', lesion_centre=True),
}


def default_split(name: str) -> str:
  """The --split a protocol uses unless one is given (msgan: slice-level, seed 0)."""
  return 'slices:0' if name == 'msgan' else 'thesis'


def make_protocol(dataset: str, name: str, *, select: Optional[str] = None,
                  label_threshold: Optional[float] = None, crop: Optional[str] = None,
                  crop_size: Optional[Sequence[int]] = None, pad: Optional[str] = None,
                  axis: Optional[int] = None) -> Protocol:
  """The default protocol of (dataset, name) with the given overrides (None keeps a default)."""
  if name not in PROTOCOLS:
    raise InputError(f'--protocol must be one of {", ".join(PROTOCOLS)}, got {name!r}')
  if name == 'msgan' and dataset not in MSGAN_DATASETS:
    raise InputError(f'--protocol=msgan supports --dataset={" or ".join(MSGAN_DATASETS)} only '
                     f'(thesis ch. 3: BraTS T1ce tumour slices), got --dataset={dataset}')
  p = DEFAULTS[(dataset, name)]
  changes: dict[str, Any] = {}
  if select is not None:
    if select not in SELECT_RULES:
      raise InputError(f'--select must be one of {", ".join(SELECT_RULES)}, got {select!r}')
    changes['select'] = select
  if label_threshold is not None:
    changes['label_threshold'] = float(label_threshold)
  if crop is not None:
    changes['crop'] = crop
    changes['crop_size'] = tuple(int(x) for x in crop_size) if crop_size else (0, 0)
  if pad is not None:
    if pad not in PAD_MODES:
      raise InputError(f'--pad must be one of {", ".join(PAD_MODES)}, got {pad!r}')
    changes['pad'] = pad
  if axis is not None:
    if axis not in (0, 1, 2):
      raise InputError(f'--axis must be 0, 1 or 2, got {axis}')
    changes['axis'] = int(axis)
  p = dataclasses.replace(p, **changes)
  if p.crop not in CROP_KINDS:
    raise InputError(f'unknown crop kind {p.crop!r}')
  if p.crop == 'margin' and min(p.crop_size) < 0:
    raise InputError(f'--margin must be >= 0, got {p.crop_size}')
  if p.crop == 'centre' and min(p.crop_size) <= 0:
    raise InputError(f'--crop must be positive, got {p.crop_size}')
  return p


# ----------------------------------------------------------------------------------------------
# One volume -> records.


@dataclasses.dataclass(frozen=True)
class Context:
  """Everything a worker needs besides the volume (picklable)."""
  dataset: str
  protocol: Protocol
  options: readers.ReaderOptions
  modalities: tuple[str, ...]
  src: str
  divisor: Optional[float] = None   # 'dataset_max': the raw value that becomes 1.0


@dataclasses.dataclass(frozen=True)
class VolumeTask:
  """One volume to write into a shard of `split`; `slices` restricts it to those selected slice
  indices (a slice-level split), None keeps every selected slice."""
  spec: readers.VolumeSpec
  split: str = ''
  slices: Optional[tuple[int, ...]] = None


@dataclasses.dataclass
class VolumeScan:
  """The first pass over one volume: its selected slices and channel 0's maximum over them."""
  volume: str
  subject: str
  selected: list[int]
  maximum: Optional[float]          # None when no slice is selected
  error: Optional[str] = None


@dataclasses.dataclass
class VolumeResult:
  """Encoded records of one volume and its facts for the shard sidecar, or the error message."""
  records: list[bytes]
  info: dict[str, Any]
  error: Optional[str] = None


def crop_window(h_in: int, w_in: int, p: Protocol, path: str) -> tuple[int, int, int, int]:
  """(top, left, h, w) of the crop in slice coordinates (top/left < 0: edge padding)."""
  if p.crop == 'none':
    return 0, 0, h_in, w_in
  a, b = p.crop_size
  if p.crop == 'margin':
    h, w = h_in - 2 * a, w_in - 2 * b
    if h <= 0 or w <= 0:
      raise InputError(f'{path}: margins {(a, b)} leave nothing of {h_in}x{w_in} slices')
    return a, b, h, w
  if p.pad == 'edge':
    ph, pw = max(a - h_in, 0), max(b - w_in, 0)
    return (h_in + ph - a) // 2 - ph // 2, (w_in + pw - b) // 2 - pw // 2, a, b
  return max((h_in - a) // 2, 0), max((w_in - b) // 2, 0), min(a, h_in), min(b, w_in)


def _cut(arr: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
  """The window of a (H, W[, C]) slice, edge-padding where it reaches outside."""
  top, left, h, w = window
  hh, ww = arr.shape[:2]
  pt, pl = max(-top, 0), max(-left, 0)
  pb, pr = max(top + h - hh, 0), max(left + w - ww, 0)
  if pt or pl or pb or pr:
    pad = [(pt, pb), (pl, pr)] + [(0, 0)] * (arr.ndim - 2)
    arr = np.pad(arr, pad, mode='edge')
    top, left = top + pt, left + pl
  return arr[top:top + h, left:left + w]


def _axcodes(affine: np.ndarray) -> str:
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  try:
    return ''.join(c if c else '?' for c in nib.aff2axcodes(affine))
  except Exception:  # a singular affine
    return '???'


def _rel(path: str, src: str) -> str:
  rel = os.path.relpath(path, src)
  return path if rel.startswith('..') else rel.replace(os.sep, '/')


def select_slices(image_slices: np.ndarray, label_slices: Optional[np.ndarray], p: Protocol,
                  path: str) -> np.ndarray:
  """Indices of the selected slices (see the module docstring)."""
  n = image_slices.shape[0]
  if p.select == 'all':
    return np.arange(n)
  if p.select == 'nonempty':
    return np.flatnonzero(slice_sums(image_slices) > 0)
  if label_slices is None:
    raise InputError(f'{path}: protocol {p.name} selects {p.dataset} slices by their label, but '
                     'this volume has no label file (use --select=nonempty or all)')
  if p.select == 'lesion':
    return np.flatnonzero(np.any(label_slices > 0, axis=(1, 2)))
  return np.flatnonzero(slice_sums(label_slices) > p.label_threshold)


def slice_sums(slices: np.ndarray) -> np.ndarray:
  """(N,) float64 sums of stacked slices, as the reference's ``np.sum(imgs, axis=(1, 2))``."""
  return np.sum(slices, axis=(1, 2), dtype=np.float64)


def _range(slices: np.ndarray, keep: np.ndarray, path: str) -> tuple[float, float]:
  lo, hi = np.inf, -np.inf
  for k in keep:  # slice by slice: no copy of the selected slices
    s = slices[k]
    lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
  if hi <= lo:
    raise InputError(f'{path}: every selected voxel is {lo:g} (constant volume), cannot '
                     'min-max normalise it')
  return lo, hi


def _max_over(slices: np.ndarray, keep: np.ndarray) -> Optional[float]:
  """The maximum of the `keep` slices (None if none), slice by slice: no copy."""
  return max((float(slices[k].max()) for k in keep), default=None)


def scan_volume(ctx: Context, spec: readers.VolumeSpec) -> VolumeScan:
  """First pass: the selected slices of one volume and channel 0's maximum over them.

  Bad input becomes `VolumeScan.error` (the build stops on it, or skips the volume).
  """
  try:
    loaded = readers.reader(ctx.dataset).load(spec, ctx.options)
    p = ctx.protocol
    chan = volumes.axial_slices(loaded.channels[0], p.axis)
    labels = None if loaded.label is None else volumes.axial_slices(loaded.label, p.axis)
    keep = select_slices(chan, labels, p, spec.images[0])
    return VolumeScan(spec.volume, spec.subject, [int(k) for k in keep], _max_over(chan, keep))
  except InputError as e:
    return VolumeScan(spec.volume, spec.subject, [], None, error=' '.join(str(e).split()))


def lesion_centre(label: np.ndarray) -> Optional[tuple[float, float]]:
  """(row, col) mean position of the pixels > 0 of an (H, W) label map (float64); None if none."""
  rows, cols = np.nonzero(np.asarray(label) > 0)
  if not rows.size:
    return None
  return float(np.mean(rows, dtype=np.float64)), float(np.mean(cols, dtype=np.float64))


def process_volume(loaded: readers.Loaded, spec: readers.VolumeSpec, ctx: Context,
                   only: Optional[Sequence[int]] = None) -> VolumeResult:
  """The encoded slice records of one loaded volume (InputError on bad input).

  `only`: write just these of the selected slice indices (a slice-level split); each must be
  selected, else the volume changed since the first pass (InputError).
  """
  p = ctx.protocol
  path = spec.images[0]
  chans = [volumes.axial_slices(c, p.axis) for c in loaded.channels]
  labels = None if loaded.label is None else volumes.axial_slices(loaded.label, p.axis)
  keep = select_slices(chans[0], labels, p, path)
  n, h_in, w_in = chans[0].shape
  if p.normalise == 'dataset_max':
    if not ctx.divisor or ctx.divisor <= 0:
      raise ValueError('protocol msgan needs the dataset divisor (Context.divisor)')
    ranges = [(0.0, float(ctx.divisor))] * len(chans) if keep.size else []
  else:
    ranges = [_range(c, keep, spec.images[i]) for i, c in enumerate(chans)] if keep.size else []
  if only is not None:
    wanted = np.asarray(sorted(set(int(k) for k in only)), dtype=np.int64)
    if not np.isin(wanted, keep).all():
      raise InputError(f'{path}: the selected slices differ from the first pass of this build '
                       '(was the file changed?); run the build again')
    keep = wanted
  window = crop_window(h_in, w_in, p, path)
  in_plane = [i for i in range(3) if i != p.axis]
  z = loaded.zooms
  spacing = (z[in_plane[1]], z[in_plane[0]], z[p.axis])
  orientation = _axcodes(loaded.affine)
  lut = None
  if labels is not None:
    lut = np.arange(256, dtype=np.uint8)
    for a, b in p.label_map:
      lut[a] = b
  top, left, h, w = window
  out = []
  for k in keep:
    planes = []
    for c, (lo, hi) in zip(chans, ranges):
      v = (np.asarray(c[k], dtype=np.float64) - lo) / (hi - lo)  # dataset_max: lo = 0, hi = D
      planes.append(np.clip(v, 0.0, 1.0).astype(np.float32))
    image = np.ascontiguousarray(_cut(np.stack(planes, axis=-1), window))
    label = centre = None
    if labels is not None:
      label = np.ascontiguousarray(_cut(lut[np.asarray(labels[k], dtype=np.int64)], window))
      if p.lesion_centre:
        centre = lesion_centre(label)
    out.append(records.encode_slice(records.SliceRecord(
        image=image, label=label, subject=spec.subject, slice_index=int(k), spacing=spacing,
        affine=loaded.affine, orientation=orientation, modalities=list(ctx.modalities),
        intensity=ranges, dataset=ctx.dataset, volume=spec.volume,
        source_shape=(h_in, w_in), crop_offset=(top, left), lesion_centre=centre)))
  info = {
      'volume': spec.volume,
      'subject': spec.subject,
      'sources': [_rel(x, ctx.src) for x in spec.images],
      'label': _rel(spec.label, ctx.src) if (labels is not None and spec.label) else None,
      'shape': list(loaded.channels[0].shape),
      'num_records': len(out),
      'slice_indices': [int(k) for k in keep],
      'intensity': [[lo, hi] for lo, hi in ranges],
      'slice_shape_before_crop': [h_in, w_in],
      'crop_offset': [top, left],
      'slice_shape': [h, w, len(chans)],
      'spacing': [float(s) for s in spacing],
      'orientation': orientation,
  }
  if p.normalise == 'dataset_max':
    info['raw_max'] = _max_over(chans[0], keep)  # of the slices written here (<= the divisor)
  if spec.dicom_files:
    info['dicom_files'] = len(spec.dicom_files)
  if spec.extra_labels and labels is not None:
    info['extra_labels'] = [_rel(x, ctx.src) for x in spec.extra_labels]
  return VolumeResult(out, info)


def run_volume(ctx: Context, task: VolumeTask | readers.VolumeSpec) -> VolumeResult:
  """Loads and processes one volume (a `VolumeTask` or a bare `VolumeSpec`: every selected
  slice); bad input becomes `VolumeResult.error` (for --skip_bad)."""
  if isinstance(task, readers.VolumeSpec):
    task = VolumeTask(task)
  spec = task.spec
  try:
    loaded = readers.reader(ctx.dataset).load(spec, ctx.options)
    return process_volume(loaded, spec, ctx, only=task.slices)
  except InputError as e:
    return VolumeResult([], {'volume': spec.volume, 'subject': spec.subject,
                             'sources': [_rel(x, ctx.src) for x in spec.images]},
                        error=' '.join(str(e).split()))
