"""`folder` reader: any directory of NIfTI / Analyze volumes or DICOM series, labels optional.

Everything under --src is scanned (recursively, in sorted order):

  *.nii, *.nii.gz, *.hdr/*.img pairs     one volume each
  DICOM files (*.dcm, *.ima or any file with the 'DICM' preamble)
                                         grouped into series by SeriesInstanceUID; one volume
                                         per series (slices sorted along the slice normal and
                                         checked for consistent size, spacing and orientation,
                                         see `volume_io.read_dicom_series`)

Label volumes are matched by name: `<stem><suffix>.<ext>` beside the image, for a suffix in
--label_suffixes (default _seg, _label, _labels, _gt, _mask), or `<labels_dir>/<stem>.<ext>`
(same relative path) where --labels_dir defaults to a `labels/`, `masks/`, `mask/` or `seg/`
folder of --src. A DICOM series in folder D is matched by D's name (`D_seg.nii.gz` beside D, or
`<labels_dir>/D.nii.gz`). Label files are not images.

Volume ids are relative paths without extension ('sub-01/anat/sub-01_T1w', a DICOM series: its
folder, with '#<n>' when a folder holds several series). The subject (the split unit) is the
volume id (--subject_from=file) or the first folder of the relative path (--subject_from=dir,
for several volumes per subject). One channel, named by --modalities (default 'image').

Tests: `.venv/bin/python -m pytest -q tests/test_data_prep_folder.py`.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from data_prep import volume_io
from data_prep.readers import Discovery, Loaded, ReaderOptions, VolumeSpec
from data_prep.readers import check_src, load_single, loaded, sorted_volumes
from medsr_jax.errors import InputError

LABEL_DIRS = ('labels', 'label', 'masks', 'mask', 'seg', 'segmentations')
VOLUME_EXT_RE = re.compile(r'\.(nii\.gz|nii|hdr|img)$', re.IGNORECASE)
DICOM_EXTS = ('.dcm', '.ima', '.dicom')
SKIP_EXTS = ('.json', '.txt', '.csv', '.md', '.cfg', '.bval', '.bvec', '.tsv', '.mat', '.png',
             '.jpg', '.npy', '.npz', '.gz', '.zip', '.tfrecord', '.py', '.xml', '.html')
DEFAULT_MODALITY = 'image'


def _labels_dir(src: str, options: ReaderOptions) -> Optional[str]:
  if options.labels_dir:
    d = options.labels_dir if os.path.isabs(options.labels_dir) else os.path.join(
        src, options.labels_dir)
    if not os.path.isdir(d):
      raise InputError(f'{options.labels_dir}: --labels_dir not found')
    return os.path.abspath(d)
  for name in sorted(os.listdir(src)):
    p = os.path.join(src, name)
    if name.lower() in LABEL_DIRS and os.path.isdir(p):
      return p
  return None


def _stem(name: str) -> str:
  return VOLUME_EXT_RE.sub('', name)


def _scan(src: str, skip: Optional[str]) -> tuple[dict[str, str], list[str]]:
  """({relative stem: volume path}, [candidate DICOM files]) under `src`."""
  volumes: dict[str, str] = {}
  dicoms: list[str] = []
  for root, dirs, files in os.walk(src):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.') and
                     (skip is None or os.path.join(root, d) != skip))
    for name in sorted(files):
      if name.startswith('.'):
        continue
      path = os.path.join(root, name)
      low = name.lower()
      if VOLUME_EXT_RE.search(name):
        rel = os.path.relpath(os.path.join(root, _stem(name)), src).replace(os.sep, '/')
        if low.endswith('.img') and rel in volumes:
          continue  # the .hdr of the pair is already listed
        volumes.setdefault(rel, path)
      elif low.endswith(DICOM_EXTS):
        dicoms.append(path)
      elif not low.endswith(SKIP_EXTS) and volume_io.is_dicom_file(path):
        dicoms.append(path)
  return volumes, dicoms


def _series(src: str, files: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
  """{volume id: (series folder, files)} of the DICOM files, grouped by SeriesInstanceUID."""
  groups: dict[tuple[str, str], list[str]] = {}
  for f in files:
    try:
      uid = str(getattr(volume_io.read_dicom_header(f), 'SeriesInstanceUID', '') or '')
    except InputError:
      uid = f'unreadable:{f}'  # its own one-file "series": loading it reports the file
    groups.setdefault((os.path.dirname(f), uid), []).append(f)
  out: dict[str, tuple[str, tuple[str, ...]]] = {}
  per_dir: dict[str, int] = {}
  for (folder, _), members in sorted(groups.items(), key=lambda kv: (kv[0][0], min(kv[1]))):
    rel = os.path.relpath(folder, src).replace(os.sep, '/')
    rel = os.path.basename(src) if rel == '.' else rel
    n = per_dir.get(folder, 0)
    per_dir[folder] = n + 1
    out[rel if n == 0 else f'{rel}#{n}'] = (folder, tuple(sorted(members)))
  return out


def _find_label(rel: str, folder: str, name: str, candidates: dict[str, str],
                labels_dir: Optional[str], suffixes: tuple[str, ...]) -> Optional[str]:
  parent = os.path.dirname(rel)
  for suffix in suffixes:
    key = f'{parent}/{name}{suffix}' if parent else f'{name}{suffix}'
    if key in candidates:
      return candidates[key]
  if labels_dir:
    for ext in ('.nii.gz', '.nii', '.hdr', '.img'):
      for stem in (rel, name):
        p = os.path.join(labels_dir, stem + ext)
        if os.path.isfile(p):
          return p
  del folder
  return None


def discover(src: str, options: ReaderOptions) -> Discovery:
  src = check_src(src)
  labels_dir = _labels_dir(src, options) if options.labels else None
  files, dicom_files = _scan(src, labels_dir)
  suffixes = tuple(options.label_suffixes) if options.labels else ()
  label_keys = {rel for rel in files for s in suffixes
                if rel.endswith(s) and (rel[:-len(s)] in files)}
  series = _series(src, dicom_files)
  for rel in list(files):  # a label beside a DICOM series folder: '<series><suffix>.nii.gz'
    for s in suffixes:
      if rel.endswith(s) and rel[:-len(s)] in series:
        label_keys.add(rel)
  labels = {k: files[k] for k in label_keys}
  volumes = []

  def subject_of(rel: str) -> str:
    return rel.split('/')[0] if options.subject_from == 'dir' else rel

  for rel, path in files.items():
    if rel in label_keys:
      continue
    label = None
    if options.labels:
      label = _find_label(rel, os.path.dirname(path), os.path.basename(rel), labels, labels_dir,
                          suffixes)
    volumes.append(VolumeSpec(subject=subject_of(rel), volume=rel, images=(path,), label=label))
  for rel, (folder, members) in series.items():
    label = None
    if options.labels:
      label = _find_label(rel, folder, os.path.basename(rel.split('#')[0]), labels, labels_dir,
                          suffixes)
    volumes.append(VolumeSpec(subject=subject_of(rel), volume=rel, images=(folder,),
                              label=label, dicom_files=members))
  if not volumes:
    raise InputError(f'{src}: no NIfTI / Analyze volumes or DICOM series found')
  modality = options.modalities[0] if options.modalities else DEFAULT_MODALITY
  if len(options.modalities) > 1:
    raise InputError('--modalities: the folder dataset has one channel; give one name')
  return Discovery(volumes=sorted_volumes(volumes),
                   layout='dicom+volumes' if series and files else (
                       'dicom' if series else 'volumes'),
                   modalities=[modality],
                   has_labels=options.labels and all(v.label for v in volumes))


def load(spec: VolumeSpec, options: ReaderOptions) -> Loaded:
  if not spec.dicom_files:
    return load_single(spec, options)
  image = volume_io.read_dicom_series(list(spec.dicom_files), name=spec.images[0])
  return loaded(spec, options, [image])
