"""COVID-CT reader: chest CT volumes with lung / infection masks, in either published layout.

Zenodo 3757476, "COVID-19 CT Lung and Infection Segmentation" (20 cases; RDST thesis §5.3.2):

  <src>/COVID-19-CT-Seg_20cases/coronacases_org_001.nii.gz, ...,
                                radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii.gz, ...
  <src>/Lung_and_Infection_Mask/coronacases_001.nii.gz, radiopaedia_4_85506_1.nii.gz, ...
                                (1 left lung, 2 right lung, 3 infection)
  <src>/Lung_Mask/..., <src>/Infection_Mask/...   (merged when the combined masks are absent)

  The image folder may also be `ct_scans/` (the Kaggle copy, `.nii`), or --src itself with masks
  in `<src>/mask/` (the reference reader's layout: `<data>/<pid>.nii.gz`,
  `<data>/mask/<pid>.nii.gz`).
  Subject ids are the mask names ('coronacases_001', 'radiopaedia_4_85506_1'), as in the
  reference's result scripts; images named `*_org_*` are matched to them.

COVID-19-20 challenge layout (the thesis' MIASSR data and the RDST config's subject lists):

  <src>/Train/volume-covid19-A-0003_ct.nii.gz, volume-covid19-A-0003_seg.nii.gz (infection = 1)
  <src>/Validation/volume-covid19-A-0089_ct.nii.gz (+ _seg.nii.gz where released)

  Subject id = the name before `_ct` (as in spec Appendix A); the folder is the split stratum.

One channel ('ct', Hounsfield units as stored). A volume without a mask gets no label (a protocol
that selects slices on the mask then reports it). Tests: `.venv/bin/python -m pytest -q
tests/test_data_prep.py`.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np

from data_prep import volume_io
from data_prep.readers import Discovery, Loaded, ReaderOptions, VolumeSpec
from data_prep.readers import check_src, loaded, sorted_volumes
from medsr_jax.errors import InputError

MODALITIES = ['ct']
CHALLENGE_DIRS = ('Train', 'Validation')
IMAGE_DIRS = ('covid-19-ct-seg_20cases', 'ct_scans', '20_ncov_scan')
COMBINED_MASK_DIRS = ('lung_and_infection_mask', 'lung_infection', 'mask')
LUNG_MASK_DIRS = ('lung_mask',)
INFECTION_MASK_DIRS = ('infection_mask',)
INFECTION_LABEL = 3
_EXT_RE = re.compile(r'\.nii(\.gz)?$')


def canonical_id(stem: str) -> str:
  """Zenodo image names -> mask names: 'coronacases_org_001' -> 'coronacases_001', etc."""
  m = re.match(r'^coronacases_org_(\d+)$', stem)
  if m:
    return f'coronacases_{m.group(1)}'
  m = re.match(r'^radiopaedia_org_covid-19-pneumonia-(\d+)_(\d+)_(\d+)-dcm$', stem)
  if m:
    return 'radiopaedia_' + '_'.join(m.groups())
  return stem


def _nifti_files(folder: str) -> dict[str, str]:
  """{stem: path} of the NIfTI files directly in `folder`."""
  out = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if _EXT_RE.search(name) and os.path.isfile(path):
      out.setdefault(_EXT_RE.sub('', name), path)
  return out


def _subdir(src: str, names: tuple[str, ...]) -> Optional[str]:
  """The first child folder of `src` whose lower-case name is in `names` (in that order)."""
  children = {d.lower(): os.path.join(src, d) for d in sorted(os.listdir(src))
              if os.path.isdir(os.path.join(src, d))}
  for n in names:
    if n in children:
      return children[n]
  return None


def _challenge(src: str, options: ReaderOptions) -> list[VolumeSpec]:
  volumes = []
  for stratum in CHALLENGE_DIRS:
    folder = os.path.join(src, stratum)
    if not os.path.isdir(folder):
      continue
    files = _nifti_files(folder)
    for stem, path in files.items():
      if not stem.endswith('_ct'):
        continue
      sid = stem[:-len('_ct')]
      label = files.get(sid + '_seg') if options.labels else None
      volumes.append(VolumeSpec(subject=sid, volume=sid, images=(path,), label=label,
                                stratum=stratum))
  return volumes


def _zenodo(src: str, options: ReaderOptions) -> list[VolumeSpec]:
  image_dir = _subdir(src, IMAGE_DIRS) or src
  masks: dict[str, dict[str, str]] = {}
  for kind, names in (('combined', COMBINED_MASK_DIRS), ('lung', LUNG_MASK_DIRS),
                      ('infection', INFECTION_MASK_DIRS)):
    d = _subdir(src, names)
    masks[kind] = _nifti_files(d) if d else {}
  volumes = []
  for stem, path in _nifti_files(image_dir).items():
    sid = canonical_id(stem)
    label, extra = None, ()
    if options.labels:
      if sid in masks['combined']:
        label = masks['combined'][sid]
      elif sid in masks['lung'] and sid in masks['infection']:
        label, extra = masks['lung'][sid], (masks['infection'][sid],)
    volumes.append(VolumeSpec(subject=sid, volume=sid, images=(path,), label=label,
                              extra_labels=extra))
  return volumes


def discover(src: str, options: ReaderOptions) -> Discovery:
  src = check_src(src)
  challenge = any(os.path.isdir(os.path.join(src, d)) for d in CHALLENGE_DIRS)
  volumes = _challenge(src, options) if challenge else _zenodo(src, options)
  if not volumes:
    raise InputError(f'{src}: no COVID-CT volumes found (expected Train/*_ct.nii.gz, or '
                     'COVID-19-CT-Seg_20cases/*.nii.gz with Lung_and_Infection_Mask/)')
  has_labels = options.labels and all(v.label for v in volumes)
  return Discovery(volumes=sorted_volumes(volumes),
                   layout='covid19-20' if challenge else 'zenodo-20',
                   modalities=list(MODALITIES), has_labels=has_labels)


def load(spec: VolumeSpec, options: ReaderOptions) -> Loaded:
  image = volume_io.read_volume(spec.images[0])
  out = loaded(spec, options, [image])
  if out.label is not None:
    for extra in spec.extra_labels:  # Lung_Mask (1, 2) + Infection_Mask (1) -> 1, 2, 3
      infection = volume_io.read_label(extra, like=image).data
      out.label = np.where(infection > 0, INFECTION_LABEL, out.label).astype(np.uint8)
  return out
